/* The AVX-512 VNNI kernel of the slim decode layout (slim_pk.h) in groups
 * of R = 32 rows: a 128-byte "register" of the layout is two 64-byte
 * registers, rows 0-15 and rows 16-31.
 *
 * Why not the AVX2 kernel on AVX-512 hosts: on a Zen 5 host it streamed
 * slim2 from DRAM at 36 GB/s on two threads where the 16-row Q4_0 kernel
 * did 76 (repack_x16.c). Here a 64-byte register is one 32-bit word of
 * each of 16 rows, and `vpdpbusd` multiplies the unsigned codes by the
 * signed int8 activations and adds the four products of each word to that
 * row's int32 lane in one instruction, where AVX2 needs `maddubs`, int16
 * adds and a widening `madd`.
 *
 * Two choices make it run at the rate of the multiplies (measured on the
 * Zen 5 core: a first version that shifted each bit field down and read
 * one row group at a time took 37 cycles per 2-bit unit of 16 rows, for
 * 32 `vpdpbusd` that the core issues two per cycle):
 * - Bit fields are multiplied where they lie: field s of a 2-bit register
 *   is (r & 3 << 2s), worth 4^s times the code, and goes to an int32 sum
 *   of its own; the sums are shifted back down (exactly: each is a
 *   multiple of its weight) and added once per unit. A field costs one
 *   `and` instead of a shift and an `and`. 1-bit planes take one shift per
 *   register for their upper four bits; the top bit of 3- and 5-bit codes
 *   is its own 1-bit plane, weighted 4 or 16 when the sums are added.
 * - 32 rows go together: each broadcast 32-bit word of activations (a
 *   load) serves two registers. With 16 rows, the broadcasts were as many
 *   as the multiplies and the loads were the limit. The 32 rows are one
 *   row group of the layout, so a thread reads one stream: two groups of
 *   16 rows read side by side streamed from DRAM at 21-26 GB/s on one
 *   core, against 33-45 for a plain read of the same copy.
 * The integer dots are exact and the float steps are the scalar
 * reference's (slim_pk.c), so the kernel equals it bit for bit. */
#include <immintrin.h>

#include "slim_pk.h"

#define UNIT KVQ_SLIM_UNIT
#define PF_DIST 4096 /* as the AVX2 kernel's (slim_x8.c) */
#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

/* 4 activation bytes to every 32-bit lane, from memory (repack_x16.c says
 * why not from a general register). */
T_512 INLINE __m512i bcast4(const int8_t *p) { return _mm512_broadcastd_epi32(_mm_loadu_si32(p)); }
T_512 INLINE __m512i dp(__m512i acc, __m512i codes, __m512i x) { return _mm512_dpbusd_epi32(acc, codes, x); }
/* Ends a register's work in the unrolled planes: without it the compiler
 * hoisted every load of a unit ahead of the multiplies and spilled them. */
#define REGISTER_DONE() __asm__ volatile("" ::: "memory")

/* A 1-bit plane (4 registers of 8 bit fields) of the two halves q (16
 * rows each, 64 q bytes into each 128-byte register) into the sums
 * A[q][c0 + e]: bit s of register j is values 32j + 4s.. (activation
 * word 8j + s), taken in place as bit s % 4 after a shift by 4 for s >= 4,
 * so sum e holds 2^e times the dot of its fields. */
T_512 INLINE void plane1(const uint8_t *p, const int8_t *x, const int c0, __m512i (*A)[8]) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512i lo[2], hi[2];
#pragma GCC unroll 2
        for (int q = 0; q < 2; q++) {
            lo[q] = _mm512_loadu_si512(p + 128 * j + 64 * q);
            hi[q] = _mm512_srli_epi16(lo[q], 4);
        }
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            const __m512i xb = bcast4(x + 4 * (8 * j + s)), m = _mm512_set1_epi8((char)(1 << (s % 4)));
#pragma GCC unroll 2
            for (int q = 0; q < 2; q++)
                A[q][c0 + s % 4] = dp(A[q][c0 + s % 4], _mm512_and_si512(s < 4 ? lo[q] : hi[q], m), xb);
        }
        REGISTER_DONE();
    }
}

