/* The AVX2 kernel of the slim decode layout (slim_pk.h) in groups of
 * R = 8 rows: a 32-byte register is one 32-bit word of each of 8 rows. */
#include <immintrin.h>

#include "simd_x86.h"
#include "slim_pk.h"

#define UNIT KVQ_SLIM_UNIT
/* How far ahead the kernel prefetches its codes. The hardware prefetcher
 * alone left one Zen 3 core at 9-10 GB/s on a matrix in DRAM (2-bit, 8192
 * columns), 13 GB/s with this (2 to 16 KiB measured; 4 KiB is as good as
 * any), against 14-16 GB/s in L2. */
#define PF_DIST 4096

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

/* The same bytes as kvq_slim_pk_act_quant (simd_x86.h says why). */
T_AVX2 void kvq_slim_pk_act_quant_avx2(const float *x, void *act, int64_t cols) {
    const int64_t nb = cols / UNIT;
    float *dx = act, *xs = dx + nb;
    int8_t *q = (int8_t *)(xs + nb);
    for (int64_t a = 0; a < nb; a++) {
        const float *v = x + a * UNIT;
        const float d = kvq_absmax_avx2(v, UNIT) / 127.0f;
        const __m256 id = _mm256_set1_ps(d > 0 ? 1.0f / d : 0.0f);
        __m256i sum = _mm256_setzero_si256();
        for (int c = 0; c < UNIT; c += 32) {
            const __m256i b = kvq_i8x32_avx2(v + c, id);
            _mm256_storeu_si256((__m256i *)(q + a * UNIT + c), b);
            sum = _mm256_add_epi32(sum, kvq_i8_sum4_avx2(b));
        }
        dx[a] = d;
        xs[a] = d * (float)kvq_hsum8_epi32(sum);
    }
}

/* Shifts by a count that is a constant once the loops are unrolled; a
 * negative count shifts the other way. */
T_AVX2 static inline __m256i shr16(__m256i v, int n) {
    return n > 0 ? _mm256_srli_epi16(v, n) : n < 0 ? _mm256_slli_epi16(v, -n) : v;
}

/* One unit of width B for the 8 rows: 32 registers of codes (4 values of
 * each row), each multiplied by a broadcast word of 4 activations. The
 * int16 pair sums are added in int16 while they cannot overflow (EVERY
 * products: at most EVERY x 2 x (2^B - 1) x 127 < 32768), then widened. The
 * result is the exact integer dot of each row, one per lane. The outer loop
 * (a 1-bit plane register's 32 values) stays a loop: fully unrolled, the
 * compiler computed all 32 products first and spilled them. */
#define X8_UNIT(B, EVERY)                                                                                             \
    T_AVX2 static inline __m256i unit##B(const uint8_t *p, const int32_t *xa) {                                      \
        const __m256i ones = _mm256_set1_epi16(1);                                                                   \
        const __m256i lo_mask = _mm256_set1_epi8((B) == 1 ? 1 : (B) <= 3 ? 3 : 15);                                  \
        const __m256i hi_mask = _mm256_set1_epi8((char)((B) == 3 ? 4 : 16));                                         \
        __m256i s32 = _mm256_setzero_si256(), s16 = s32;                                                             \
        _Pragma("GCC unroll 1") for (int j = 0; j < 4; j++) {                                                        \
            _Pragma("GCC unroll 8") for (int kk = 0; kk < 8; kk++) {                                                 \
                const int k = 8 * j + kk; /* values 4k..4k+3 of each row */                                          \
                __m256i c;                                                                                           \
                if ((B) == 1)                                                                                        \
                    c = shr16(_mm256_loadu_si256((const __m256i *)(p + 32 * j)), kk);                                \
                else if ((B) <= 3)                                                                                   \
                    c = shr16(_mm256_loadu_si256((const __m256i *)(p + 32 * (2 * j + kk / 4))), 2 * (kk % 4));       \
                else                                                                                                 \
                    c = shr16(_mm256_loadu_si256((const __m256i *)(p + 32 * (4 * j + kk / 2))), 4 * (kk % 2));       \
                c = _mm256_and_si256(c, lo_mask);                                                                    \
                if ((B) == 3 || (B) == 5) { /* the top bit, from the 1-bit plane, moved to bit B-1 */              \
                    const __m256i h = _mm256_loadu_si256((const __m256i *)(p + 32 * ((B) == 3 ? 8 : 16) + 32 * j));  \
                    c = _mm256_or_si256(c, _mm256_and_si256(shr16(h, kk - ((B) - 1)), hi_mask));                     \
                }                                                                                                    \
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c, _mm256_set1_epi32(xa[k])));                      \
                if (k % (EVERY) == (EVERY) - 1) {                                                                    \
                    s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, ones));                                       \
                    s16 = _mm256_setzero_si256();                                                                    \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
        return s32;                                                                                                  \
    }
