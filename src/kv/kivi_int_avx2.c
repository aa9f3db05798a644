/* KIVI's attention in integer arithmetic on AVX2 (pmaddubsw), the AVX2
 * counterpart of the AVX-512 VNNI kernels in kivi_kernels.c, with their
 * roundings: in f32 a 2- or 4-bit code costs as many multiply-adds as an f16
 * value, and on a core with two FMA pipes that is what bounds attention over
 * a long context, not the bytes.
 *  - Keys (4-bit, blocks of 32 tokens): the scale-folded query q_d s_d is
 *    rounded to int8 per block and query (alpha = max/127), the codes stay
 *    exact; score = sum_d q_d m_d + alpha * sum_d qi_d c_d. Two channel rows
 *    (16 bytes each, byte j: token j low nibble, token j + 16 high) are one
 *    load; a qword permute and a byte shuffle pair their codes per token, so
 *    one pmaddubsw takes two channels of 16 tokens against a query pair.
 *  - Values (2- and 4-bit, groups of 32 channels, rows in quads of 4 tokens,
 *    kivi_kernels.h): the weights w_i s_i (>= 0) are rounded to 8 unsigned
 *    bits per call, group and query (beta = max/255); out += sum_i w_i m_i +
 *    beta * sum_i wi_i c_i. A quad's byte k holds channel k of its 4 tokens
 *    side by side, so one pmaddubsw multiplies 4 tokens' codes by their 4
 *    weights with no shuffle.
 * Tested against the f32 reference within the share of the codec's own error
 * that the VNNI path is allowed (tests/unit/test_kivi.c). */
#include <immintrin.h>
#include <string.h>
#include "int_weights.h"
#include "kivi_kernels.h"
#include "kvquant.h"
#include "../kernels/simd_x86.h"

#if defined(__x86_64__)
#define T2 __attribute__((target("avx2,fma,f16c")))
#define AI __attribute__((always_inline))

/* NG (compile-time) queries against one 4-bit key block of 32 tokens. */
T2 static inline AI void qk4_ng(const uint8_t *codes, int hd, const int8_t *qi, int ldq, const float *al,
                                const float *bs, const int NG, float *s, int lds) {
    const __m256i m15 = _mm256_set1_epi8(15);
    /* per lane: bytes 0-7 of one row and 0-7 of the next -> (row, next) pairs */
    const __m256i pat = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 0, 8, 1, 9, 2, 10, 3,
                                         11, 4, 12, 5, 13, 6, 14, 7, 15);
    _Alignas(32) int32_t acc[4][32];
    memset(acc, 0, sizeof acc);
    for (int d0 = 0; d0 < hd; d0 += 16) {
        __m256i lo16[4], hi16[4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) lo16[g] = hi16[g] = _mm256_setzero_si256();
        const int de = d0 + 16 < hd ? d0 + 16 : hd;
        for (int d = d0; d < de; d += 2) { /* at most 8 pairs: 8 x 2 x 15 x 127 = 30480 in int16 */
            const __m256i x = _mm256_loadu_si256((const __m256i *)(codes + (size_t)d * 16));
            const __m256i lo = _mm256_and_si256(x, m15), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m15);
            const __m256i pl = _mm256_shuffle_epi8(_mm256_permute4x64_epi64(lo, 0xd8), pat); /* tokens 0-15 */
            const __m256i ph = _mm256_shuffle_epi8(_mm256_permute4x64_epi64(hi, 0xd8), pat); /* tokens 16-31 */
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) {
                const __m256i qv = kvq_bcast4_avx2(qi + (size_t)g * ldq + 2 * d); /* the pair, twice */
                lo16[g] = _mm256_add_epi16(lo16[g], _mm256_maddubs_epi16(pl, qv));
                hi16[g] = _mm256_add_epi16(hi16[g], _mm256_maddubs_epi16(ph, qv));
            }
        }
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) {
            const __m256i v[4] = {_mm256_cvtepi16_epi32(_mm256_castsi256_si128(lo16[g])),
                                  _mm256_cvtepi16_epi32(_mm256_extracti128_si256(lo16[g], 1)),
                                  _mm256_cvtepi16_epi32(_mm256_castsi256_si128(hi16[g])),
                                  _mm256_cvtepi16_epi32(_mm256_extracti128_si256(hi16[g], 1))};
            for (int k = 0; k < 4; k++) {
                __m256i *a = (__m256i *)(acc[g] + 8 * k);
                _mm256_store_si256(a, _mm256_add_epi32(_mm256_load_si256(a), v[k]));
            }
        }
    }
    for (int g = 0; g < NG; g++) {
        const __m256 a = _mm256_set1_ps(al[g]), b = _mm256_set1_ps(bs[g]);
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(s + (size_t)g * lds + 8 * k,
                             _mm256_fmadd_ps(a, _mm256_cvtepi32_ps(_mm256_load_si256((const __m256i *)(acc[g] + 8 * k))), b));
    }
}

