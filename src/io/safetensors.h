/* safetensors reader: an 8-byte header length, a JSON header, raw data.
 * Offsets, sizes and overlaps are checked against the file. */
#ifndef KVQ_IO_SAFETENSORS_H
#define KVQ_IO_SAFETENSORS_H
#include <stdint.h>
#include "../core/log.h"

typedef struct kvq_st_tensor {
    char name[160];
    char dtype[12];      /* "F32", "F16", "BF16", ... */
    int32_t n_dims;
    int64_t shape[4];
    uint64_t nbytes;
    const void *data;
} kvq_st_tensor;

typedef struct kvq_safetensors {
    int32_t n;
    kvq_st_tensor *t;
} kvq_safetensors;

kvq_status kvq_safetensors_parse(const uint8_t *buf, size_t size, kvq_safetensors *s, const kvq_logger *lg);
void       kvq_safetensors_free(kvq_safetensors *s);
const kvq_st_tensor *kvq_safetensors_find(const kvq_safetensors *s, const char *name);

#endif
