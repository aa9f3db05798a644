/* SnapKV scoring and selection (RocketKV stage 1): the last W queries of a
 * layer (kept by the cache's observation ring) attend to every key; the
 * attention they pay to each slot before the window, summed over the window
 * and over the query heads of a KV group, is max-pooled along the slots; the
 * top slots plus the window are kept. Scores come from the codec's own qk,
 * so they are those of the keys as stored. */
#ifndef KVQ_KV_SNAPKV_H
#define KVQ_KV_SNAPKV_H
#include "kv.h"

/* Scores of slots [0, n - w) of KV head h of layer il (n = slots held),
 * from the last w observed queries: out[n - w]. Returns w (0: nothing observed). */
int kvq_snapkv_scores(const kvq_kv_cache *c, int il, int h, int window, float *out);

/* out[i] = max of x over [i - pool/2, i + pool/2] within [0, n). */
void kvq_maxpool1d(const float *x, int n, int pool, float *out);

/* Per KV head, the n_keep slots to keep of layer il (ascending, the last w
 * slots included): keep[h*n_keep + j]. Heads run in parallel. n_keep must be
 * less than the slots held. */
kvq_status kvq_snapkv_select(const kvq_kv_cache *c, int il, int n_keep, int window, int pool, int32_t *keep,
                             int n_threads);

/* Evicts layer il down to n_keep slots per head by these scores (compacts
 * the codec; no-op when it holds no more). */
kvq_status kvq_snapkv_evict(kvq_kv_cache *c, int il, int n_keep, int window, int pool);

#endif