T2 bool kvq_kivi_qk4_int_avx2(const uint8_t *codes, const kvq_f16 *ms, int hd, const float *q, int nq, float *s,
                           int lds) {
    if (hd % 16 || hd > 1024) return false;
    _Alignas(32) float mn[1024], sc[1024];
    _Alignas(32) int8_t qi[4 * 2048];
    float al[4], bs[4];
    for (int d = 0; d < hd; d += 8) {
        _mm256_store_ps(mn + d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ms + d))));
        _mm256_store_ps(sc + d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ms + hd + d))));
    }
    for (int g0 = 0; g0 < nq; g0 += 4) {
        const int ng = nq - g0 < 4 ? nq - g0 : 4;
        for (int g = 0; g < ng; g++) {
            const float *qg = q + (size_t)(g0 + g) * hd;
            float amax, base;
            kvq_qstats_avx2(qg, mn, sc, hd, &amax, &base);
            const __m256 inv = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
            for (int d = 0; d < hd; d += 8) { /* channel pairs, each written twice: one 32-bit broadcast */
                const __m256i v = _mm256_cvtps_epi32(
                    _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(qg + d), _mm256_load_ps(sc + d)), inv));
                const __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                const __m128i b = _mm_packs_epi16(p, p); /* 8 int8 in the low half */
                _mm_storeu_si128((__m128i *)(qi + (size_t)g * 2048 + 2 * d), _mm_unpacklo_epi16(b, b));
            }
            al[g] = amax / 127.0f;
            bs[g] = base;
        }
        float *sg = s + (size_t)g0 * lds;
        switch (ng) {
        case 4: qk4_ng(codes, hd, qi, 2048, al, bs, 4, sg, lds); break;
        case 3: qk4_ng(codes, hd, qi, 2048, al, bs, 3, sg, lds); break;
        case 2: qk4_ng(codes, hd, qi, 2048, al, bs, 2, sg, lds); break;
        default: qk4_ng(codes, hd, qi, 2048, al, bs, 1, sg, lds); break;
        }
    }
    return true;
}

/* The 32 channels of one group for the 4 tokens of a quad as 4 vectors of
 * bytes (channels 8k..8k+7, 4 tokens per 32-bit lane). 4 bits: row byte k
 * holds channel k (low nibble) and k + 16; 2 bits: channels k, k+8, k+16, k+24. */
T2 static inline AI void quad_codes(const uint8_t *p, const int VB, __m256i x[4]) {
    if (VB == 4) {
        const __m256i m = _mm256_set1_epi8(15);
        const __m256i y0 = _mm256_loadu_si256((const __m256i *)p), y1 = _mm256_loadu_si256((const __m256i *)(p + 32));
        x[0] = _mm256_and_si256(y0, m);
        x[1] = _mm256_and_si256(y1, m);
        x[2] = _mm256_and_si256(_mm256_srli_epi16(y0, 4), m);
        x[3] = _mm256_and_si256(_mm256_srli_epi16(y1, 4), m);
    } else {
        const __m256i m = _mm256_set1_epi8(3), y = _mm256_loadu_si256((const __m256i *)p);
        x[0] = _mm256_and_si256(y, m);
        x[1] = _mm256_and_si256(_mm256_srli_epi16(y, 2), m);
        x[2] = _mm256_and_si256(_mm256_srli_epi16(y, 4), m);
        x[3] = _mm256_and_si256(_mm256_srli_epi16(y, 6), m);
    }
}

/* NG (<= 2) queries over n4 tokens (whole quads) of one group: int16 sums over
 * 4 quads (at most 8 products of 8-bit weights and 4-bit codes: 30600), then
 * pmaddwd to int32. isum[g][c], c < 32. */
T2 static inline AI void av_group_ng(const uint8_t *p0, size_t qstride, int n4, const int VB, const uint8_t *wq,
                                     int ldq, const int NG, int32_t (*isum)[32]) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a32[2][4];
#pragma GCC unroll 2
    for (int g = 0; g < NG; g++)
        for (int k = 0; k < 4; k++) a32[g][k] = _mm256_setzero_si256();
    for (int t0 = 0; t0 < n4; t0 += 16) {
        const int te = t0 + 16 < n4 ? t0 + 16 : n4;
        __m256i a16[2][4];
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            for (int k = 0; k < 4; k++) a16[g][k] = _mm256_setzero_si256();
        for (int t = t0; t < te; t += 4) {
            __m256i x[4];
            quad_codes(p0 + (size_t)(t >> 2) * qstride, VB, x);
#pragma GCC unroll 2
            for (int g = 0; g < NG; g++) {
                const __m256i wv = kvq_bcast4_avx2((const int8_t *)wq + (size_t)g * ldq + t);
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) a16[g][k] = _mm256_add_epi16(a16[g][k], _mm256_maddubs_epi16(wv, x[k]));
            }
        }
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++)
            for (int k = 0; k < 4; k++) a32[g][k] = _mm256_add_epi32(a32[g][k], _mm256_madd_epi16(a16[g][k], ones));
    }
