/* How many threads a decode step uses. On a machine whose cores other
 * processes keep busy, a parallel region's join waits for a thread the
 * scheduler displaced, up to a time slice per region: forking then makes
 * decode slower than one thread (issue 16 measured 4 tok/s against 990).
 * The governor watches the step time at the requested count; when it jumps,
 * it tries one thread for a couple of steps and keeps whichever is faster,
 * and while on one thread it tries the full count again now and then, so
 * speed comes back when the cores do. Prefill (many tokens a step) is left
 * alone: its regions are long enough to pay for a lost slice. */
#ifndef KVQ_CONTEXT_THREADS_H
#define KVQ_CONTEXT_THREADS_H
#include <stdbool.h>

typedef struct kvq_thread_gov {
    int max;              /* the requested count; 1: nothing to govern */
    int cur;              /* the count decode steps use now */
    bool on;
    double ema;           /* step seconds at cur (exponential average) */
    double base;          /* the best ema seen at cur, relaxing upwards as the context grows */
    int probe;            /* steps left trying the other count (0: not probing) */
    double probe_best;    /* the fastest of those steps */
    int since;            /* steps since cur last changed or was probed */
    double since_t;       /* seconds of those steps */
    int n_switch;         /* times cur changed (reported with -v) */
    bool probed;          /* the first probe was considered */
    int (*others)(int own); /* runnable threads besides ours (0: none, -1: unknown); NULL: assume some */
} kvq_thread_gov;

void kvq_thread_gov_init(kvq_thread_gov *g, int max, bool adapt);
/* The count for the next decode step. */
int  kvq_thread_gov_next(const kvq_thread_gov *g);
/* After the step: how many threads it used and how long it took. Returns
 * true when the count for decode steps changed. */
bool kvq_thread_gov_done(kvq_thread_gov *g, int used, double seconds);

#endif
