/* SliM-LLM's group-wise mixed-precision weight type (docs/weight-quantization.md).
 *
 * A matrix of `rows` x `cols` is cut into ng column groups of G = cols/ng
 * columns (G a multiple of 32), shared by all rows. Group g has its own bit
 * width b_g in 1..5, and every (row, group) an fp16 pair (d, m): w = d*q + m
 * with q in [0, 2^b_g). The widths average exactly N (SliM-LLM allocates
 * N-1 and N+1 in equal numbers), so a row of codes is cols*N/8 bytes and the
 * type's GGUF size rule is that of a plain type: 8 values per block of N
 * bytes. Types slim2, slim3 and slim4 are N = 2, 3, 4.
 *
 * GGUF storage (kvq's own type ids; other engines will not load these):
 *   "<name>"      the codes, row-major; in a row the groups follow each other,
 *                 a group is G/32 chunks of 32 values, a chunk 4*b_g bytes:
 *                   b=1  4 bytes, bit i = value i
 *                   b=2  8 bytes, bits 2k..2k+1 of byte i = value 8k+i
 *                   b=4  16 bytes, low nibble of byte i = value i, high = 16+i
 *                   b=3  the b=2 chunk of the low two bits, then the b=1 chunk of bit 2
 *                   b=5  the b=4 chunk of the low four bits, then the b=1 chunk of bit 4
 *   "<name>.bits" I8 [ng]: the width of each group
 *   "<name>.dm"   F16 [2*ng, rows]: (d, m) per group, row by row
 * Row-major codes keep decode one sequential stream per thread (what the
 * hardware prefetcher follows best here); the kernel switches width once per
 * group of a row, one branch per 128 values. */
#ifndef KVQ_KERNELS_SLIM_H
#define KVQ_KERNELS_SLIM_H
#include <stddef.h>
#include <stdint.h>
#include "ops.h"

#define KVQ_SLIM_CHUNK 32
#define KVQ_SLIM_MAX_BITS 5

/* N of a slim type (2, 3, 4), or 0 for other types. */
int kvq_slim_bits(int type);
int kvq_slim_type(int bits); /* the type of average width N, or -1 */

/* Bytes of a packed 32-value chunk of width b. */
static inline int kvq_slim_chunk_bytes(int b) { return 4 * b; }
/* q[32] (each < 2^b) <-> a packed chunk. */
void kvq_slim_pack_chunk(const uint8_t *q, int b, uint8_t *dst);
void kvq_slim_unpack_chunk(const uint8_t *src, int b, uint8_t *q);

/* Validates a tensor's companions against its shape: widths in 1..5 that
 * average exactly N, a group size that divides the row into chunks, and the
 * (d, m) table's size. Returns NULL or a message in msg. */
const char *kvq_slim_check(int type, int64_t cols, int64_t rows, const void *const *aux, const uint64_t *aux_bytes,
                           char *msg, size_t cap);

/* Activations for the decode kernel: int8 values with one f32 scale per
 * block of KVQ_SLIM_ABLK(cols) values (128 when the row allows it, so a
 * group of up to 128 weights accumulates in integers and pays one float
 * multiply), and the dequantized sum of every 32 values (for the minimums).
 * Layout: [blocks] scales, [cols/32] sums, [cols] int8. */
#define KVQ_SLIM_ABLK(cols) ((cols) % 128 == 0 ? 128 : 32)
size_t kvq_slim_act_size(int64_t cols);
/* n values to int8 at the scale amax / 127 (rounded to nearest even), which
 * it returns: the activation blocks of both slim decode kernels. */
float kvq_slim_i8_block(const float *v, int n, int8_t *q);
void kvq_slim_act_quant(const float *x, void *act, int64_t cols);

/* y[r - r0] = W[r] . x for rows r0..r1-1 (act from kvq_slim_act_quant). */
void kvq_slim_rows_ref(const kvq_matw *W, int64_t r0, int64_t r1, const void *act, float *y);
void kvq_slim_rows_avx2(const kvq_matw *W, int64_t r0, int64_t r1, const void *act, float *y);
/* nr rows from r0 to f32 (dst: nr x cols), for the batched product. */
void kvq_slim_dequant(const kvq_matw *W, int64_t r0, int64_t nr, float *dst);

/* The trait table's decode entries (scalar and AVX2). */
extern const kvq_matvec_kernel kvq_slim_kernel_ref;
extern const kvq_matvec_kernel kvq_slim_kernel_avx2;

#endif
