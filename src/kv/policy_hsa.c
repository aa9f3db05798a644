/* The "hsa" policy (RocketKV stage 2 alone, Quest/SparQ-like): page
 * summaries of every key, and at each decode step the pages that hold
 * budget/2 tokens, chosen from r channels of the query group (hsa.h), are
 * the only ones read. Nothing is evicted. r follows the digest's rule that
 * estimation reads about as much as the chosen tokens: r = D * page * budget
 * / tokens visible. Prompts attend densely. Spec: +hsa:budget=N[,page=8]
 * (the split RocketKV derives a page from needs stage 1's cap; alone, 8
 * tokens is the size its split gives for the usual budgets at 32K-128K). */
#include <stdlib.h>
#include "hsa.h"
#include "policy_opts.h"

typedef struct hstate { kvq_sparse_opts o; kvq_hsa hsa; } hstate;

static kvq_status h_init(kvq_kv_cache *c, char *err, size_t cap) {
    kvq_sparse_opts o = {0};
    kvq_status st = kvq_sparse_opts_parse(c, "budget,page", &o, err, cap);
    if (st) return st;
    if (!o.page) o.page = 8;
    hstate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    s->o = o;
    c->pstate = s;
    c->max_spans = (int32_t)(o.budget / o.page + 2);
    return kvq_hsa_init(&s->hsa, c, (int)o.page);
}

static void h_destroy(kvq_kv_cache *c) {
    hstate *s = c->pstate;
    if (s) kvq_hsa_free(&s->hsa);
    free(s);
    c->pstate = NULL;
}

static void h_on_append(kvq_kv_cache *c, int il, const float *k, int n, int slot0) {
    hstate *s = c->pstate;
    kvq_hsa_append(&s->hsa, il, k, n, slot0); /* out of memory: the layer reads densely (select sees fewer slots) */
}

static void h_on_truncate(kvq_kv_cache *c, int il, int n) {
    hstate *s = c->pstate;
    kvq_hsa_resync(&s->hsa, c, il, n);
}

static int h_select(kvq_kv_cache *c, int il, int h, const float *q, int n_q, int n_vis, kvq_span *out, int cap) {
    const hstate *s = c->pstate;
    if (c->in_step && c->step.mode == KVQ_STEP_PROMPT) return -1;
    if (n_vis <= s->o.budget) return -1;
    const int r = kvq_hsa_channels(c->g.head_dim, (int)s->o.page, s->o.budget, n_vis);
    return kvq_hsa_select(&s->hsa, il, h, q, n_q, n_vis, r, (int)(s->o.budget / 2), NULL, 0, out, cap);
}

static uint64_t h_bytes(const kvq_kv_cache *c) {
    const hstate *s = c->pstate;
    uint64_t b = 0;
    for (int il = 0; il < c->g.n_layer; il++) b += kvq_hsa_bytes_for(&s->hsa, c->layers[il].n);
    return b;
}

const kvq_policy kvq_policy_hsa = {
    .name = "hsa", .init = h_init, .destroy = h_destroy, .on_append = h_on_append, .select = h_select,
    .on_truncate = h_on_truncate, .bytes = h_bytes, .max_spans = 2,
};
