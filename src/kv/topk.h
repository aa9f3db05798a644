/* Stable top-k selection in linear expected time: the k largest scores,
 * ties going to the lower index, returned in ascending index order (the
 * order attention spans and keep lists need). Eviction and per-step sparse
 * attention both select with it. */
#ifndef KVQ_KV_TOPK_H
#define KVQ_KV_TOPK_H
#include <stdint.h>

/* Writes min(k, n) indices into out; tmp holds n floats of scratch.
 * Returns the number written. NaN scores count as the smallest. */
int kvq_topk(const float *score, int n, int k, float *tmp, int32_t *out);

#endif
