/* Q4_0, Q5_0, IQ4_NL and Q8_0 interleaved by 16 rows for AVX-512 VNNI
 * (repack.h): the kernels of the layout that repack_rows.h describes and
 * packs (G = 16).
 *
 * Why a second layout beside the 8-row one (repack_x8.c): a 64-byte
 * register holds 4 inputs of 16 rows, so one `vpdpbusd` against one
 * broadcast 32-bit word of activations does 64 products and leaves one
 * int32 sum per row, where the AVX2 kernel needs a `maddubs`, a share of a
 * `madd` and adds for 32. On a Zen 5 host the file-layout AVX-512 kernels
 * (gemv_q4_0.c, simd_avx512.c) streamed Q4_0 from DRAM at 38 GB/s on two
 * threads and the AVX2 8-row kernel at 62, against a 65-73 GB/s read loop.
 *
 * vpdpbusd multiplies unsigned by signed bytes: Q8_0's codes and IQ4_NL's
 * grid values are offset by 128 (a xor) and 128 times the activations' sum
 * is taken off (16 c, c = -8 sum); Q4_0 and Q5_0 take off 8 and 16 times it
 * (c, 2c). The integer dots are exact, and the float steps are the scalar
 * reference's, so the kernels equal it bit for bit. */
#include <immintrin.h>

#include "quant_ref.h"
#include "repack.h"
#include "repack_act.h"
#include "repack_rows.h"

#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

/* 4 activation bytes to every 32-bit lane, from memory: a broadcast from a
 * general register (what a copy to an int32 became) costs a move between
 * register files per word, and it was most of a prefill's kernel time. */
T_512 static inline __m512i bcast4(const int8_t *p) { return _mm512_broadcastd_epi32(_mm_loadu_si32(p)); }

/* NT tokens against one group of 16 rows. The unpacked registers (8 for
 * every type: Q8_0's 8 registers of codes, or the 4-bit types' low and
 * high nibbles) serve all NT tokens; each token adds 8 vpdpbusd in two
 * chains, so the adds do not wait on one another. */
T_512 static inline __attribute__((always_inline)) void group_512(const void *p, int64_t g, int64_t nb,
                                                                 const uint8_t *act, size_t as, const int NT,
                                                                 __m512 *acc, const int k) {
    const __m512i m4 = _mm512_set1_epi8(15), x80 = _mm512_set1_epi8((char)0x80);
    /* IQ4_NL's grid + 128 (unsigned), in each 16-byte lane */
    const __m512i grid =
        k == KNL ? _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)kvq_iq4nl_grid)), x80)
                 : _mm512_setzero_si512();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *q = block_codes(p, nb, g, b, k, 16);
        for (int o = 0; o < code_bytes(k, 16); o += 64) _mm_prefetch((const char *)q + PF_DIST + o, _MM_HINT_T0);
        __m512i w[8];
        if (k == K8) {
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) w[j] = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * j), x80);
        } else {
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                const __m512i raw = _mm512_loadu_si512(q + 64 * m);
                w[m] = _mm512_and_si512(raw, m4);
                w[m + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            }
        }
        if (k == K5) { /* fifth bit u of each byte to bit 4 of register u */
            const __m512i hb = _mm512_loadu_si512(q + 256), b4 = _mm512_set1_epi8(16);
            w[0] = _mm512_or_si512(w[0], _mm512_and_si512(_mm512_slli_epi16(hb, 4), b4));
            w[1] = _mm512_or_si512(w[1], _mm512_and_si512(_mm512_slli_epi16(hb, 3), b4));
            w[2] = _mm512_or_si512(w[2], _mm512_and_si512(_mm512_slli_epi16(hb, 2), b4));
            w[3] = _mm512_or_si512(w[3], _mm512_and_si512(_mm512_slli_epi16(hb, 1), b4));
            w[4] = _mm512_or_si512(w[4], _mm512_and_si512(hb, b4));
            w[5] = _mm512_or_si512(w[5], _mm512_and_si512(_mm512_srli_epi16(hb, 1), b4));
            w[6] = _mm512_or_si512(w[6], _mm512_and_si512(_mm512_srli_epi16(hb, 2), b4));
            w[7] = _mm512_or_si512(w[7], _mm512_and_si512(_mm512_srli_epi16(hb, 3), b4));
        }
        if (k == KNL) {
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++) w[u] = _mm512_shuffle_epi8(grid, w[u]);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)block_scales(p, nb, g, b, k, 16)));
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const kvq_x8_act *y = (const kvq_x8_act *)(act + (size_t)t * as) + b;
            const int32_t c = k == K4 ? y->c : k == K5 ? 2 * y->c : 16 * y->c;
            __m512i s0 = _mm512_set1_epi32(c), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                s0 = _mm512_dpbusd_epi32(s0, w[j], bcast4(y->qs + 4 * j));
                s1 = _mm512_dpbusd_epi32(s1, w[j + 4], bcast4(y->qs + 16 + 4 * j));
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dw, _mm512_set1_ps(y->d)),
                                     acc[t]);
        }
    }
}

