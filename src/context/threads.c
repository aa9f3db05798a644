#include "threads.h"

/* A step this much slower than the best recent one is taken for
 * contention; noise on a quiet host stays well under it. */
#define SLOWER 1.5
/* How much faster the other count must be to switch to it. */
#define BETTER 0.9
#define PROBE_STEPS 2
/* On one thread: try the full count again after this many steps and seconds. */
#define RETRY_STEPS 32
#define RETRY_SECONDS 0.25
/* A contention that was there from the start shows no jump: an early probe
 * finds it (two steps on one thread), made only when other threads are
 * runnable then, so that a quiet machine does not pay for it. */
#define FIRST_PROBE_STEP 8

void kvq_thread_gov_init(kvq_thread_gov *g, int max, bool adapt) {
    *g = (kvq_thread_gov){.max = max, .cur = max, .on = adapt && max > 1};
}

static int other(const kvq_thread_gov *g) { return g->cur == 1 ? g->max : 1; }

int kvq_thread_gov_next(const kvq_thread_gov *g) {
    if (!g->on) return g->max;
    return g->probe ? other(g) : g->cur;
}

static void start_probe(kvq_thread_gov *g) {
    g->probe = PROBE_STEPS;
    g->probe_best = 0;
}

bool kvq_thread_gov_done(kvq_thread_gov *g, int used, double s) {
    if (!g->on || s <= 0) return false;
    if (g->probe) {
        if (used != other(g)) return false;
        if (!g->probe_best || s < g->probe_best) g->probe_best = s;
        if (--g->probe) return false;
        g->since = 0;
        g->since_t = 0;
        if (g->probe_best < BETTER * g->ema) { /* the other count wins: it becomes cur, measured afresh */
            g->cur = other(g);
            g->ema = g->base = g->probe_best;
            g->n_switch++;
            return true;
        }
        g->base = g->ema; /* the slowdown was the machine's, not the count's: judge from here */
        return false;
    }
    if (used != g->cur) return false;
    g->ema = g->ema ? 0.7 * g->ema + 0.3 * s : s;
    /* the best relaxes by 0.2% a step: attention grows with the context */
    g->base = !g->base || g->ema < g->base ? g->ema : g->base * 1.002;
    g->since++;
    g->since_t += s;
    if (g->cur == g->max) {
        bool first = false;
        if (!g->probed && g->since >= FIRST_PROBE_STEP) {
            g->probed = true;
            first = g->others ? g->others(g->max) != 0 : true;
        }
        if (first || (g->since >= PROBE_STEPS && g->ema > SLOWER * g->base)) start_probe(g);
    } else if (g->since >= RETRY_STEPS && g->since_t >= RETRY_SECONDS) {
        start_probe(g);
    }
    return false;
}