#pragma GCC unroll 2
    for (int g = 0; g < NG; g++)
        for (int k = 0; k < 4; k++) _mm256_storeu_si256((__m256i *)(isum[g] + 8 * k), a32[g][k]);
}

T2 bool kvq_kivi_av_int_avx2(const uint8_t *codes, int t0, const kvq_f16 *ms, int n, int hd, int vb, const float *w,
                          int ldw, int nq, float *out) {
    const int off = t0 & 3, span = off + n, n4 = (span + 3) & ~3;
    if ((vb != 2 && vb != 4) || hd % 32 || hd > 1024 || span > 256) return false;
    const int ng = hd / 32, gb = kvq_code_bytes(32, vb), rb = ng * gb;
    const uint8_t *quad0 = codes + (size_t)(t0 >> 2) * 4 * rb;
    float mn[256], sc[256];
    _Alignas(32) uint8_t wq[2][264];
    int32_t isum[2][32];
    const __m256 zero = _mm256_setzero_ps();
    const __m256i gidx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(ng));
    for (int gr = 0; gr < ng; gr++) {
        /* the group's (min, scale) per token, and the weights' rounding: in
         * vectors, since per call they cost as much as the products */
        int i = 0;
        __m256 neg = zero;
        for (; i + 8 <= n; i += 8) {
            /* token i + k's (min, scale) is 32-bit word k * ng of p: a gather, not 8 stores and a
             * load (which stall on store forwarding) */
            const int32_t *p = (const int32_t *)(ms + ((size_t)i * ng + gr) * 2);
            const __m256i pr = _mm256_i32gather_epi32(p, gidx, 4);
            /* low halves (minimums) and high halves (scales) of the 8 words, in token order */
            const __m256i lo16 = _mm256_set1_epi32(0xffff);
            const __m256i y = _mm256_permute4x64_epi64(
                _mm256_packus_epi32(_mm256_and_si256(pr, lo16), _mm256_srli_epi32(pr, 16)), 0xd8);
            const __m256 vs = _mm256_cvtph_ps(_mm256_extracti128_si256(y, 1));
            _mm256_storeu_ps(mn + i, _mm256_cvtph_ps(_mm256_castsi256_si128(y)));
            _mm256_storeu_ps(sc + i, vs);
            neg = _mm256_or_ps(neg, _mm256_cmp_ps(vs, zero, _CMP_NGE_UQ)); /* < 0 or NaN */
        }
        if (_mm256_movemask_ps(neg)) return false; /* unsigned weights need scales >= 0, as the quantizer makes them */
        for (; i < n; i++) {
            const kvq_f16 *p = ms + ((size_t)i * ng + gr) * 2;
            mn[i] = _cvtsh_ss(p[0]);
            sc[i] = _cvtsh_ss(p[1]);
            if (!(sc[i] >= 0)) return false;
        }
        for (int g0 = 0; g0 < nq; g0 += 2) {
            const int nh = nq - g0 < 2 ? nq - g0 : 2;
            float beta[2], mterm[2];
            for (int g = 0; g < nh; g++) {
                const float *wg = w + (size_t)(g0 + g) * ldw;
                float mx, mt;
                kvq_wstats_avx2(wg, mn, sc, n, &mx, &mt);
                memset(wq[g], 0, (size_t)n4);
                kvq_wquant_avx2(wg, sc, n, mx > 0 ? 255.0f / mx : 0.0f, wq[g] + off, NULL);
                beta[g] = mx / 255.0f;
                mterm[g] = mt;
            }
            const uint8_t *p0 = quad0 + (size_t)gr * 4 * gb;
            const size_t qs = (size_t)4 * rb;
            if (nh == 2) {
                if (vb == 4) av_group_ng(p0, qs, n4, 4, wq[0], 264, 2, isum);
                else av_group_ng(p0, qs, n4, 2, wq[0], 264, 2, isum);
            } else {
                if (vb == 4) av_group_ng(p0, qs, n4, 4, wq[0], 264, 1, isum);
                else av_group_ng(p0, qs, n4, 2, wq[0], 264, 1, isum);
            }
            for (int g = 0; g < nh; g++) {
                float *o = out + (size_t)(g0 + g) * hd + 32 * gr;
                const __m256 be = _mm256_set1_ps(beta[g]), mt = _mm256_set1_ps(mterm[g]);
                for (int k = 0; k < 4; k++)
                    _mm256_storeu_ps(o + 8 * k, _mm256_add_ps(_mm256_loadu_ps(o + 8 * k),
                                                              _mm256_fmadd_ps(be, _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(isum[g] + 8 * k))), mt)));
            }
        }
    }
    return true;
}
#endif
