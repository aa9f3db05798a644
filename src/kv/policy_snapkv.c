/* The "snapkv" policy (RocketKV stage 1 alone): at the end of a prompt, the
 * last `window` queries score every earlier token (per GQA group, max-pooled)
 * and each layer keeps the top `budget` tokens, the window included; the
 * codec compacts and the memory of the rest is freed. Later tokens are kept
 * until the next prompt ends. Spec: +snapkv:budget=N[,window=32][,pool=63]. */
#include <stdlib.h>
#include "policy_opts.h"
#include "snapkv.h"

static kvq_status s_init(kvq_kv_cache *c, char *err, size_t cap) {
    kvq_sparse_opts o = {.window = 32, .pool = 63};
    kvq_status st = kvq_sparse_opts_parse(c, "budget,window,pool", &o, err, cap);
    if (st) return st;
    kvq_sparse_opts *s = malloc(sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    *s = o;
    c->pstate = s;
    c->obs_w = (int32_t)o.window;
    return KVQ_OK;
}

static void s_destroy(kvq_kv_cache *c) {
    free(c->pstate);
    c->pstate = NULL;
}

static kvq_status s_prefill_end(kvq_kv_cache *c, int il) {
    const kvq_sparse_opts *o = c->pstate;
    return kvq_snapkv_evict(c, il, (int)o->budget, (int)o->window, (int)o->pool);
}

const kvq_policy kvq_policy_snapkv = {
    .name = "snapkv", .init = s_init, .destroy = s_destroy, .prefill_end = s_prefill_end, .needs_compact = true,
    .obs_window = 32,
};
