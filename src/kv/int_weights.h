/* Integer attention's factors (hier_kernels.c, kivi_int_avx2.c). For keys: the
 * statistics of a scale-folded query q_d s_d (its largest magnitude, and the
 * minimums' share sum_d q_d m_d). For values:
 * the weights w_i s_i (s_i a value's step, >= 0) rounded to 8 unsigned bits
 * against their maximum, with an optional signed low byte (round(128 (y - hi)),
 * |lo| <= 64) for 16-bit precision, and the minimums' share sum_i w_i m_i. */
#ifndef KVQ_KV_INT_WEIGHTS_H
#define KVQ_KV_INT_WEIGHTS_H
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include "../kernels/simd_x86.h"

/* max_d |q_d s_d| and sum_d q_d m_d over hd channels (hd % 8 == 0) */
__attribute__((target("avx2,fma,f16c"))) static inline void kvq_qstats_avx2(const float *q, const float *mn,
                                                                          const float *sc, int hd, float *amax,
                                                                          float *base) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 vb = _mm256_setzero_ps(), vm = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 8) {
        const __m256 x = _mm256_loadu_ps(q + d);
        vm = _mm256_max_ps(vm, _mm256_andnot_ps(sign, _mm256_mul_ps(x, _mm256_loadu_ps(sc + d))));
        vb = _mm256_fmadd_ps(x, _mm256_loadu_ps(mn + d), vb);
    }
    float r[8], m = 0;
    _mm256_storeu_ps(r, vm);
    for (int i = 0; i < 8; i++) m = r[i] > m ? r[i] : m;
    *amax = m;
    *base = kvq_hsum8(vb);
}

/* max_i w_i s_i (0 if none is positive) and sum_i w_i m_i */
__attribute__((target("avx2,fma,f16c"))) static inline void kvq_wstats_avx2(const float *w, const float *mn,
                                                                          const float *sc, int n, float *wmax,
                                                                          float *mterm) {
    __m256 vx = _mm256_setzero_ps(), vm = _mm256_setzero_ps();
    float mx = 0, mt = 0;
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 x = _mm256_loadu_ps(w + k);
        vx = _mm256_max_ps(vx, _mm256_mul_ps(x, _mm256_loadu_ps(sc + k)));
        vm = _mm256_fmadd_ps(x, _mm256_loadu_ps(mn + k), vm);
    }
    for (int j = k; j < n; j++) {
        const float x = w[j] * sc[j];
        mx = x > mx ? x : mx;
        mt += w[j] * mn[j];
    }
    float r[8];
    _mm256_storeu_ps(r, vx);
    for (int j = 0; j < 8; j++) mx = r[j] > mx ? r[j] : mx;
    *wmax = mx;
    *mterm = mt + kvq_hsum8(vm);
}

/* wq[i] = clamp(round(w_i s_i inv), 0, 255); with lo, lo[i] = round(128 (y - wq[i])) */
__attribute__((target("avx2,fma,f16c"))) static inline void kvq_wquant_avx2(const float *w, const float *sc, int n,
                                                                          float inv, uint8_t *wq, int8_t *lo) {
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 y = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(sc + k)), _mm256_set1_ps(inv));
        const __m256i h = _mm256_cvtps_epi32(y);
        const __m128i a = _mm_packus_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        _mm_storel_epi64((__m128i *)(wq + k), _mm_packus_epi16(a, a));
        if (lo) {
            const __m256i l = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(y, _mm256_cvtepi32_ps(h)), _mm256_set1_ps(128.0f)));
            const __m128i b = _mm_packs_epi32(_mm256_castsi256_si128(l), _mm256_extracti128_si256(l, 1));
            _mm_storel_epi64((__m128i *)(lo + k), _mm_packs_epi16(b, b));
        }
    }
    for (; k < n; k++) {
        const float y = w[k] * sc[k] * inv, r = rintf(y);
        wq[k] = (uint8_t)(r >= 0 && r <= 255 ? r : r > 255 ? 255 : 0);
        if (lo) {
            const float e = rintf((y - r) * 128.0f);
            lo[k] = (int8_t)(e >= -64 && e <= 64 ? e : 0);
        }
    }
}

#endif
