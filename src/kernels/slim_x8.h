/* The slim types' decode layout (kernels/slim.h has the file layout): made
 * at load, in memory only, like the row-interleaved copies of repack.h.
 *
 * Why another layout. The file packs a row's codes in 32-value chunks
 * (8 bytes for 2 bits), so the first AVX2 kernel spent three shuffles and a
 * lane insert to spread each chunk over a register, and read each row
 * alone: about 28 cycles per 128 weights on Zen 3, a third of what the
 * memory could feed (docs/weight-quantization.md). Here 8 rows are
 * interleaved by 32-bit words, as ggml's and kvq's repacked Q4_0 are: a
 * register holds 4 consecutive values of each of 8 rows once a shift and a
 * mask have taken one bit field out of it, a broadcast 32-bit word of 4
 * activations multiplies all 8 rows, and each of the 8 lanes of the int32
 * and float accumulators is a row, so no horizontal sum is ever needed.
 *
 * Groups go by width: all the 1-bit groups, then the 2-bit ones, and so on
 * (in column order within a width), so the kernel runs one loop per width
 * and never switches inside it. The activations of group g are still those
 * of columns g G.., read out of order from L1.
 *
 * Only matrices whose column groups are multiples of 128 are packed (the
 * default group of 128 and its multiples); smaller groups keep the file
 * layout and the chunk kernel.
 *
 * Layout: a header (kvq_slim_x8_hdr, then uint16 order[ng]: the group at
 * each position), then octets of 8 rows (the last padded with zero rows),
 * each octet_bytes long (a multiple of 64): first, per group in position
 * order, the fp16 d of the 8 rows then their fp16 m (32 bytes), then group
 * by group the codes: G/128 units, a unit of width b 128 b bytes, made of
 * planes of 32-byte registers whose 32-bit word r belongs to row r:
 *   2-bit plane, 8 registers: register i, byte c of word r, bits 2s..2s+1:
 *                 value 16 i + 4 s + c of row r
 *   1-bit plane, 4 registers: register j, byte c of word r, bit s (0..7):
 *                 value 32 j + 4 s + c
 *   4-bit plane, 16 registers: register i, byte c of word r, nibble s:
 *                 value 8 i + 4 s + c
 *   b=1: the 1-bit plane; b=2: the 2-bit plane; b=3: the 2-bit plane of the
 *   low bits, then the 1-bit plane of bit 2; b=4: the 4-bit plane; b=5: the
 *   4-bit plane, then the 1-bit plane of bit 4.
 *
 * Activations: int8 with one f32 scale per 128 values and the dequantized
 * sum of each 128 (for the minimums): [cols/128] scales, [cols/128] sums,
 * [cols] int8. */
#ifndef KVQ_KERNELS_SLIM_X8_H
#define KVQ_KERNELS_SLIM_X8_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "repack.h"
#include "slim.h"

typedef struct kvq_slim_x8_hdr {
    uint32_t magic;
    int32_t ng, G, N;
    int64_t cols, rows;
    uint64_t octet_bytes, dm_bytes, data_off;
    int32_t nw[8]; /* how many groups have each width 1..5 */
} kvq_slim_x8_hdr;

/* Whether a slim matrix (W's companions bound) can take this layout. */
bool kvq_slim_x8_fits(const kvq_matw *W);
/* Bytes of the packed copy. */
size_t kvq_slim_x8_size(const kvq_matw *W);
/* Writes the header (once), then octets of rows r0..r1-1 (r0 a multiple of
 * 8) so threads can share the work. */
void kvq_slim_x8_init(const kvq_matw *W, void *dst);
void kvq_slim_x8_pack(const kvq_matw *W, int64_t r0, int64_t r1, void *dst);

size_t kvq_slim_x8_act_size(int64_t cols);
void kvq_slim_x8_act_quant(const float *x, void *act, int64_t cols);

/* The packed kernels (repack.h's interface; rows r0 a multiple of 8). */
extern const kvq_packed_kernel kvq_slim_x8_ref, kvq_slim_x8_avx2;

#endif
