/* Decode (matrix-vector) kernel for Q4_0 weights on AVX-512 VBMI.
 *
 * The generic Q4_0 dot kernel rearranges the Q8_0 activations for every
 * weight row. Here the activations are laid out once per product in the
 * order the weight nibbles come out of their blocks, four blocks (128
 * elements) per "chunk", with the -8 offset folded into each lane's starting
 * value. One byte permute then gathers four blocks' nibbles straight from the
 * GGUF row, and a chunk costs two VNNI instructions and one FMA. */
#ifndef KVQ_KERNELS_GEMV_Q4_0_H
#define KVQ_KERNELS_GEMV_Q4_0_H
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

/* bytes of one activation row of cols elements (cols a multiple of 32) */
size_t kvq_q4_0x4_act_size(int64_t cols);
/* x (cols floats) -> the chunked int8 layout (SIMD when VBMI is active; the
 * reference gives the same bytes) */
void kvq_q4_0x4_quant(const float *x, void *act, int64_t cols);
void kvq_q4_0x4_quant_ref(const float *x, void *act, int64_t cols);
/* dot of one Q4_0 row with a chunked activation row: VBMI kernel, and its
 * scalar reference (same arithmetic, for tests) */
float kvq_q4_0x4_dot_vbmi(const void *w, const void *act, int64_t cols);
float kvq_q4_0x4_dot_ref(const void *w, const void *act, int64_t cols);
/* y[r] for n_rows consecutive rows (row_bytes apart), the dot inlined */
void kvq_q4_0x4_rows_vbmi(const void *w, size_t row_bytes, int n_rows, const void *act, int64_t cols, float *y);

#endif
