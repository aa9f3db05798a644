/* The "rocket" policy: RocketKV's two stages with the paper's budget split
 * (rocket_split.h). At the end of a prompt each layer runs SnapKV down to the
 * split's prompt_keep tokens (the memory is freed), then builds page
 * summaries of what is left; each decode step then reads only the pages
 * hybrid sparse attention chooses (hsa.h). Spec:
 *   +rocket:budget=N[,gen=256][,window=32][,pool=63][,page=P]
 * gen is the generation length the split plans for. The page is the split's
 * (3 to 6 tokens at usual budgets); page=P overrides it. A page smaller than
 * the codec's key grain (32 for f16 and KIVI) still reads whole key tiles, so
 * sparse attention moves more bytes than the tokens it keeps; larger pages
 * lose retrieval accuracy (docs/rocketkv.md measures both). */
#include <stdlib.h>
#include <string.h>
#include "hsa.h"
#include "policy_opts.h"
#include "rocket_split.h"
#include "snapkv.h"

typedef struct rstate {
    kvq_sparse_opts o;
    kvq_hsa hsa;
    int page;                /* HSA page in use (0 before the first prompt end) */
    bool *ready;             /* [n_layer] summaries built */
    kvq_rocket_split split;
} rstate;

static kvq_status r_init(kvq_kv_cache *c, char *err, size_t cap) {
    kvq_sparse_opts o = {.window = 32, .pool = 63, .gen = 256};
    kvq_status st = kvq_sparse_opts_parse(c, "budget,gen,window,pool,page", &o, err, cap);
    if (st) return st;
    rstate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    c->pstate = s;
    s->o = o;
    s->ready = calloc((size_t)c->g.n_layer, sizeof *s->ready);
    if (!s->ready) return KVQ_ERR_NOMEM;
    c->obs_w = (int32_t)o.window;
    c->max_spans = (int32_t)(o.budget + 2); /* pages of one token at the smallest */
    return KVQ_OK;
}

static void r_destroy(kvq_kv_cache *c) {
    rstate *s = c->pstate;
    if (s) {
        if (s->page) kvq_hsa_free(&s->hsa);
        free(s->ready);
    }
    free(s);
    c->pstate = NULL;
}

static kvq_status r_prefill_end(kvq_kv_cache *c, int il) {
    rstate *s = c->pstate;
    kvq_kv_layer *L = &c->layers[il];
    if (il == 0) {
        kvq_rocket_split_for(L->n, s->o.gen, (int)s->o.budget, c->g.head_dim, &s->split);
        const int page = s->o.page ? (int)s->o.page : s->split.page;
        if (page != s->page) { /* the first prompt, or a later one that changes the split */
            if (s->page) kvq_hsa_free(&s->hsa);
            s->page = 0;
            kvq_status st = kvq_hsa_init(&s->hsa, c, page);
            if (st) return st;
            s->page = page;
            memset(s->ready, 0, (size_t)c->g.n_layer * sizeof *s->ready);
        }
    }
    /* generated tokens are never evicted: stage 1 keeps prompt_keep of what is held now */
    const int keep = (int)s->split.prompt_keep;
    kvq_status st = KVQ_OK;
    if (keep > s->o.window && L->n > keep) st = kvq_snapkv_evict(c, il, keep, (int)s->o.window, (int)s->o.pool);
    if (!st) st = kvq_hsa_resync(&s->hsa, c, il, 0);
    s->ready[il] = !st;
    return st;
}

static void r_on_append(kvq_kv_cache *c, int il, const float *k, int n, int slot0) {
    rstate *s = c->pstate;
    if (s->ready[il] && kvq_hsa_append(&s->hsa, il, k, n, slot0)) s->ready[il] = false;
}

static void r_on_truncate(kvq_kv_cache *c, int il, int n) {
    rstate *s = c->pstate;
    if (s->ready[il] && kvq_hsa_resync(&s->hsa, c, il, n)) s->ready[il] = false;
}

static int r_select(kvq_kv_cache *c, int il, int h, const float *q, int n_q, int n_vis, kvq_span *out, int cap) {
    const rstate *s = c->pstate;
    if (!s->ready[il] || (c->in_step && c->step.mode == KVQ_STEP_PROMPT) || n_vis <= s->o.budget) return -1;
    const int r = kvq_hsa_channels(c->g.head_dim, s->page, s->o.budget, n_vis);
    return kvq_hsa_select(&s->hsa, il, h, q, n_q, n_vis, r, s->split.k, NULL, 0, out, cap);
}

static uint64_t r_bytes(const kvq_kv_cache *c) {
    const rstate *s = c->pstate;
    uint64_t b = 0;
    for (int il = 0; s->page && il < c->g.n_layer; il++)
        if (s->ready[il]) b += kvq_hsa_bytes_for(&s->hsa, c->layers[il].n);
    return b;
}

const kvq_policy kvq_policy_rocket = {
    .name = "rocket", .init = r_init, .destroy = r_destroy, .on_append = r_on_append, .select = r_select,
    .prefill_end = r_prefill_end, .on_truncate = r_on_truncate, .bytes = r_bytes, .needs_compact = true,
    .obs_window = 32, .max_spans = 2,
};
