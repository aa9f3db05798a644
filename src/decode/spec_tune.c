#include "spec_tune.h"

#include <math.h>
#include <string.h>

#define FORGET 0.9    /* weight of the past per observation */
#define PROBE_EVERY 16 /* plain steps between rounds that re-measure acceptance */

void kvq_spec_tune_init(kvq_spec_tune *t, int gmax) {
    memset(t, 0, sizeof *t);
    t->gmax = gmax;
}

static void fit_add(kvq_spec_tune *t, double x, double y) {
    t->sw = FORGET * t->sw + 1;
    t->sx = FORGET * t->sx + x;
    t->sy = FORGET * t->sy + y;
    t->sxx = FORGET * t->sxx + x * x;
    t->sxy = FORGET * t->sxy + x * y;
}

void kvq_spec_tune_round(kvq_spec_tune *t, int gm, int n_acc, double draft_s, double verify_s) {
    t->acc = FORGET * t->acc + n_acc;
    t->rej = FORGET * t->rej + (n_acc < gm ? 1 : 0);
    t->d_sum = FORGET * t->d_sum + draft_s;
    t->d_n = FORGET * t->d_n + gm;
    fit_add(t, gm + 1, verify_s);
    t->rounds++;
    t->plain_run = 0;
}

void kvq_spec_tune_plain(kvq_spec_tune *t, double secs) {
    fit_add(t, 1, secs);
    t->plain_run++;
}

double kvq_spec_rate(double a, double d, double v0, double v1, int g) {
    const double e = a < 1 ? (1 - pow(a, g + 1)) / (1 - a) : g + 1, cost = g * d + v0 + v1 * (g + 1);
    return cost > 0 ? e / cost : 0;
}

int kvq_spec_tune_next(kvq_spec_tune *t, int g0) {
    /* two rounds at different gammas first, so that the verify cost has a slope */
    if (t->rounds == 0) return g0;
    if (t->rounds == 1) return g0 > 1 ? 1 : 2 <= t->gmax ? 2 : 1;
    const double a = (t->acc + 1) / (t->acc + t->rej + 2), d = t->d_n > 0 ? t->d_sum / t->d_n : 0;
    const double det = t->sw * t->sxx - t->sx * t->sx;
    double v1, v0;
    if (det > 1e-9 * t->sw * t->sxx) {
        v1 = (t->sw * t->sxy - t->sx * t->sy) / det;
        v0 = (t->sy - v1 * t->sx) / t->sw;
    } else { /* one position count seen: cost proportional to positions */
        v1 = t->sx > 0 ? t->sy / t->sx : 0;
        v0 = 0;
    }
    if (v1 < 0) v1 = 0, v0 = t->sy / t->sw;
    if (v0 < 0) v0 = 0, v1 = t->sx > 0 ? t->sy / t->sx : 0;
    int best = 0;
    double rbest = kvq_spec_rate(a, d, v0, v1, 0);
    for (int g = 1; g <= t->gmax; g++) {
        const double r = kvq_spec_rate(a, d, v0, v1, g);
        if (r > rbest) rbest = r, best = g;
    }
    /* while plain steps win, a round now and then keeps the acceptance and costs current */
    if (best == 0 && t->plain_run >= PROBE_EVERY) return 1;
    return best;
}
