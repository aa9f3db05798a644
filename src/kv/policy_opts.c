/* Option parsing for the sparse policies (policy_opts.h). */
#include "policy_opts.h"

#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static bool listed(const char *allowed, const char *key) {
    size_t n = strlen(key);
    for (const char *p = allowed; (p = strstr(p, key)); p += n)
        if ((p == allowed || p[-1] == ',') && (p[n] == ',' || !p[n])) return true;
    return false;
}

kvq_status kvq_sparse_opts_parse(const kvq_kv_cache *c, const char *allowed, kvq_sparse_opts *o, char *err,
                                 size_t cap) {
    const kvq_kv_spec *s = &c->spec;
    for (int i = 0; i < s->n_popt; i++)
        if (!listed(allowed, s->popt[i].key)) {
            snprintf(err, cap, "%s: unknown option '%s' (takes %s)", s->policy, s->popt[i].key, allowed);
            return KVQ_ERR_ARG;
        }
    if (!kvq_kv_opt_get(s->popt, s->n_popt, "budget")) {
        snprintf(err, cap, "%s: needs budget=TOKENS (e.g. %s:budget=256)", s->policy, s->policy);
        return KVQ_ERR_ARG;
    }
    const long n_ctx = c->g.n_ctx;
    if (!kvq_kv_opt_int(s->popt, s->n_popt, "budget", 1, n_ctx, &o->budget, err, cap) ||
        !kvq_kv_opt_int(s->popt, s->n_popt, "window", 1, 4096, &o->window, err, cap) ||
        !kvq_kv_opt_int(s->popt, s->n_popt, "pool", 1, 1023, &o->pool, err, cap) ||
        !kvq_kv_opt_int(s->popt, s->n_popt, "page", 1, 4096, &o->page, err, cap) ||
        !kvq_kv_opt_int(s->popt, s->n_popt, "gen", 0, n_ctx, &o->gen, err, cap)) {
        /* name the context when the budget exceeds it: the most likely mistake */
        const char *b = kvq_kv_opt_get(s->popt, s->n_popt, "budget");
        char *e;
        long v = b ? strtol(b, &e, 10) : 0;
        if (b && *b && !*e && v > n_ctx)
            snprintf(err, cap, "%s: budget=%ld is larger than the context of %ld tokens", s->policy, v, n_ctx);
        return KVQ_ERR_ARG;
    }
    const bool window_given = kvq_kv_opt_get(s->popt, s->n_popt, "window") != NULL;
    if (listed(allowed, "window") && !window_given && o->window >= o->budget)
        o->window = o->budget / 2 > 0 ? o->budget / 2 : 1; /* the default window shrinks for a small budget */
    if (listed(allowed, "pool") && o->pool % 2 == 0) {
        snprintf(err, cap, "%s: pool=%ld must be odd (a centred max-pool)", s->policy, o->pool);
        return KVQ_ERR_ARG;
    }
    if (listed(allowed, "window") && o->window >= o->budget && o->budget > 1) {
        snprintf(err, cap, "%s: window=%ld must be smaller than budget=%ld", s->policy, o->window, o->budget);
        return KVQ_ERR_ARG;
    }
    return KVQ_OK;
}

int kvq_sparse_min_page(const kvq_kv_cache *c) {
    const kvq_kv_layer *L = &c->layers[0];
    return c->codec->grain ? c->codec->grain(L) : 1;
}