X8_UNIT(1, 32)
X8_UNIT(2, 32)
X8_UNIT(3, 16)
X8_UNIT(4, 8)
X8_UNIT(5, 4)

/* The n groups of width B from position k0: per group its (d, m) for the
 * 8 rows, then its units. Returns the codes pointer past them. */
#define X8_RUN(B)                                                                                                     \
    T_AVX2 static inline const uint8_t *run##B(const uint8_t *cp, const uint16_t *order,                             \
                                               int64_t k0, int64_t n, int64_t G, kvq_slim_pk_act a, __m256 *acc,             \
                                               __m256 *macc) {                                                      \
        const int64_t nu = G / UNIT;                                                                                 \
        __m256 ac = *acc, mc = *macc;                                                                                \
        for (int64_t k = k0; k < k0 + n; k++, cp += G * (B)) {                                                       \
            const int64_t g = order[k];                                                                              \
            const __m256 d8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)cp));                                 \
            const __m256 m8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(cp + 16)));                          \
            cp += 32; /* the group's (d, m), then its codes */                                                      \
            float gs = a.xs[g * nu];                                                                                 \
            for (int64_t u = 1; u < nu; u++) gs += a.xs[g * nu + u];                                                 \
            mc = _mm256_fmadd_ps(m8, _mm256_set1_ps(gs), mc);                                                        \
            for (int64_t u = 0; u < nu; u++) {                                                                       \
                for (int pf = 0; pf < 128 * (B); pf += 64)                                                           \
                    _mm_prefetch((const char *)cp + u * 128 * (B) + PF_DIST + pf, _MM_HINT_T0);                      \
                const __m256i s = unit##B(cp + u * 128 * (B), (const int32_t *)(a.xq + g * G + u * UNIT));           \
                ac = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(d8, _mm256_set1_ps(a.dx[g * nu + u])), ac);  \
            }                                                                                                        \
        }                                                                                                            \
        *acc = ac;                                                                                                   \
        *macc = mc;                                                                                                  \
        return cp;                                                                                                   \
    }
X8_RUN(1)
X8_RUN(2)
X8_RUN(3)
X8_RUN(4)
X8_RUN(5)

T_AVX2 static void rows_avx2(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                             size_t stride, int n, float *Y, int64_t ldy) {
    (void)rows;
    const kvq_slim_pk_hdr *h = kvq_slim_pk_header(packed);
    const uint16_t *order = kvq_slim_pk_order(packed);
    const int64_t G = h->G;
    for (int64_t oi = r0 / 8; oi * 8 < r1; oi++) {
        for (int t = 0; t < n; t++) {
            const kvq_slim_pk_act a = kvq_slim_pk_act_of(act, stride, t, cols);
            __m256 acc = _mm256_setzero_ps(), macc = acc;
            const uint8_t *cp = kvq_slim_pk_rg(packed, oi);
            int64_t k = 0;
            /* one loop per width present */
            if (h->nw[1]) cp = run1(cp, order, k, h->nw[1], G, a, &acc, &macc), k += h->nw[1];
            if (h->nw[2]) cp = run2(cp, order, k, h->nw[2], G, a, &acc, &macc), k += h->nw[2];
            if (h->nw[3]) cp = run3(cp, order, k, h->nw[3], G, a, &acc, &macc), k += h->nw[3];
            if (h->nw[4]) cp = run4(cp, order, k, h->nw[4], G, a, &acc, &macc), k += h->nw[4];
            if (h->nw[5]) run5(cp, order, k, h->nw[5], G, a, &acc, &macc);
            float out[8];
            _mm256_storeu_ps(out, _mm256_add_ps(acc, macc));
            for (int lane = 0; lane < 8; lane++) {
                const int64_t r = oi * 8 + lane;
                if (r >= r0 && r < r1) Y[(size_t)t * ldy + r] = out[lane];
            }
        }
    }
}

const kvq_packed_kernel kvq_slim_x8_avx2 = {
    .name = "slim x8 (AVX2)",
    .act_size = kvq_slim_pk_act_size,
    .quant = kvq_slim_pk_act_quant_avx2,
    .rows = rows_avx2,
    .dequant = kvq_slim_pk_dequant,
    .ref = &kvq_slim_pk_ref,
};
