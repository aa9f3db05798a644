/* The "window" policy (StreamingLLM-style baseline): each query reads the
 * first `sink` slots (attention sinks) and the most recent `win` slots, and
 * frees the middle: at the end of a step it evicts whole pages between the
 * sinks and the window, so memory stays bounded (sinks rounded up to a page,
 * plus the window, plus less than a page) however long the generation runs.
 * Evicting whole pages keeps a block codec's blocks whole and aligned, so
 * KIVI re-encodes them to themselves. It exists to show what a cache that
 * drops the middle of a context cannot do (kvq niah).
 * Spec: +window[:sink=4][,win=256]. */
#include <stdlib.h>
#include <string.h>
#include "kv.h"

typedef struct wstate { int32_t sink, win; } wstate;

static kvq_status w_init(kvq_kv_cache *c, char *err, size_t cap) {
    long sink = 4, win = 256;
    if (!kvq_kv_opt_int(c->spec.popt, c->spec.n_popt, "sink", 0, 1 << 24, &sink, err, cap) ||
        !kvq_kv_opt_int(c->spec.popt, c->spec.n_popt, "win", 1, 1 << 24, &win, err, cap))
        return KVQ_ERR_ARG;
    for (int i = 0; i < c->spec.n_popt; i++)
        if (strcmp(c->spec.popt[i].key, "sink") && strcmp(c->spec.popt[i].key, "win")) {
            snprintf(err, cap, "window: unknown option '%s' (sink=, win=)", c->spec.popt[i].key);
            return KVQ_ERR_ARG;
        }
    wstate *s = malloc(sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    s->sink = (int32_t)sink;
    s->win = (int32_t)win;
    c->pstate = s;
    return KVQ_OK;
}

static void w_destroy(kvq_kv_cache *c) {
    free(c->pstate);
    c->pstate = NULL;
}

static int w_select(kvq_kv_cache *c, int il, int h, const float *q, int n_q, int n_vis, kvq_span *out, int cap) {
    (void)il; (void)h; (void)q; (void)n_q; (void)cap;
    const wstate *s = c->pstate;
    if (n_vis <= s->sink + s->win) return -1;
    out[0] = (kvq_span){0, s->sink};
    out[1] = (kvq_span){n_vis - s->win, n_vis};
    return s->sink > 0 ? 2 : (out[0] = out[1], 1);
}

static kvq_status w_after_step(kvq_kv_cache *c, int il) {
    const wstate *s = c->pstate;
    const kvq_kv_layer *L = &c->layers[il];
    const int P = L->page, head = (s->sink + P - 1) / P * P, tail = L->n - s->win;
    const int drop = tail > head ? (tail - head) / P * P : 0;
    if (drop <= 0) return KVQ_OK;
    const int n_keep = L->n - drop, nkv = c->g.n_head_kv;
    int32_t *keep = malloc((size_t)n_keep * (size_t)nkv * sizeof *keep);
    if (!keep) return KVQ_ERR_NOMEM;
    for (int h = 0; h < nkv; h++)
        for (int j = 0; j < n_keep; j++) keep[(size_t)h * n_keep + j] = j < head ? j : j + drop;
    kvq_status st = kvq_kv_compact(c, il, keep, n_keep);
    free(keep);
    return st;
}

/* after_step keeps the sinks rounded up to a page, the window, and what is
 * left of the page the eviction could not free whole */
static int32_t w_held_bound(const kvq_kv_cache *c, int il) {
    const wstate *s = c->pstate;
    const int P = c->layers[il].page;
    return (s->sink + P - 1) / P * P + s->win + P - 1;
}

const kvq_policy kvq_policy_window = {
    .name = "window", .init = w_init, .destroy = w_destroy, .select = w_select, .after_step = w_after_step,
    .held_bound = w_held_bound,
    .needs_compact = true, .max_spans = 2,
};
