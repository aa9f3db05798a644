/* Q4_0, Q5_0, IQ4_NL and Q8_0 interleaved by 8 rows (repack.h): the AVX2
 * kernels of the layout that repack_rows.h describes and packs (G = 8),
 * one per type through the kind k (a constant once inlined). A thread
 * reads one stream of whole 64-byte lines (chunks are 9 or 17 lines). With
 * the scales after all of a group's codes instead (two streams), Q4_0
 * decode on 2 Zen 3 threads ran 16.0-16.6 tok/s against 17.7-20.1
 * (Llama-3.2-1B, alternated runs). */
#include <immintrin.h>

#include "quant_ref.h"
#include "repack.h"
#include "repack_act.h"
#include "repack_rows.h"
#include "simd_x86.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

void kvq_q4_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    pack(src, row_bytes, cols, rows, r0, r1, dst, K4, 8);
}
void kvq_q8_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    pack(src, row_bytes, cols, rows, r0, r1, dst, K8, 8);
}
void kvq_q5_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    pack(src, row_bytes, cols, rows, r0, r1, dst, K5, 8);
}
void kvq_iq4_nlx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                       void *dst) {
    pack(src, row_bytes, cols, rows, r0, r1, dst, KNL, 8);
}

/* NT tokens against one group. Q4_0: the 8 unpacked registers serve every
 * token, and eight maddubs sums (at most 8 x 2 x 15 x 128 = 30720) add up
 * in int16 without saturating before one madd. Q5_0: the same registers
 * with their fifth bits, in two sums of four. Q8_0: maddubs wants one
 * unsigned operand, so each register goes through |W| and sign(y, W), and
 * two int16 sums could reach 2 x 32258, so each is widened by madd first. */
T_AVX2 static inline __attribute__((always_inline)) void group_avx2(const void *p, int64_t g, int64_t nb,
                                                                   const uint8_t *act, size_t as, const int NT,
                                                                   __m256 *acc, const int k) {
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *q = block_codes(p, nb, g, b, k, 8);
        for (int o = 0; o < code_bytes(k, 8); o += 64) _mm_prefetch((const char *)q + PF_DIST + o, _MM_HINT_T0);
        __m256i w[8];
        if (k != K8) {
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(q + 32 * m));
                w[m] = _mm256_and_si256(raw, m4);
                w[m + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            }
        }
        if (k == K5) { /* each register's fifth bits, from bit u of the 32 bytes after the nibbles to bit 4 */
            const __m256i hb = _mm256_loadu_si256((const __m256i *)(q + 128)), b4 = _mm256_set1_epi8(16);
            w[0] = _mm256_or_si256(w[0], _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4));
            w[1] = _mm256_or_si256(w[1], _mm256_and_si256(_mm256_slli_epi16(hb, 3), b4));
            w[2] = _mm256_or_si256(w[2], _mm256_and_si256(_mm256_slli_epi16(hb, 2), b4));
            w[3] = _mm256_or_si256(w[3], _mm256_and_si256(_mm256_slli_epi16(hb, 1), b4));
            w[4] = _mm256_or_si256(w[4], _mm256_and_si256(hb, b4));
            w[5] = _mm256_or_si256(w[5], _mm256_and_si256(_mm256_srli_epi16(hb, 1), b4));
            w[6] = _mm256_or_si256(w[6], _mm256_and_si256(_mm256_srli_epi16(hb, 2), b4));
            w[7] = _mm256_or_si256(w[7], _mm256_and_si256(_mm256_srli_epi16(hb, 3), b4));
        }
        if (k == KNL) { /* the grid's values, signed bytes */
            const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvq_iq4nl_grid));
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++) w[u] = _mm256_shuffle_epi8(grid, w[u]);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block_scales(p, nb, g, b, k, 8)));
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const kvq_x8_act *y = (const kvq_x8_act *)(act + (size_t)t * as) + b;
            __m256i s32;
            if (k == K8) {
                s32 = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * j));
                    const __m256i p =
                        _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(kvq_bcast4_avx2(y->qs + 4 * j), v));
                    s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, ones));
                }
            } else if (k == KNL) { /* signed values up to 127, as Q8_0's: |W| and sign(y, W), widened one by one */
                s32 = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w[j], w[j]),
                                                           _mm256_sign_epi8(kvq_bcast4_avx2(y->qs + (j < 4 ? 4 * j : 16 + 4 * (j - 4))), w[j]));
                    s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, ones));
                }
            } else if (k == K5) { /* 5-bit codes: four maddubs sums at most 4 x 2 x 31 x 127 = 31496 */
                __m256i s0 = _mm256_maddubs_epi16(w[0], kvq_bcast4_avx2(y->qs)),
                        s1 = _mm256_maddubs_epi16(w[4], kvq_bcast4_avx2(y->qs + 16));
#pragma GCC unroll 3
                for (int j = 1; j < 4; j++) {
                    s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(w[j], kvq_bcast4_avx2(y->qs + 4 * j)));
                    s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(w[j + 4], kvq_bcast4_avx2(y->qs + 16 + 4 * j)));
                }
                s32 = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(s0, ones), _mm256_madd_epi16(s1, ones)),
                                       _mm256_set1_epi32(2 * y->c));
            } else {
                __m256i s = _mm256_maddubs_epi16(w[0], kvq_bcast4_avx2(y->qs));
#pragma GCC unroll 8
                for (int j = 1; j < 8; j++) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[j], kvq_bcast4_avx2(y->qs + 4 * j)));
                s32 = _mm256_add_epi32(_mm256_madd_epi16(s, ones), _mm256_set1_epi32(y->c));
            }
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(dw, _mm256_set1_ps(y->d)), acc[t]);
        }
    }
}

