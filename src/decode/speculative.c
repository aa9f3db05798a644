/* QuantSpec's self-speculative decoding loop (methods/quantspec.md).
 *
 * A round, with x0 the last emitted token (not yet in the cache) at
 * position Lc:
 *   1. draft: gamma single-token passes of x0, d1, ... on the draft weight
 *      set, reading the draft view; d_i drawn from their distributions q_i;
 *   2. the drafts are dropped (truncate to Lc: they are pending tokens);
 *   3. verify: one batched pass of x0, d1..d_gamma on the model's weights and
 *      the full view, giving the target distributions p_0..p_gamma;
 *   4. d_i is accepted with probability min(1, p_{i-1}(d_i) / q_i(d_i)) (for
 *      greedy, one-hot distributions make this "equal to the argmax"); at the
 *      first rejection the bonus token is drawn from the normalized
 *      max(0, p_{i-1} - q_i), after a full acceptance from p_gamma;
 *   5. accept 1 + n_accepted pending tokens (the codec may now compress them),
 *      emit the accepted drafts and the bonus, which is the next x0.
 * Everything goes through kvq_eval_ex and kvq_ctx_accept: the loop knows no
 * codec. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../context/context.h"
#include "spec_tune.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define MAX_GAMMA 32

bool kvq_spec_judge(kvq_sampler *s, const float *p, const float *q, kvq_token d, int V, float *tmp, kvq_token *bonus) {
    const float a = q[d] > 0 ? p[d] / q[d] : 0;
    if (a >= 1 || kvq_sampler_uniform(s) < a) return true;
    /* rejected: the bonus comes from what the target wants beyond the draft */
    double z = 0;
    for (int v = 0; v < V; v++) {
        tmp[v] = p[v] > q[v] ? p[v] - q[v] : 0;
        z += tmp[v];
    }
    *bonus = kvq_sampler_draw(s, z > 0 ? tmp : p);
    return false;
}

