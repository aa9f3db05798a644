/* Row-interleaved copies of weight matrices, made at load for decode.
 *
 * A decode product reads every weight once per token. The GGUF layout keeps
 * a row's blocks together, so a kernel pays for every block on its own: the
 * scale conversion, the nibble unpacking, the activation load, the sign
 * juggling of maddubs. On a host where that arithmetic, not the memory, is
 * the limit (two Zen 3 cores with AVX2 streamed Q4_0 at 45% of their read
 * rate), interleaving 8 rows block by block lets one register of weights
 * hold 4 values of each of 8 rows against one broadcast of 4 activations:
 * every instruction serves 8 rows, and the per-block work is done once per
 * 8 rows. The layout is kvq's alone, in memory only; files keep GGUF's.
 *
 * Layout of a repacked matrix with rows R and nb = cols/32 blocks per row:
 * groups of 8 rows, group g at byte g * 8 * row_bytes (the original row
 * size, so the copy is exactly as large as the matrix), then the R % 8 last
 * rows in their GGUF layout. Per type, see the kernel file. */
#ifndef KVQ_KERNELS_REPACK_H
#define KVQ_KERNELS_REPACK_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "types.h"

typedef struct kvq_packed_kernel {
    const char *name;
    /* bytes of one quantized activation row */
    size_t (*act_size)(int64_t cols);
    void (*quant)(const float *x, void *act, int64_t cols);
    /* Y[t * ldy + r] = W[r] . X[t] for rows r0..r1-1 (r0 a multiple of
     * row_block, r1 one too or `rows`: the driver's row blocks) and n tokens whose activations are act_stride bytes apart */
    void (*rows)(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                 size_t act_stride, int n, float *Y, int64_t ldy);
    /* rows r0..r0+nr-1 to f32 (the tests' proof that packing keeps every value) */
    void (*dequant)(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst);
    /* A layout of its own (the 16-row one of repack_x16.c), made by pack,
     * with its scalar reference in ref; NULL: the type's 8-row layout
     * (kvq_repack_rows) and kvq_repack_kernel_ref. */
    void (*pack)(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1, void *dst);
    const struct kvq_packed_kernel *ref;
    /* Rows per block the driver hands to `rows` for one token (a multiple
     * of 16; 0: 16). The slim AVX-512 kernel takes 32, two row groups
     * sharing each activation load. */
    int row_block;
} kvq_packed_kernel;

/* The kernel for type t on an ISA (cpu.h), or NULL when t has no repacked
 * layout there. ref = the scalar reference of the same arithmetic. */
const kvq_packed_kernel *kvq_repack_kernel(kvq_type t, int isa);
const kvq_packed_kernel *kvq_repack_kernel_ref(kvq_type t);
/* The scalar reference of kernel k, and its packing of rows r0..r1-1
 * (any range: each row writes only its own bytes). */
const kvq_packed_kernel *kvq_packed_ref(const kvq_packed_kernel *k, kvq_type t);
void kvq_packed_rows(const kvq_packed_kernel *k, kvq_type t, const void *src, size_t row_bytes, int64_t cols,
                     int64_t rows, int64_t r0, int64_t r1, void *dst);
/* Whether a matrix of this type and width can be repacked at all. */
bool kvq_repack_fits(kvq_type t, int64_t cols);
/* Largest activation row any repacked kernel of type t needs (0: none). */
size_t kvq_repack_act_size(kvq_type t, int64_t cols);
/* src (rows of row_bytes in the GGUF layout) -> dst (rows * row_bytes bytes,
 * 64-byte aligned), rows r0..r1-1 of it (r0 a multiple of 8), so threads can
 * share the work. */
void kvq_repack_rows(kvq_type t, const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0,
                     int64_t r1, void *dst);

/* Q4_0, Q8_0, Q5_0 and IQ4_NL (repack_x8.c) */
extern const kvq_packed_kernel kvq_q4_0x8_ref, kvq_q4_0x8_avx2;
void kvq_q4_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst);
extern const kvq_packed_kernel kvq_q8_0x8_ref, kvq_q8_0x8_avx2;
void kvq_q8_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst);
extern const kvq_packed_kernel kvq_q5_0x8_ref, kvq_q5_0x8_avx2;
void kvq_q5_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst);
extern const kvq_packed_kernel kvq_iq4_nlx8_ref, kvq_iq4_nlx8_avx2;
void kvq_iq4_nlx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                       void *dst);

/* The same four types by 16 rows for AVX-512 VNNI (repack_x16.c); their
 * activations are the 8-row kernels' (kvq_x8_act). */
extern const kvq_packed_kernel kvq_q4_0x16_ref, kvq_q4_0x16_vnni, kvq_q8_0x16_ref, kvq_q8_0x16_vnni;
extern const kvq_packed_kernel kvq_q5_0x16_ref, kvq_q5_0x16_vnni, kvq_iq4_nlx16_ref, kvq_iq4_nlx16_vnni;

/* Q4_K (repack_q4_K.c), against Q8_K activations */
extern const kvq_packed_kernel kvq_q4_Kx8_ref, kvq_q4_Kx8_avx2;
void kvq_q8_K_quant_avx2(const float *x, void *dst, int64_t cols); /* kvq_q8_K_from_float_ref's bytes */
void kvq_q4_Kx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst);

/* Q2_K and Q3_K (repack_k23.c), against Q8_K activations */
extern const kvq_packed_kernel kvq_q2_Kx8_ref, kvq_q2_Kx8_avx2, kvq_q3_Kx8_ref, kvq_q3_Kx8_avx2;
void kvq_q2_Kx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst);
void kvq_q3_Kx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst);

/* Q6_K (repack_q6_K.c), against Q8_K activations */
extern const kvq_packed_kernel kvq_q6_Kx8_ref, kvq_q6_Kx8_avx2;
void kvq_q6_Kx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst);

#endif
