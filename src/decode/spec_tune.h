/* The adaptive gamma of QuantSpec's loop (speculative.c): from the running
 * acceptance rate and the measured costs of drafting and verifying, the
 * number of drafts per round that gives the most tokens per second, 0 when
 * plain decoding is faster than any round.
 *
 * Why costs and not the acceptance alone: the first adaptive mode moved gamma
 * up after each fully accepted round, and on hosts where a verify pass costs
 * far more per position than it saves in weight reads (2 cores: its attention
 * is arithmetic-bound) that made adaptive the slowest setting (kvq-recall at
 * 4K: 946 tok/s against 1168 at gamma 2 and 1402 for plain decoding).
 *
 * Model: a round of g drafts at per-draft acceptance a yields
 * E = (1 - a^(g+1)) / (1 - a) tokens and costs g d + v(g + 1), with d the
 * time per draft and v(x) = v0 + v1 x the verify pass over x positions (a
 * plain step is v(1)). a, d and (v0, v1) are estimated with exponential
 * forgetting, so they follow the context as it grows. */
#ifndef KVQ_DECODE_SPEC_TUNE_H
#define KVQ_DECODE_SPEC_TUNE_H

typedef struct kvq_spec_tune {
    int gmax;                          /* gamma is chosen in [0, gmax] */
    int rounds, plain_run;             /* rounds seen; plain steps since the last round */
    double acc, rej;                   /* forgotten counts: accepted drafts, rejections */
    double d_sum, d_n;                 /* draft seconds and drafts */
    double sw, sx, sy, sxx, sxy;       /* verify (and plain step) times against positions */
} kvq_spec_tune;

void kvq_spec_tune_init(kvq_spec_tune *t, int gmax);
/* A round of gm drafts, n_acc accepted, that took draft_s and verify_s seconds. */
void kvq_spec_tune_round(kvq_spec_tune *t, int gm, int n_acc, double draft_s, double verify_s);
/* A plain single-token step that took secs. */
void kvq_spec_tune_plain(kvq_spec_tune *t, double secs);
/* The gamma for the next round (0: a plain step). g0 is the starting gamma. */
int kvq_spec_tune_next(kvq_spec_tune *t, int g0);
/* Expected tokens per second of a round of g drafts (g = 0: a plain step). */
double kvq_spec_rate(double a, double d, double v0, double v1, int g);

#endif