T_512 static inline __attribute__((always_inline)) void groups_512(const void *p, int64_t nb, int64_t g0, int64_t g1,
                                                                  const uint8_t *act, size_t as, const int NT,
                                                                  float *Y, int64_t ldy, const int k) {
    for (int64_t g = g0; g < g1; g++) {
        __m512 acc[8];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
        group_512(p, g, nb, act, as, NT, acc, k);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) _mm512_storeu_ps(Y + t * ldy + 16 * g, acc[t]);
    }
}

/* r0 a multiple of 16; r1 ends a group or is `rows` (a thread's row blocks
 * are multiples of 16) */
T_512 static inline __attribute__((always_inline)) void rows_512(const void *p, int64_t cols, int64_t rows,
                                                                int64_t r0, int64_t r1, const void *act, size_t as,
                                                                int n, float *Y, int64_t ldy, const int k) {
    const int64_t nb = cols / 32, full = rows / 16 * 16, g0 = r0 / 16, g1 = (r1 < full ? r1 : full) / 16;
    const uint8_t *a = act;
    int t = 0;
    /* with 32 registers, 8 unpacked registers and up to 8 tokens' sums fit */
    for (; t + 8 <= n; t += 8) groups_512(p, nb, g0, g1, a + (size_t)t * as, as, 8, Y + t * ldy, ldy, k);
    for (; t + 4 <= n; t += 4) groups_512(p, nb, g0, g1, a + (size_t)t * as, as, 4, Y + t * ldy, ldy, k);
    for (; t + 2 <= n; t += 2) groups_512(p, nb, g0, g1, a + (size_t)t * as, as, 2, Y + t * ldy, ldy, k);
    for (; t < n; t++) groups_512(p, nb, g0, g1, a + (size_t)t * as, as, 1, Y + t * ldy, ldy, k);
    for (int64_t r = full > r0 ? full : r0; r < r1; r++)
        for (int tk = 0; tk < n; tk++)
            Y[tk * ldy + r] = tail_dot(tail_row(p, nb, r, k), (const kvq_x8_act *)(a + (size_t)tk * as), nb, k);
}

#define KERNELS(T, K)                                                                                                \
    static void T##_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,   \
                         void *dst) {                                                                               \
        pack(src, row_bytes, cols, rows, r0, r1, dst, K, 16);                                                          \
    }                                                                                                               \
    static void T##_rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,   \
                             size_t as, int n, float *Y, int64_t ldy) {                                              \
        rows_ref(p, cols, rows, r0, r1, act, as, n, Y, ldy, K, 16);                                                    \
    }                                                                                                               \
    T_512 static void T##_rows_512(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1,              \
                                   const void *act, size_t as, int n, float *Y, int64_t ldy) {                       \
        rows_512(p, cols, rows, r0, r1, act, as, n, Y, ldy, K);                                                    \
    }                                                                                                               \
    static void T##_dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {       \
        dequant(p, cols, rows, r0, nr, dst, K, 16);                                                                    \
    }                                                                                                               \
    const kvq_packed_kernel kvq_##T##x16_ref = {#T "x16 (scalar)", kvq_x8_act_size, kvq_x8_quant_ref,             \
                                                T##_rows_ref,      T##_dequant,     T##_pack,                        \
                                                NULL, 0};                                                            \
    const kvq_packed_kernel kvq_##T##x16_vnni = {#T "x16 (avx512 vnni)", kvq_x8_act_size, kvq_x8_quant_avx2,       \
                                                 T##_rows_512,         T##_dequant,     T##_pack,                    \
                                                 &kvq_##T##x16_ref, 0};
KERNELS(q4_0, K4)
KERNELS(q8_0, K8)
KERNELS(q5_0, K5)
KERNELS(iq4_nl, KNL)
