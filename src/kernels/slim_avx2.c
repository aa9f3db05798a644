/* AVX2 decode kernel for the slim types (layout in slim.h): each 32-value
 * chunk is unpacked to 32 unsigned bytes with shifts, masks and (for the
 * 1-bit plane) a byte broadcast and compare, then multiplied with the int8
 * activations by maddubs/madd; the width is switched once per group.
 * AVX-512 hosts run this kernel too (no wider one is written yet). */
#include <immintrin.h>

#include "simd_x86.h"
#include "slim.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

T_AVX2 static inline __m256i un1(const uint8_t *s) {
    uint32_t v;
    memcpy(&v, s, 4);
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                         3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v), sel);
    b = _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
    return _mm256_and_si256(b, _mm256_set1_epi8(1));
}

T_AVX2 static inline __m256i un2(const uint8_t *s) {
    const __m128i v = _mm_loadl_epi64((const __m128i *)s), m3 = _mm_set1_epi8(3);
    const __m128i lo = _mm_unpacklo_epi64(v, _mm_srli_epi16(v, 2));
    const __m128i hi = _mm_unpacklo_epi64(_mm_srli_epi16(v, 4), _mm_srli_epi16(v, 6));
    return _mm256_set_m128i(_mm_and_si128(hi, m3), _mm_and_si128(lo, m3));
}

T_AVX2 static inline __m256i un4(const uint8_t *s) {
    const __m128i v = _mm_loadu_si128((const __m128i *)s), m15 = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m15), _mm_and_si128(v, m15));
}

/* One group of a row. The chunks' products stay in integers while they
 * share an activation scale (a block of A values): maddubs' int16 pair sums
 * are added in int16 (at most 4 chunks of width <= 5: |sum| <= 4 x 2 x 31 x
 * 127 < 32768), widened once per block, then scaled by d times the
 * activation scale: one float multiply-add per block, not per chunk. */
#define SLIM_GROUP(UNPACK, BYTES)                                                                  \
    for (int64_t c = c0; c < c1;) {                                                                \
        const int64_t ce = ((c & ~cmask) + cmask + 1) < c1 ? ((c & ~cmask) + cmask + 1) : c1;       \
        __m256i s16 = _mm256_setzero_si256();                                                     \
        for (; c < ce; c++) {                                                                      \
            const __m256i x = _mm256_loadu_si256((const __m256i *)(xq + c * 32));                  \
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(UNPACK, x));                          \
            p += (BYTES);                                                                          \
        }                                                                                          \
        const __m256i si = _mm256_madd_epi16(s16, ones);                                           \
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_set1_ps(d * dx[(c - 1) >> cshift]), acc); \
    }

T_AVX2 void kvq_slim_rows_avx2(const kvq_matw *W, int64_t r0, int64_t r1, const void *act, float *y) {
    const int64_t cols = W->cols, ng = (int64_t)W->aux_bytes[0], G = cols / ng, nc = cols / 32, cg = G / 32;
    const int64_t A = KVQ_SLIM_ABLK(cols), na = cols / A;
    /* chunks per activation block: 4 or 1, a power of two (no division in the loop) */
    const int cshift = A == 128 ? 2 : 0;
    const int64_t cmask = ((int64_t)1 << cshift) - 1;
    const int8_t *bits = W->aux[0];
    const kvq_f16 *dm = W->aux[1];
    const float *dx = act, *xs = dx + na;
    const int8_t *xq = (const int8_t *)(xs + nc);
    const __m256i ones = _mm256_set1_epi16(1);
    /* the activation sum of each group is the same for every row */
    float gsum[512];
    if (ng > 512) { /* more than 512 groups per row: rows longer than 64K values */
        kvq_slim_rows_ref(W, r0, r1, act, y);
        return;
    }
    for (int64_t g = 0; g < ng; g++) {
        float s = 0;
        for (int64_t c = g * cg; c < (g + 1) * cg; c++) s += xs[c];
        gsum[g] = s;
    }
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)W->data + (size_t)r * W->row_bytes;
        const kvq_f16 *rdm = dm + (size_t)r * ng * 2;
        __m256 acc = _mm256_setzero_ps();
        float macc = 0;
        for (int64_t g = 0; g < ng; g++) {
            const int64_t c0 = g * cg, c1 = c0 + cg;
            const float d = _cvtsh_ss(rdm[2 * g]);
            switch (bits[g]) {
            case 1: SLIM_GROUP(un1(p), 4) break;
            case 2: SLIM_GROUP(un2(p), 8) break;
            case 3: SLIM_GROUP(_mm256_or_si256(un2(p), _mm256_slli_epi16(un1(p + 8), 2)), 12) break;
            case 4: SLIM_GROUP(un4(p), 16) break;
            default: SLIM_GROUP(_mm256_or_si256(un4(p), _mm256_slli_epi16(un1(p + 16), 4)), 20) break;
            }
            macc += _cvtsh_ss(rdm[2 * g + 1]) * gsum[g];
        }
        y[r - r0] = kvq_hsum8(acc) + macc;
    }
}

const kvq_matvec_kernel kvq_slim_kernel_avx2 = {
    .act_size = kvq_slim_act_size,
    .quant = kvq_slim_act_quant,
    .rows_w = kvq_slim_rows_avx2,
    .dequant = kvq_slim_dequant,
};