/* A W-bit plane (W = 2: 8 registers of 4 fields; W = 4: 16 registers of 2
 * nibbles): field s of register i is values 4 (F i + s).. (word F i + s,
 * F = 8 / W fields), in place, worth 2^(W s) times the code. To sum s for
 * 2 bits; to sum s + 2 (i % 2) for 4 bits, two sums per nibble so that no
 * chain of adds is long. */
T_512 INLINE void planew(const uint8_t *p, const int8_t *x, const int W, __m512i (*A)[8]) {
    const int F = 8 / W;
#pragma GCC unroll 16
    for (int i = 0; i < 4 * W; i++) {
        __m512i r[2];
#pragma GCC unroll 2
        for (int q = 0; q < 2; q++) r[q] = _mm512_loadu_si512(p + 128 * i + 64 * q);
#pragma GCC unroll 4
        for (int s = 0; s < F; s++) {
            const __m512i xb = bcast4(x + 4 * (F * i + s)), m = _mm512_set1_epi8((char)(((1 << W) - 1) << (W * s)));
            const int c = W == 2 ? s : s + 2 * (i % 2);
#pragma GCC unroll 2
            for (int q = 0; q < 2; q++) A[q][c] = dp(A[q][c], _mm512_and_si512(r[q], m), xb);
        }
        REGISTER_DONE();
    }
}

/* 2^e A, to A scaled by 2^w (e, w constants; A a multiple of 2^e) */
T_512 INLINE __m512i rescale(__m512i a, int e, int w) {
    return e > w ? _mm512_srai_epi32(a, e - w) : e < w ? _mm512_slli_epi32(a, w - e) : a;
}

/* One unit of width B (its codes at p) against the 128 activations x: s[q]
 * gets the exact integer dot of each of the 16 rows of half q. */
T_512 INLINE void unit_512(const uint8_t *p, const int8_t *x, const int B, __m512i *s) {
    __m512i A[2][8];
    const int nc = B == 3 || B == 5 ? 8 : 4;
#pragma GCC unroll 2
    for (int q = 0; q < 2; q++)
#pragma GCC unroll 8
        for (int c = 0; c < nc; c++) A[q][c] = _mm512_setzero_si512();
    if (B == 1) plane1(p, x, 0, A);
    if (B == 2 || B == 3) planew(p, x, 2, A);
    if (B == 4 || B == 5) planew(p, x, 4, A);
    if (B == 3) plane1(p + 1024, x, 4, A); /* after the 8 registers of the low bits */
    if (B == 5) plane1(p + 2048, x, 4, A); /* after the 16 */
#pragma GCC unroll 2
    for (int q = 0; q < 2; q++) {
        __m512i v = A[q][0];
#pragma GCC unroll 8
        for (int c = 1; c < nc; c++) {
            /* the weight of sum c: 2^c for a 1-bit plane; 4^c for 2 bits;
             * 16^(c % 2) for 4 bits; the top bit's sums 2^(c - 4), worth
             * 2^(B - 1) each */
            const int e = c >= 4 ? c - 4 : B == 1 ? c : B <= 3 ? 2 * c : 4 * (c % 2);
            const int w = c >= 4 ? B - 1 : 0;
            v = _mm512_add_epi32(v, rescale(A[q][c], e, w));
        }
        s[q] = v;
    }
}

/* The n groups of width B from position k0, the first at cp: per group
 * its (d, m) for the 32 rows, then its units. Returns the next group. */
