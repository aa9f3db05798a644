/* The activation layout of the repacked decode kernels (repack.h): one int8
 * block per 32 inputs with its float scale, and -8 times the block's sum,
 * which cancels the +8 of Q4_0's unsigned nibbles in one integer add. */
#ifndef KVQ_KERNELS_REPACK_ACT_H
#define KVQ_KERNELS_REPACK_ACT_H
#include <stdint.h>
#include <stddef.h>

typedef struct {
    int8_t qs[32];
    float d;
    int32_t c; /* -8 * sum(qs) */
} kvq_x8_act;

size_t kvq_x8_act_size(int64_t cols);
void kvq_x8_quant_ref(const float *x, void *act, int64_t cols);
void kvq_x8_quant_avx2(const float *x, void *act, int64_t cols); /* the same bytes */

#endif
