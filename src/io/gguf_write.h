/* GGUF v3 writer (kvq synth, quantize): metadata in insertion order, tensors
 * aligned to 32 bytes, data streamed from caller-owned buffers. */
#ifndef KVQ_IO_GGUF_WRITE_H
#define KVQ_IO_GGUF_WRITE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/log.h"

typedef struct kvq_gguf_writer kvq_gguf_writer;

kvq_gguf_writer *kvq_gguf_writer_new(void);
void kvq_gguf_writer_free(kvq_gguf_writer *w);

/* Metadata; strings and arrays are copied. */
void kvq_gguf_set_str(kvq_gguf_writer *w, const char *key, const char *val);
void kvq_gguf_set_u32(kvq_gguf_writer *w, const char *key, uint32_t val);
void kvq_gguf_set_f32(kvq_gguf_writer *w, const char *key, float val);
void kvq_gguf_set_bool(kvq_gguf_writer *w, const char *key, bool val);
/* An array of scalars of GGUF value type `elem` (raw little-endian bytes). */
void kvq_gguf_set_arr(kvq_gguf_writer *w, const char *key, uint32_t elem, const void *data, uint64_t n);
/* An array of n strings given as pointers and lengths. */
void kvq_gguf_set_arr_str(kvq_gguf_writer *w, const char *key, const char *const *s, const uint64_t *len, uint64_t n);
/* Copies a key (any type) from a parsed file. */
struct kvq_gguf_kv;
void kvq_gguf_copy_kv(kvq_gguf_writer *w, const struct kvq_gguf_kv *kv);

/* A tensor whose bytes (nbytes) stay owned by the caller until write. */
void kvq_gguf_add_tensor(kvq_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                         const void *data, uint64_t nbytes);

kvq_status kvq_gguf_write(kvq_gguf_writer *w, const char *path, const kvq_logger *lg);

#endif
