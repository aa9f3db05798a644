/* RocketKV's budget split (methods/rocketkv.md): from the token budget t
 * per step, the prompt length and the generation length, how much stage 1
 * (SnapKV) keeps and how stage 2 (hybrid sparse attention) reads. */
#ifndef KVQ_KV_ROCKET_SPLIT_H
#define KVQ_KV_ROCKET_SPLIT_H
#include <stdint.h>

typedef struct kvq_rocket_split {
    int64_t S;        /* prompt + generation */
    double c, alpha;  /* total compression S/t, and stage 1's share of it (as an exponent) */
    int64_t cap;      /* tokens held after stage 1, generated ones included */
    int64_t prompt_keep;
    int page;         /* HSA page (tokens) */
    int r;            /* channels HSA estimates with */
    int k;            /* tokens HSA attends to (t/2: the other half pays for the estimate) */
} kvq_rocket_split;

void kvq_rocket_split_for(int64_t prompt_len, int64_t max_new, int budget, int head_dim, kvq_rocket_split *out);

#endif