kvq_status kvq_generate_speculative(kvq_ctx *c, kvq_sampler *s, const kvq_spec_params *p, int32_t n_max,
                                    kvq_token_fn emit, void *user, kvq_spec_stats *stats) {
    kvq_spec_stats st0 = {0};
    kvq_spec_stats *S = stats ? stats : &st0;
    memset(S, 0, sizeof *S);
    const int g0 = p && p->gamma ? p->gamma : 6;
    if (g0 < 1 || g0 > MAX_GAMMA / 2)
        return kvq_err(&c->lg, KVQ_ERR_ARG, "speculative decoding: gamma %d is out of range [1, %d]", g0, MAX_GAMMA / 2);
    const int draft_set = p ? p->draft_set : 0;
    if (draft_set < 0 || draft_set >= c->n_sets)
        return kvq_err(&c->lg, KVQ_ERR_ARG, "speculative decoding: weight set %d does not exist", draft_set);
    if (!c->kv->codec->has_draft_view)
        return kvq_err(&c->lg, KVQ_ERR_UNSUPPORTED,
                       "speculative decoding drafts from the KV cache's draft view; codec '%s' has none (use --kv hier)",
                       c->kv->codec->name);
    if (kvq_ctx_n_pending(c)) return kvq_err(&c->lg, KVQ_ERR_ARG, "speculative tokens are already pending");
    const float *last = kvq_ctx_logits(c);
    if (!last) return kvq_err(&c->lg, KVQ_ERR_ARG, "speculative decoding needs the logits of the last position");
    if (n_max <= 0) return KVQ_OK;
    const int V = c->m->hp.n_vocab;
    float *q = malloc((size_t)MAX_GAMMA * V * sizeof(float)), *pr = malloc((size_t)(MAX_GAMMA + 1) * V * sizeof(float)),
          *lg = malloc((size_t)(MAX_GAMMA + 1) * V * sizeof(float)), *dist = malloc((size_t)V * sizeof(float));
    if (!q || !pr || !lg || !dist) {
        free(q); free(pr); free(lg); free(dist);
        return KVQ_ERR_NOMEM;
    }
    kvq_status st = KVQ_OK;
    kvq_sampler_dist(s, last, dist);
    kvq_token x0 = kvq_sampler_draw(s, dist), toks[MAX_GAMMA + 1];
    S->emitted = 1;
    bool go = emit ? emit(user, x0) : true;
    int gamma = g0;
    const bool adaptive = p && p->adaptive;
    kvq_spec_tune T;
    kvq_spec_tune_init(&T, 2 * g0);
    while (go && S->emitted < n_max && !st) {
        if (adaptive) gamma = kvq_spec_tune_next(&T, g0);
        const int32_t Lc = c->n_past, room = c->n_ctx - Lc - 1;
        int gm = gamma < room ? gamma : room; /* the verify pass holds x0 and gm drafts */
        if (gm > n_max - S->emitted) gm = n_max - S->emitted;
        if (gm < 1) { /* no room to draft, or drafting does not pay: a plain step */
            if (Lc >= c->n_ctx) break;
            const double tp = now_s();
            if ((st = kvq_eval(c, &x0, 1, false, lg))) break;
            S->plain_steps++;
            if (adaptive && gamma == 0) kvq_spec_tune_plain(&T, now_s() - tp);
            kvq_sampler_dist(s, lg, dist);
            x0 = kvq_sampler_draw(s, dist);
            S->emitted++;
            go = emit ? emit(user, x0) : true;
            continue;
        }
        /* 1. draft */
        double t0 = now_s();
        kvq_eval_opts od = kvq_eval_default_opts();
        od.view = KVQ_VIEW_DRAFT;
        od.weight_set = draft_set;
        od.speculative = true;
        toks[0] = x0;
        for (int i = 1; i <= gm && !st; i++) {
            if ((st = kvq_eval_ex(c, &toks[i - 1], 1, &od, lg))) break;
            kvq_sampler_dist(s, lg, q + (size_t)(i - 1) * V);
            toks[i] = kvq_sampler_draw(s, q + (size_t)(i - 1) * V);
        }
        if (st) break;
        /* 2. drop the drafts' K/V, 3. verify x0 and the drafts in one pass */
        if ((st = kvq_ctx_truncate(c, Lc))) break;
        double t1 = now_s();
        kvq_eval_opts ov = kvq_eval_default_opts();
        ov.speculative = true;
        ov.all_logits = true;
        if ((st = kvq_eval_ex(c, toks, gm + 1, &ov, lg))) break;
        double t2 = now_s();
        S->draft_seconds += t1 - t0;
        S->verify_seconds += t2 - t1;
        S->rounds++;
        S->drafted += gm;
        /* 4. accept the longest agreeing prefix, then a bonus token */
        int n_acc = 0;
        kvq_token bonus = -1;
        for (int i = 1; i <= gm && bonus < 0; i++) {
            float *pi = pr + (size_t)(i - 1) * V;
            kvq_sampler_dist(s, lg + (size_t)(i - 1) * V, pi);
            if (kvq_spec_judge(s, pi, q + (size_t)(i - 1) * V, toks[i], V, dist, &bonus)) n_acc++;
        }
        if (bonus < 0) {
            kvq_sampler_dist(s, lg + (size_t)gm * V, dist);
            bonus = kvq_sampler_draw(s, dist);
        }
        S->accepted += n_acc;
        /* 5. x0 and the accepted drafts are verified; the rest go */
        if ((st = kvq_ctx_accept(c, 1 + n_acc))) break;
        int i = 1;
        for (; i <= n_acc && go && S->emitted < n_max; i++) {
            S->emitted++;
            go = emit ? emit(user, toks[i]) : true;
        }
        if (!go || S->emitted >= n_max) {
            /* stopped at d_{i-1}: the context keeps what precedes it, as after any emitted token */
            if (i - 1 < n_acc + 1) st = kvq_ctx_truncate(c, Lc + i - 1);
            break;
        }
        x0 = bonus;
        S->emitted++;
        go = emit ? emit(user, x0) : true;
        if (adaptive) kvq_spec_tune_round(&T, gm, n_acc, t1 - t0, t2 - t1);
    }
    free(q);
    free(pr);
    free(lg);
    free(dist);
    return st;
}
