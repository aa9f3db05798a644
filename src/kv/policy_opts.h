/* Options shared by the eviction and sparse-attention policies (snapkv,
 * hsa, rocket, rocket-mt), parsed and checked in one place so every policy
 * gives the same clear errors. */
#ifndef KVQ_KV_POLICY_OPTS_H
#define KVQ_KV_POLICY_OPTS_H
#include "kv.h"

typedef struct kvq_sparse_opts {
    long budget;   /* tokens per step (hsa, rocket) or kept (snapkv) */
    long window;   /* observation window (queries) */
    long pool;     /* max-pool kernel */
    long page;     /* HSA page in tokens (0: derived) */
    long gen;      /* tokens expected after the prompt (rocket's split) */
} kvq_sparse_opts;

/* `allowed` lists the option names the policy takes ("budget,window,pool").
 * Defaults come in *o. */
kvq_status kvq_sparse_opts_parse(const kvq_kv_cache *c, const char *allowed, kvq_sparse_opts *o, char *err,
                                 size_t cap);

/* The read granularity of keys: a page smaller than this reads whole key
 * tiles (f16/f32) or blocks (KIVI) for a few tokens, so sparse attention would
 * move as many bytes as dense attention. */
int kvq_sparse_min_page(const kvq_kv_cache *c);

#endif
