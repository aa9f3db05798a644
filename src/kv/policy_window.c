/* The "window" policy (StreamingLLM-style baseline): each query reads the
 * first `sink` slots (attention sinks) and the most recent `win` slots.
 * It only restricts what is read; the slots in between stay allocated. It
 * exists to show what a cache that drops the middle of a context cannot do
 * (kvq niah). Spec: +window[:sink=4][,win=256]. */
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

const kvq_policy kvq_policy_window = {
    .name = "window", .init = w_init, .destroy = w_destroy, .select = w_select, .max_spans = 2,
};
