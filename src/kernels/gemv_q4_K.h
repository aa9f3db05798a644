/* Decode (matrix-vector) kernel for Q4_K weights on AVX-512 (+VNNI).
 *
 * As for Q4_0 (gemv_q4_0.h): the Q8_K activations are laid out once per
 * product in the order the weight nibbles come out of a block (sub-blocks
 * 0|2, 1|3, 4|6, 5|7 per 64 bytes), so one 256-value block costs four VNNI
 * instructions, and each block is read from the aligned cache lines that
 * hold it. The arithmetic is Q8_K's (one activation scale per 256 values),
 * as in the generic kernel. */
#ifndef KVQ_KERNELS_GEMV_Q4_K_H
#define KVQ_KERNELS_GEMV_Q4_K_H
#include <stddef.h>
#include <stdint.h>

/* bytes of one activation row of cols elements (cols a multiple of 256) */
size_t kvq_q4_Kx_act_size(int64_t cols);
/* x (cols floats) -> the laid-out Q8_K activations (SIMD when AVX-512 is
 * active; the reference gives the same bytes) */
void kvq_q4_Kx_quant(const float *x, void *act, int64_t cols);
void kvq_q4_Kx_quant_ref(const float *x, void *act, int64_t cols);
/* dot of one Q4_K row with a laid-out activation row */
float kvq_q4_Kx_dot_512(const void *w, const void *act, int64_t cols);
float kvq_q4_Kx_dot_ref(const void *w, const void *act, int64_t cols);
/* y[r] for n_rows consecutive rows (row_bytes apart): the dot inlined into
 * the row loop, which matters for short rows */
void kvq_q4_Kx_rows_512(const void *w, size_t row_bytes, int n_rows, const void *act, int64_t cols, float *y);

#endif
