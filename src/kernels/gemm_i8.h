/* Batched (prefill) matrix product on int8 with AVX-512 VNNI.
 *
 * The weights are read in place, in their GGUF blocks: each 4-byte group of a
 * weight row is broadcast to all 16 lanes of a register and multiplied with
 * the same 4 elements of 16 tokens, so one VNNI instruction does 64
 * multiply-adds and no weight tile is repacked. Activations are quantized per
 * token and 32-element block to int8 (as the decode path's Q8_0 partner), and
 * laid out 16 tokens side by side ("act cells").
 *
 * Supported: types whose 32-element blocks are scale * q - min with small
 * integer q: Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, and Q6_K (a scale per 16
 * elements: two accumulators per block). Float types use the sgemm path. */
#ifndef KVQ_KERNELS_GEMM_I8_H
#define KVQ_KERNELS_GEMM_I8_H
#include <stdbool.h>
#include <stdint.h>
#include "ops.h"

/* true when kvq_gemm_i8_* can run type t with rows of cols elements */
bool kvq_gemm_i8_ok(kvq_type t, int64_t cols);
/* bytes of the quantized activations of n tokens */
size_t kvq_gemm_i8_act_size(int64_t cols, int n);
/* Quantizes the token groups [g0, g1) (16 tokens each; tokens past n are
 * zero) of X [n][cols] for weights of type t. */
void kvq_gemm_i8_quant(kvq_type t, const float *X, int64_t cols, int n, int64_t g0, int64_t g1, void *act, int isa);
/* Y[tok * ldy + r] = W[r] . X[tok] for rows [r0, r1) and all n tokens. isa
 * KVQ_ISA_AVX512 runs the VNNI kernel, anything else the scalar reference. */
void kvq_gemm_i8_rows(const kvq_matw *W, int64_t r0, int64_t r1, const void *act, int n, float *Y, int64_t ldy,
                      int isa);

#endif
