/* GGUF v2/v3 reader. Everything a file declares is checked against the file
 * size before it is used: counts, string and array lengths, tensor shapes,
 * offsets and overlaps. Nothing is copied: entries point into the buffer. */
#ifndef KVQ_IO_GGUF_H
#define KVQ_IO_GGUF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/log.h"
#include "../core/mapfile.h"

enum kvq_gguf_vtype {
    KVQ_GGUF_U8 = 0, KVQ_GGUF_I8 = 1, KVQ_GGUF_U16 = 2, KVQ_GGUF_I16 = 3, KVQ_GGUF_U32 = 4,
    KVQ_GGUF_I32 = 5, KVQ_GGUF_F32 = 6, KVQ_GGUF_BOOL = 7, KVQ_GGUF_STRING = 8, KVQ_GGUF_ARRAY = 9,
    KVQ_GGUF_U64 = 10, KVQ_GGUF_I64 = 11, KVQ_GGUF_F64 = 12, KVQ_GGUF_VTYPE_COUNT = 13
};

#define KVQ_GGUF_MAX_DIMS 4

typedef struct kvq_gguf_str { const char *s; uint64_t n; } kvq_gguf_str;

typedef struct kvq_gguf_kv {
    kvq_gguf_str key;
    uint32_t type;      /* value type */
    uint32_t arr_type;  /* element type when type == ARRAY */
    uint64_t n;         /* element count when type == ARRAY */
    const uint8_t *val; /* the value (or the first array element) in the buffer */
} kvq_gguf_kv;

typedef struct kvq_gguf_tensor {
    kvq_gguf_str name;
    uint32_t n_dims;
    int64_t ne[KVQ_GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension */
    uint32_t type;
    uint64_t offset;               /* relative to the data section */
    uint64_t nbytes;
    const void *data;
} kvq_gguf_tensor;

typedef struct kvq_gguf {
    kvq_mapfile map;               /* owned when opened from a path */
    const uint8_t *base;
    size_t size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    kvq_gguf_kv *kv;
    kvq_gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;
} kvq_gguf;

/* Parses a GGUF image held in memory (the fuzz entry point). */
kvq_status kvq_gguf_parse(const uint8_t *buf, size_t size, kvq_gguf *g, const kvq_logger *lg);
kvq_status kvq_gguf_open(const char *path, kvq_gguf *g, const kvq_logger *lg);
void       kvq_gguf_close(kvq_gguf *g);

const kvq_gguf_kv     *kvq_gguf_find(const kvq_gguf *g, const char *key);
const kvq_gguf_tensor *kvq_gguf_tensor_find(const kvq_gguf *g, const char *name);

/* Typed getters. A missing key returns KVQ_ERR_ARG without logging when
 * !required (the caller keeps its default); a key of the wrong type or an
 * out-of-range value is always a logged KVQ_ERR_FORMAT. Integer getters accept
 * any integer type whose value fits. */
kvq_status kvq_gguf_get_u32(const kvq_gguf *g, const char *key, bool required, uint32_t *out, const kvq_logger *lg);
kvq_status kvq_gguf_get_f32(const kvq_gguf *g, const char *key, bool required, float *out, const kvq_logger *lg);
kvq_status kvq_gguf_get_bool(const kvq_gguf *g, const char *key, bool required, bool *out, const kvq_logger *lg);
kvq_status kvq_gguf_get_str(const kvq_gguf *g, const char *key, bool required, kvq_gguf_str *out, const kvq_logger *lg);
/* An array whose element type must be `elem`; returns the count and a
 * pointer to the first element (for STRING arrays use kvq_gguf_str_next). */
kvq_status kvq_gguf_get_arr(const kvq_gguf *g, const char *key, uint32_t elem, bool required, uint64_t *n,
                            const uint8_t **first, const kvq_logger *lg);
/* Steps through a STRING array already validated by the parser. */
kvq_gguf_str kvq_gguf_str_next(const uint8_t **cursor);

bool kvq_gguf_str_eq(kvq_gguf_str s, const char *z);

#endif