T_512 INLINE const uint8_t *run_512(const uint8_t *cp, const uint16_t *order, int64_t k0,
                                    int64_t n, int64_t G, kvq_slim_pk_act a, const int B, __m512 *acc, __m512 *macc) {
    const int64_t nu = G / UNIT;
    for (int64_t k = k0; k < k0 + n; k++, cp += 4 * G * B) { /* G/128 units of 512 B bytes */
        const int64_t g = order[k];
        float gs = a.xs[g * nu];
        for (int64_t u = 1; u < nu; u++) gs += a.xs[g * nu + u];
        __m512 d16[2];
#pragma GCC unroll 2
        for (int q = 0; q < 2; q++) {
            d16[q] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(cp + 32 * q)));
            const __m512 m16 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(cp + 64 + 32 * q)));
            macc[q] = _mm512_fmadd_ps(m16, _mm512_set1_ps(gs), macc[q]);
        }
        cp += 128; /* the group's (d, m), then its codes */
        for (int64_t u = 0; u < nu; u++) {
            const uint8_t *up = cp + u * 512 * B;
#pragma GCC unroll 16
            for (int pf = 0; pf < 512 * B; pf += 64) _mm_prefetch((const char *)up + PF_DIST + pf, _MM_HINT_T0);
            __m512i s[2];
            unit_512(up, a.xq + g * G + u * UNIT, B, s);
            const __m512 dx = _mm512_set1_ps(a.dx[g * nu + u]);
#pragma GCC unroll 2
            for (int q = 0; q < 2; q++)
                acc[q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[q]), _mm512_mul_ps(d16[q], dx), acc[q]);
        }
    }
    return cp;
}

/* Row group oi (rows 32 oi..) against token t; rows below r1 are stored. */
T_512 static void group_512(const void *packed, int64_t oi, int64_t cols, int64_t r1, const void *act, size_t stride,
                            int t, float *Y, int64_t ldy) {
    const kvq_slim_pk_hdr *h = kvq_slim_pk_header(packed);
    const uint16_t *order = kvq_slim_pk_order(packed);
    const kvq_slim_pk_act a = kvq_slim_pk_act_of(act, stride, t, cols);
    const uint8_t *cp = kvq_slim_pk_rg(packed, oi);
    __m512 acc[2], macc[2];
#pragma GCC unroll 2
    for (int q = 0; q < 2; q++) acc[q] = macc[q] = _mm512_setzero_ps();
    int64_t k = 0;
    /* one loop per width present */
    if (h->nw[1]) cp = run_512(cp, order, k, h->nw[1], h->G, a, 1, acc, macc), k += h->nw[1];
    if (h->nw[2]) cp = run_512(cp, order, k, h->nw[2], h->G, a, 2, acc, macc), k += h->nw[2];
    if (h->nw[3]) cp = run_512(cp, order, k, h->nw[3], h->G, a, 3, acc, macc), k += h->nw[3];
    if (h->nw[4]) cp = run_512(cp, order, k, h->nw[4], h->G, a, 4, acc, macc), k += h->nw[4];
    if (h->nw[5]) run_512(cp, order, k, h->nw[5], h->G, a, 5, acc, macc);
#pragma GCC unroll 2
    for (int q = 0; q < 2; q++) {
        const int64_t left = r1 - (32 * oi + 16 * q);
        if (left <= 0) break;
        const __mmask16 keep = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        _mm512_mask_storeu_ps(Y + (size_t)t * ldy + 32 * oi + 16 * q, keep, _mm512_add_ps(acc[q], macc[q]));
    }
}

/* r0 a multiple of 32; r1 one too, or `rows`. Tokens go one by one over
 * each row group, which stays in L1 or L2 meanwhile. */
T_512 static void rows_512(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                           size_t stride, int n, float *Y, int64_t ldy) {
    (void)rows;
    for (int64_t oi = r0 / 32; oi * 32 < r1; oi++)
        for (int t = 0; t < n; t++) group_512(packed, oi, cols, r1, act, stride, t, Y, ldy);
}

const kvq_packed_kernel kvq_slim_x32_vnni = {
    .name = "slim x32 (avx512 vnni)",
    .act_size = kvq_slim_pk_act_size,
    .quant = kvq_slim_pk_act_quant_avx2,
    .rows = rows_512,
    .dequant = kvq_slim_pk_dequant,
    .ref = &kvq_slim_pk_ref,
    .row_block = 32,
};
