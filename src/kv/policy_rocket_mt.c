/* The "rocket-mt" policy: RocketKV's multi-turn variant. Nothing is ever
 * evicted: at the end of every prompt each layer re-runs stage 1 (SnapKV
 * scoring with the last 128 queries) over the whole history to pick the
 * turn's candidates, and hybrid sparse attention chooses among the pages
 * that hold them plus every page written since. A later question can so
 * reach a token the previous turn's eviction would have dropped; the saving
 * is in traffic, not in storage. Spec:
 *   +rocket-mt:budget=N[,gen=256][,window=128][,pool=63][,page=P]
 * The page is the split's at the first prompt end (page=P overrides). */
#include <stdlib.h>
#include <string.h>
#include "hsa.h"
#include "policy_opts.h"
#include "rocket_split.h"
#include "snapkv.h"

typedef struct mstate {
    kvq_sparse_opts o;
    kvq_hsa hsa;
    int page;
    kvq_rocket_split split;
    bool *ready;             /* [n_layer] summaries built (from the first prompt end) */
    uint8_t **cand;          /* [n_layer] -> [n_head_kv][cand_pages[l]] candidate pages */
    int *cand_pages;         /* [n_layer] pages before which the mask applies (later pages are new) */
} mstate;

static kvq_status m_init(kvq_kv_cache *c, char *err, size_t cap) {
    kvq_sparse_opts o = {.window = 128, .pool = 63, .gen = 256};
    kvq_status st = kvq_sparse_opts_parse(c, "budget,gen,window,pool,page", &o, err, cap);
    if (st) return st;
    mstate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    c->pstate = s;
    s->o = o;
    s->cand = calloc((size_t)c->g.n_layer, sizeof *s->cand);
    s->cand_pages = calloc((size_t)c->g.n_layer, sizeof *s->cand_pages);
    s->ready = calloc((size_t)c->g.n_layer, sizeof *s->ready);
    if (!s->cand || !s->cand_pages || !s->ready) return KVQ_ERR_NOMEM;
    c->obs_w = (int32_t)o.window;
    c->max_spans = (int32_t)(o.budget + 2);
    return KVQ_OK;
}

static void m_destroy(kvq_kv_cache *c) {
    mstate *s = c->pstate;
    if (s) {
        if (s->page) kvq_hsa_free(&s->hsa);
        free(s->ready);
        for (int l = 0; s->cand && l < c->g.n_layer; l++) free(s->cand[l]);
        free(s->cand);
        free(s->cand_pages);
    }
    free(s);
    c->pstate = NULL;
}

static kvq_status m_prefill_end(kvq_kv_cache *c, int il) {
    mstate *s = c->pstate;
    const kvq_kv_layer *L = &c->layers[il];
    const int nkv = c->g.n_head_kv, n = L->n;
    kvq_rocket_split_for(n, s->o.gen, (int)s->o.budget, c->g.head_dim, &s->split);
    if (!s->page) { /* the first prompt fixes the page: the summaries outlive every turn */
        const int page = s->o.page ? (int)s->o.page : s->split.page;
        kvq_status st = kvq_hsa_init(&s->hsa, c, page);
        if (st) return st;
        s->page = page;
    }
    if (!s->ready[il]) {
        kvq_status st = kvq_hsa_resync(&s->hsa, c, il, 0);
        if (st) return st;
        s->ready[il] = true;
    }
    const int keep = (int)s->split.prompt_keep;
    free(s->cand[il]);
    s->cand[il] = NULL;
    s->cand_pages[il] = 0;
    if (keep <= s->o.window || n <= keep) return KVQ_OK; /* everything is a candidate */
    const int P = s->page, n_pages = (n + P - 1) / P;
    uint8_t *mask = calloc((size_t)nkv * n_pages, 1);
    int32_t *k = malloc((size_t)nkv * keep * sizeof *k);
    kvq_status st = mask && k ? kvq_snapkv_select(c, il, keep, (int)s->o.window, (int)s->o.pool, k, c->n_threads)
                              : KVQ_ERR_NOMEM;
    for (int h = 0; !st && h < nkv; h++)
        for (int j = 0; j < keep; j++) mask[(size_t)h * n_pages + k[(size_t)h * keep + j] / P] = 1;
    free(k);
    if (st) {
        free(mask);
        return st;
    }
    s->cand[il] = mask;
    s->cand_pages[il] = n_pages;
    return KVQ_OK;
}

static void m_on_append(kvq_kv_cache *c, int il, const float *k, int n, int slot0) {
    mstate *s = c->pstate;
    if (s->ready[il] && kvq_hsa_append(&s->hsa, il, k, n, slot0)) s->ready[il] = false;
}

static void m_on_truncate(kvq_kv_cache *c, int il, int n) {
    mstate *s = c->pstate;
    if (!s->ready[il]) return;
    if (kvq_hsa_resync(&s->hsa, c, il, n)) s->ready[il] = false;
    /* pages at and after the truncation point hold new tokens now */
    const int p = n / s->page;
    if (s->cand[il] && p < s->cand_pages[il]) {
        const int old = s->cand_pages[il];
        for (int h = 0; h < c->g.n_head_kv; h++)
            memmove(s->cand[il] + (size_t)h * p, s->cand[il] + (size_t)h * old, (size_t)p);
        s->cand_pages[il] = p;
    }
}

static int m_select(kvq_kv_cache *c, int il, int h, const float *q, int n_q, int n_vis, kvq_span *out, int cap) {
    const mstate *s = c->pstate;
    if (!s->ready[il] || (c->in_step && c->step.mode == KVQ_STEP_PROMPT) || n_vis <= s->o.budget) return -1;
    const int np = s->cand_pages[il], k = (int)(s->o.budget / 2);
    /* r as if the candidates and the new pages were all there is */
    const int r = kvq_hsa_channels(c->g.head_dim, s->page, s->o.budget,
                                   np ? (int)s->split.cap + (n_vis - np * s->page) : n_vis);
    return kvq_hsa_select(&s->hsa, il, h, q, n_q, n_vis, r, k, np ? s->cand[il] + (size_t)h * np : NULL, np, out,
                          cap);
}

static uint64_t m_bytes(const kvq_kv_cache *c) {
    const mstate *s = c->pstate;
    uint64_t b = 0;
    for (int il = 0; il < c->g.n_layer; il++)
        b += (s->ready[il] ? kvq_hsa_bytes_for(&s->hsa, c->layers[il].n) : 0) +
             (uint64_t)c->g.n_head_kv * s->cand_pages[il];
    return b;
}

const kvq_policy kvq_policy_rocket_mt = {
    .name = "rocket-mt", .init = m_init, .destroy = m_destroy, .on_append = m_on_append, .select = m_select,
    .prefill_end = m_prefill_end, .on_truncate = m_on_truncate, .bytes = m_bytes, .obs_window = 128, .max_spans = 2,
};