T_AVX2 static inline __attribute__((always_inline)) void groups_avx2(const void *p, int64_t nb, int64_t g0, int64_t g1,
                                                                    const uint8_t *act, size_t as, const int NT,
                                                                    float *Y, int64_t ldy, const int k) {
    for (int64_t g = g0; g < g1; g++) {
        __m256 acc[4];
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
        group_avx2(p, g, nb, act, as, NT, acc, k);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) _mm256_storeu_ps(Y + t * ldy + 8 * g, acc[t]);
    }
}

/* r1 must end a group or be `rows` (a thread's row blocks are multiples of 16) */
T_AVX2 static inline __attribute__((always_inline)) void rows_avx2(const void *p, int64_t cols, int64_t rows,
                                                                  int64_t r0, int64_t r1, const void *act, size_t as,
                                                                  int n, float *Y, int64_t ldy, const int k) {
    const int64_t nb = cols / 32, full = rows / 8 * 8, g0 = r0 / 8, g1 = (r1 < full ? r1 : full) / 8;
    const uint8_t *a = act;
    int t = 0;
    /* four tokens at a time keep their accumulators in registers */
    for (; t + 4 <= n; t += 4) groups_avx2(p, nb, g0, g1, a + (size_t)t * as, as, 4, Y + t * ldy, ldy, k);
    for (; t + 2 <= n; t += 2) groups_avx2(p, nb, g0, g1, a + (size_t)t * as, as, 2, Y + t * ldy, ldy, k);
    for (; t < n; t++) groups_avx2(p, nb, g0, g1, a + (size_t)t * as, as, 1, Y + t * ldy, ldy, k);
    for (int64_t r = full > r0 ? full : r0; r < r1; r++)
        for (int tk = 0; tk < n; tk++)
            Y[tk * ldy + r] = tail_dot(tail_row(p, nb, r, k), (const kvq_x8_act *)(a + (size_t)tk * as), nb, k);
}

#define KERNELS(T, K)                                                                                                \
    static void T##_rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,   \
                             size_t as, int n, float *Y, int64_t ldy) {                                              \
        rows_ref(p, cols, rows, r0, r1, act, as, n, Y, ldy, K, 8);                                                    \
    }                                                                                                               \
    T_AVX2 static void T##_rows_avx2(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1,            \
                                     const void *act, size_t as, int n, float *Y, int64_t ldy) {                     \
        rows_avx2(p, cols, rows, r0, r1, act, as, n, Y, ldy, K);                                                   \
    }                                                                                                               \
    static void T##_dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {       \
        dequant(p, cols, rows, r0, nr, dst, K, 8);                                                                    \
    }                                                                                                               \
    const kvq_packed_kernel kvq_##T##x8_ref = {#T "x8 (scalar)", kvq_x8_act_size, kvq_x8_quant_ref, T##_rows_ref,   \
                                               T##_dequant, NULL, NULL, 0};                                          \
    const kvq_packed_kernel kvq_##T##x8_avx2 = {#T "x8 (avx2)", kvq_x8_act_size, kvq_x8_quant_avx2, T##_rows_avx2,  \
                                                T##_dequant, NULL, NULL, 0};
KERNELS(q4_0, K4)
KERNELS(q8_0, K8)
KERNELS(q5_0, K5)
KERNELS(iq4_nl, KNL)
