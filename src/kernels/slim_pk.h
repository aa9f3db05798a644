/* The slim types' decode layout (kernels/slim.h has the file layout): made
 * at load, in memory only, like the row-interleaved copies of repack.h.
 * Its packing, scalar reference and dequantization are in slim_pk.c; its
 * kernels in slim_x8.c (AVX2, R = 8 rows) and slim_x32.c (AVX-512 VNNI,
 * R = 32 rows).
 *
 * Why another layout. The file packs a row's codes in 32-value chunks
 * (8 bytes for 2 bits), so the first AVX2 kernel spent three shuffles and a
 * lane insert to spread each chunk over a register, and read each row
 * alone: about 28 cycles per 128 weights on Zen 3, a third of what the
 * memory could feed (docs/weight-quantization.md). Here R rows are
 * interleaved by 32-bit words, as ggml's and kvq's repacked Q4_0 are: a
 * register of 4R bytes holds 4 consecutive values of each of R rows once a
 * shift and a mask have taken one bit field out of it, a broadcast 32-bit
 * word of 4 activations multiplies all R rows, and each of the R lanes of
 * the int32 and float accumulators is a row, so no horizontal sum is ever
 * needed. R is the register width in words for AVX2 (8); AVX-512 takes
 * 32, a "register" of 128 bytes being two of its registers (slim_x32.c
 * says why).
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
 * Layout: a header (kvq_slim_pk_hdr, then uint16 order[ng]: the group at
 * each position), then row groups of R rows (the last padded with zero
 * rows), each rg_bytes long (a multiple of 64): the groups in position
 * order, each the fp16 d of the R rows, their fp16 m (4R bytes), then its
 * codes: G/128 units, a unit of width b 16 R b bytes, made of planes of
 * registers of 4R bytes whose 32-bit word r belongs to row r:
 *   2-bit plane, 8 registers: register i, byte c of word r, bits 2s..2s+1:
 *                 value 16 i + 4 s + c of row r
 *   1-bit plane, 4 registers: register j, byte c of word r, bit s (0..7):
 *                 value 32 j + 4 s + c
 *   4-bit plane, 16 registers: register i, byte c of word r, nibble s:
 *                 value 8 i + 4 s + c
 *   b=1: the 1-bit plane; b=2: the 2-bit plane; b=3: the 2-bit plane of the
 *   low bits, then the 1-bit plane of bit 2; b=4: the 4-bit plane; b=5: the
 *   4-bit plane, then the 1-bit plane of bit 4.
 * A group's scales lie just before its codes so that a thread reads one
 * sequential stream: with a table of them at the row group's start (a
 * second stream) the AVX-512 kernel streamed 21-24 GB/s from DRAM on one
 * core against 28-37 for a plain read of the copy; inline, 27.6-30 against
 * 31-41.
 *
 * Activations: int8 with one f32 scale per 128 values and the dequantized
 * sum of each 128 (for the minimums): [cols/128] scales, [cols/128] sums,
 * [cols] int8. */
#ifndef KVQ_KERNELS_SLIM_PK_H
#define KVQ_KERNELS_SLIM_PK_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "repack.h"
#include "slim.h"

#define KVQ_SLIM_UNIT 128

typedef struct kvq_slim_pk_hdr {
    uint32_t magic;
    int32_t ng, G, N, R;
    int64_t cols, rows;
    uint64_t rg_bytes, data_off;
    int32_t nw[8]; /* how many groups have each width 1..5 */
} kvq_slim_pk_hdr;

/* Groups per row the layout takes at most (1024 groups of at least 128
 * columns: any model's rows); a matrix with more keeps the file layout. */
#define KVQ_SLIM_PK_MAX_GROUPS 1024
/* Whether a slim matrix (W's companions bound) can take this layout. */
bool kvq_slim_pk_fits(const kvq_matw *W);
/* The kernel for this ISA (cpu.h) and the rows per group it wants, or NULL
 * when the ISA has none (the file layout's kernels then run). */
const kvq_packed_kernel *kvq_slim_pk_kernel(int isa, int *R);
/* Bytes of the packed copy in groups of R rows (8, 16 or 32). */
size_t kvq_slim_pk_size(const kvq_matw *W, int R);
/* Writes the header (once), then the row groups of rows r0..r1-1 (r0 a
 * multiple of R) so threads can share the work. */
void kvq_slim_pk_init(const kvq_matw *W, int R, void *dst);
void kvq_slim_pk_pack(const kvq_matw *W, int64_t r0, int64_t r1, void *dst);

size_t kvq_slim_pk_act_size(int64_t cols);
void kvq_slim_pk_act_quant(const float *x, void *act, int64_t cols);
void kvq_slim_pk_act_quant_avx2(const float *x, void *act, int64_t cols); /* the same bytes */
/* rows r0..r0+nr-1 to f32 (either R) */
void kvq_slim_pk_dequant(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst);

/* The scalar reference (either R; the kernels' arithmetic, operation for
 * operation) and the kernels (repack.h's interface; r0 a multiple of R). */
extern const kvq_packed_kernel kvq_slim_pk_ref, kvq_slim_x8_avx2, kvq_slim_x32_vnni;

/* ---- the parts the kernels share ---- */
static inline const kvq_slim_pk_hdr *kvq_slim_pk_header(const void *packed) { return packed; }
static inline const uint16_t *kvq_slim_pk_order(const void *packed) {
    return (const uint16_t *)((const uint8_t *)packed + sizeof(kvq_slim_pk_hdr));
}
/* row group o (rows R o..) */
static inline const uint8_t *kvq_slim_pk_rg(const void *packed, int64_t o) {
    const kvq_slim_pk_hdr *h = packed;
    return (const uint8_t *)packed + h->data_off + (uint64_t)o * h->rg_bytes;
}
/* The activation layout's parts for token t. */
typedef struct {
    const float *dx, *xs;
    const int8_t *xq;
} kvq_slim_pk_act;
static inline kvq_slim_pk_act kvq_slim_pk_act_of(const void *act, size_t stride, int t, int64_t cols) {
    const float *dx = (const float *)((const uint8_t *)act + (size_t)t * stride);
    return (kvq_slim_pk_act){dx, dx + cols / KVQ_SLIM_UNIT, (const int8_t *)(dx + 2 * (cols / KVQ_SLIM_UNIT))};
}

#endif
