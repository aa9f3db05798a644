#include "kv_simd.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "../core/cpu.h"
#include "../core/fp16.h"
#include "../kernels/simd_x86.h"

/* ------------------------------------------------------------------ scalar */
static void qk_tile_f16_ref(const uint16_t *kt, int hd, const float *q, int nq, float *s, int lds) {
    for (int g = 0; g < nq; g++) {
        float acc[KVQ_KT] = {0};
        for (int d = 0; d < hd; d++) {
            float qd = q[g * hd + d];
            for (int j = 0; j < KVQ_KT; j++) acc[j] += qd * kvq_f16_to_f32(kt[d * KVQ_KT + j]);
        }
        memcpy(s + (size_t)g * lds, acc, sizeof acc);
    }
}

static void qk_tile_f32_ref(const float *kt, int hd, const float *q, int nq, float *s, int lds) {
    for (int g = 0; g < nq; g++) {
        float acc[KVQ_KT] = {0};
        for (int d = 0; d < hd; d++) {
            float qd = q[g * hd + d];
            for (int j = 0; j < KVQ_KT; j++) acc[j] += qd * kt[d * KVQ_KT + j];
        }
        memcpy(s + (size_t)g * lds, acc, sizeof acc);
    }
}

static void av_f16_ref(const uint16_t *v, int n, int hd, const float *w, int ldw, int nq, float *out) {
    for (int g = 0; g < nq; g++)
        for (int i = 0; i < n; i++) {
            float wi = w[(size_t)g * ldw + i];
            for (int d = 0; d < hd; d++) out[g * hd + d] += wi * kvq_f16_to_f32(v[(size_t)i * hd + d]);
        }
}

static void av_f32_ref(const float *v, int n, int hd, const float *w, int ldw, int nq, float *out) {
    for (int g = 0; g < nq; g++)
        for (int i = 0; i < n; i++) {
            float wi = w[(size_t)g * ldw + i];
            for (int d = 0; d < hd; d++) out[g * hd + d] += wi * v[(size_t)i * hd + d];
        }
}

static float softmax_step_ref(float *s, int n, float scale, float *m, float *l) {
    float mx = *m;
    for (int i = 0; i < n; i++) {
        s[i] *= scale;
        if (s[i] > mx) mx = s[i];
    }
    float corr = expf(*m - mx), sum = 0;
    for (int i = 0; i < n; i++) {
        s[i] = expf(s[i] - mx);
        sum += s[i];
    }
    *l = *l * corr + sum;
    *m = mx;
    return corr;
}

#if defined(__x86_64__)
/* ------------------------------------------------------------------- AVX2 */
#define T2 __attribute__((target("avx2,fma,f16c")))

/* exp(x) for x <= 0 (softmax arguments): 2^(x log2 e) split into integer and
 * fraction, degree-6 polynomial on the fraction; relative error below 1e-5
 * (checked against expf in tests/unit/test_kv.c). */
T2 static inline __m256 exp256(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
    __m256 fi = _mm256_floor_ps(t);
    __m256 f = _mm256_sub_ps(t, fi);
    __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fi), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

T2 static inline float hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

T2 static float softmax_step_avx2(float *s, int n, float scale, float *m, float *l) {
    __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(*m);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + i), vs);
        _mm256_storeu_ps(s + i, x);
        vm = _mm256_max_ps(vm, x);
    }
    float mx = hmax8(vm);
    for (; i < n; i++) {
        s[i] *= scale;
        if (s[i] > mx) mx = s[i];
    }
    __m256 bm = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
    float sum = 0;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), bm));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    sum = kvq_hsum8(acc);
    for (; i < n; i++) {
        s[i] = expf(s[i] - mx);
        sum += s[i];
    }
    float corr = expf(*m - mx);
    *l = *l * corr + sum;
    *m = mx;
    return corr;
}

/* Up to 6 queries per pass over a tile (12 accumulators, 2 key registers and
 * a broadcast in 16 registers), 16 slots at a time, so each converted key
 * register serves all of them. NG is a constant at every call, so the
 * accumulators stay in registers. A query's sums run in the same order
 * whatever the other queries: its scores never depend on the batch. */
T2 static inline __attribute__((always_inline)) void qk_f16_ng(const uint16_t *kt, int hd, const float *q, const int NG,
                                                               float *s, int lds) {
    for (int h = 0; h < KVQ_KT; h += 16) {
        __m256 a[12];
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) a[2 * g] = a[2 * g + 1] = _mm256_setzero_ps();
        for (int d = 0; d < hd; d++) {
            const __m128i *r = (const __m128i *)(kt + d * KVQ_KT + h);
            kvq_fma2_ng(q + d, (size_t)hd, NG, _mm256_cvtph_ps(_mm_loadu_si128(r)),
                        _mm256_cvtph_ps(_mm_loadu_si128(r + 1)), a);
        }
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) {
            _mm256_storeu_ps(s + (size_t)g * lds + h, a[2 * g]);
            _mm256_storeu_ps(s + (size_t)g * lds + h + 8, a[2 * g + 1]);
        }
    }
}

T2 static void qk_tile_f16_avx2(const uint16_t *kt, int hd, const float *q, int nq, float *s, int lds) {
    for (int g = 0; g < nq; g += 6) {
        const float *qg = q + (size_t)g * hd;
        float *sg = s + (size_t)g * lds;
        switch (nq - g < 6 ? nq - g : 6) {
        case 6: qk_f16_ng(kt, hd, qg, 6, sg, lds); break;
        case 5: qk_f16_ng(kt, hd, qg, 5, sg, lds); break;
        case 4: qk_f16_ng(kt, hd, qg, 4, sg, lds); break;
        case 3: qk_f16_ng(kt, hd, qg, 3, sg, lds); break;
        case 2: qk_f16_ng(kt, hd, qg, 2, sg, lds); break;
        default: qk_f16_ng(kt, hd, qg, 1, sg, lds); break;
        }
    }
}

T2 static void qk_tile_f32_avx2(const float *kt, int hd, const float *q, int nq, float *s, int lds) {
    for (int g = 0; g < nq; g++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *q0 = q + (size_t)g * hd;
        for (int d = 0; d < hd; d++) {
            const float *r = kt + d * KVQ_KT;
            __m256 b0 = _mm256_set1_ps(q0[d]);
            a0 = _mm256_fmadd_ps(b0, _mm256_loadu_ps(r), a0);
            a1 = _mm256_fmadd_ps(b0, _mm256_loadu_ps(r + 8), a1);
            a2 = _mm256_fmadd_ps(b0, _mm256_loadu_ps(r + 16), a2);
            a3 = _mm256_fmadd_ps(b0, _mm256_loadu_ps(r + 24), a3);
        }
        float *o = s + (size_t)g * lds;
        _mm256_storeu_ps(o, a0); _mm256_storeu_ps(o + 8, a1); _mm256_storeu_ps(o + 16, a2); _mm256_storeu_ps(o + 24, a3);
    }
}

/* Up to 6 queries per pass over the rows, ND (1 or 2) registers of 8
 * channels at a time, so each converted value register serves all of them;
 * each (query, channel) sums its slots in order, whatever the batch. */
T2 static inline __attribute__((always_inline)) void av_f16_ng(const uint16_t *v, int n, int hd, int d0, const float *w,
                                                               int ldw, const int NG, const int ND, float *out) {
    __m256 a[12];
#pragma GCC unroll 6
    for (int g = 0; g < NG; g++)
        for (int k = 0; k < ND; k++) a[ND * g + k] = _mm256_loadu_ps(out + (size_t)g * hd + d0 + 8 * k);
    for (int i = 0; i < n; i++) {
        const __m128i *r = (const __m128i *)(v + (size_t)i * hd + d0);
        const __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(r)), x1 = ND > 1 ? _mm256_cvtph_ps(_mm_loadu_si128(r + 1)) : x0;
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) {
            const __m256 wi = _mm256_broadcast_ss(w + (size_t)g * ldw + i);
            a[ND * g] = _mm256_fmadd_ps(wi, x0, a[ND * g]);
            if (ND > 1) a[ND * g + 1] = _mm256_fmadd_ps(wi, x1, a[ND * g + 1]);
        }
    }
#pragma GCC unroll 6
    for (int g = 0; g < NG; g++)
        for (int k = 0; k < ND; k++) _mm256_storeu_ps(out + (size_t)g * hd + d0 + 8 * k, a[ND * g + k]);
}

#define AV_F16_CASES(ND)                                                                                              \
    switch (ng) {                                                                                                     \
    case 6: av_f16_ng(v, n, hd, d0, wg, ldw, 6, ND, og); break;                                                       \
    case 5: av_f16_ng(v, n, hd, d0, wg, ldw, 5, ND, og); break;                                                       \
    case 4: av_f16_ng(v, n, hd, d0, wg, ldw, 4, ND, og); break;                                                       \
    case 3: av_f16_ng(v, n, hd, d0, wg, ldw, 3, ND, og); break;                                                       \
    case 2: av_f16_ng(v, n, hd, d0, wg, ldw, 2, ND, og); break;                                                       \
    default: av_f16_ng(v, n, hd, d0, wg, ldw, 1, ND, og); break;                                                      \
    }

/* hd must be a multiple of 8 for the SIMD av paths; others use the reference. */
T2 static void av_f16_avx2(const uint16_t *v, int n, int hd, const float *w, int ldw, int nq, float *out) {
    if (hd % 8) { av_f16_ref(v, n, hd, w, ldw, nq, out); return; }
    for (int g0 = 0; g0 < nq; g0 += 6) {
        const int ng = nq - g0 < 6 ? nq - g0 : 6;
        const float *wg = w + (size_t)g0 * ldw;
        float *og = out + (size_t)g0 * hd;
        int d0 = 0;
        for (; d0 + 16 <= hd; d0 += 16) AV_F16_CASES(2)
        if (d0 < hd) AV_F16_CASES(1)
    }
}

T2 static void av_f32_avx2(const float *v, int n, int hd, const float *w, int ldw, int nq, float *out) {
    if (hd % 8) { av_f32_ref(v, n, hd, w, ldw, nq, out); return; }
    for (int g = 0; g < nq; g++)
        for (int d0 = 0; d0 < hd; d0 += 32) {
            int nd = hd - d0 < 32 ? (hd - d0) / 8 : 4;
            __m256 a[4];
            for (int k = 0; k < nd; k++) a[k] = _mm256_loadu_ps(out + g * hd + d0 + 8 * k);
            for (int i = 0; i < n; i++) {
                __m256 wi = _mm256_set1_ps(w[(size_t)g * ldw + i]);
                const float *r = v + (size_t)i * hd + d0;
                for (int k = 0; k < nd; k++) a[k] = _mm256_fmadd_ps(wi, _mm256_loadu_ps(r + 8 * k), a[k]);
            }
            for (int k = 0; k < nd; k++) _mm256_storeu_ps(out + g * hd + d0 + 8 * k, a[k]);
        }
}

/* ---------------------------------------------------------------- AVX-512 */
#define T5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

T5 static float softmax_step_avx512(float *s, int n, float scale, float *m, float *l) {
    __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(*m);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_mul_ps(_mm512_loadu_ps(s + i), vs);
        _mm512_storeu_ps(s + i, x);
        vm = _mm512_max_ps(vm, x);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), vs);
        _mm512_mask_storeu_ps(s + i, k, x);
        vm = _mm512_mask_max_ps(vm, k, vm, x);
    }
    float mx = _mm512_reduce_max_ps(vm);
    __m512 bm = _mm512_set1_ps(mx), acc = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = kvq_exp512(_mm512_sub_ps(_mm512_loadu_ps(s + i), bm));
        _mm512_storeu_ps(s + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = kvq_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), bm));
        _mm512_mask_storeu_ps(s + i, k, e);
        acc = _mm512_mask_add_ps(acc, k, acc, e);
    }
    float sum = _mm512_reduce_add_ps(acc);
    float corr = expf(*m - mx);
    *l = *l * corr + sum;
    *m = mx;
    return corr;
}

T5 static void qk_tile_f16_avx512(const uint16_t *kt, int hd, const float *q, int nq, float *s, int lds) {
    int g = 0;
    for (; g + 4 <= nq; g += 4) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0, e1 = a0;
        const float *q0 = q + (size_t)g * hd;
        for (int d = 0; d < hd; d++) {
            __m512i raw = _mm512_loadu_si512(kt + d * KVQ_KT);
            __m512 k0 = _mm512_cvtph_ps(_mm512_castsi512_si256(raw));
            __m512 k1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(raw, 1));
            __m512 x = _mm512_set1_ps(q0[d]);
            a0 = _mm512_fmadd_ps(x, k0, a0); a1 = _mm512_fmadd_ps(x, k1, a1);
            x = _mm512_set1_ps(q0[hd + d]);
            b0 = _mm512_fmadd_ps(x, k0, b0); b1 = _mm512_fmadd_ps(x, k1, b1);
            x = _mm512_set1_ps(q0[2 * hd + d]);
            c0 = _mm512_fmadd_ps(x, k0, c0); c1 = _mm512_fmadd_ps(x, k1, c1);
            x = _mm512_set1_ps(q0[3 * hd + d]);
            e0 = _mm512_fmadd_ps(x, k0, e0); e1 = _mm512_fmadd_ps(x, k1, e1);
        }
        float *o = s + (size_t)g * lds;
        _mm512_storeu_ps(o, a0); _mm512_storeu_ps(o + 16, a1); o += lds;
        _mm512_storeu_ps(o, b0); _mm512_storeu_ps(o + 16, b1); o += lds;
        _mm512_storeu_ps(o, c0); _mm512_storeu_ps(o + 16, c1); o += lds;
        _mm512_storeu_ps(o, e0); _mm512_storeu_ps(o + 16, e1);
    }
    for (; g < nq; g++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *q0 = q + (size_t)g * hd;
        int d = 0;
        for (; d + 2 <= hd; d += 2) { /* two independent chains hide FMA latency */
            __m512i r0 = _mm512_loadu_si512(kt + d * KVQ_KT), r1 = _mm512_loadu_si512(kt + (d + 1) * KVQ_KT);
            __m512 x0 = _mm512_set1_ps(q0[d]), x1 = _mm512_set1_ps(q0[d + 1]);
            a0 = _mm512_fmadd_ps(x0, _mm512_cvtph_ps(_mm512_castsi512_si256(r0)), a0);
            a1 = _mm512_fmadd_ps(x0, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(r0, 1)), a1);
            a2 = _mm512_fmadd_ps(x1, _mm512_cvtph_ps(_mm512_castsi512_si256(r1)), a2);
            a3 = _mm512_fmadd_ps(x1, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(r1, 1)), a3);
        }
        for (; d < hd; d++) {
            __m512i r0 = _mm512_loadu_si512(kt + d * KVQ_KT);
            __m512 x0 = _mm512_set1_ps(q0[d]);
            a0 = _mm512_fmadd_ps(x0, _mm512_cvtph_ps(_mm512_castsi512_si256(r0)), a0);
            a1 = _mm512_fmadd_ps(x0, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(r0, 1)), a1);
        }
        float *o = s + (size_t)g * lds;
        _mm512_storeu_ps(o, _mm512_add_ps(a0, a2));
        _mm512_storeu_ps(o + 16, _mm512_add_ps(a1, a3));
    }
}

T5 static void qk_tile_f32_avx512(const float *kt, int hd, const float *q, int nq, float *s, int lds) {
    for (int g = 0; g < nq; g++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        const float *q0 = q + (size_t)g * hd;
        for (int d = 0; d < hd; d++) {
            __m512 x = _mm512_set1_ps(q0[d]);
            a0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(kt + d * KVQ_KT), a0);
            a1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(kt + d * KVQ_KT + 16), a1);
        }
        _mm512_storeu_ps(s + (size_t)g * lds, a0);
        _mm512_storeu_ps(s + (size_t)g * lds + 16, a1);
    }
}

/* 64 output dims of two heads per pass: each value row is loaded once for
 * both heads, and the 8 accumulators stay in registers. */
#define AV512_BODY(LOAD)                                                                                       \
    for (int g = 0; g < nq; g += 2) {                                                                           \
        const bool two = g + 1 < nq;                                                                            \
        for (int d0 = 0; d0 < hd; d0 += 64) {                                                                   \
            float *o0 = out + g * hd + d0, *o1 = two ? o0 + hd : o0;                                            \
            __m512 a0 = _mm512_loadu_ps(o0), a1 = _mm512_loadu_ps(o0 + 16), a2 = _mm512_loadu_ps(o0 + 32),     \
                   a3 = _mm512_loadu_ps(o0 + 48);                                                               \
            __m512 b0 = _mm512_loadu_ps(o1), b1 = _mm512_loadu_ps(o1 + 16), b2 = _mm512_loadu_ps(o1 + 32),     \
                   b3 = _mm512_loadu_ps(o1 + 48);                                                               \
            const float *w0 = w + (size_t)g * ldw, *w1 = two ? w0 + ldw : w0;                                   \
            for (int i = 0; i < n; i++) {                                                                       \
                const size_t r = (size_t)i * hd + d0;                                                           \
                __m512 v0 = LOAD(r), v1 = LOAD(r + 16), v2 = LOAD(r + 32), v3 = LOAD(r + 48);                   \
                __m512 x = _mm512_set1_ps(w0[i]), y = _mm512_set1_ps(w1[i]);                                    \
                a0 = _mm512_fmadd_ps(x, v0, a0); a1 = _mm512_fmadd_ps(x, v1, a1);                               \
                a2 = _mm512_fmadd_ps(x, v2, a2); a3 = _mm512_fmadd_ps(x, v3, a3);                               \
                b0 = _mm512_fmadd_ps(y, v0, b0); b1 = _mm512_fmadd_ps(y, v1, b1);                               \
                b2 = _mm512_fmadd_ps(y, v2, b2); b3 = _mm512_fmadd_ps(y, v3, b3);                               \
            }                                                                                                   \
            _mm512_storeu_ps(o0, a0); _mm512_storeu_ps(o0 + 16, a1);                                            \
            _mm512_storeu_ps(o0 + 32, a2); _mm512_storeu_ps(o0 + 48, a3);                                       \
            if (two) {                                                                                          \
                _mm512_storeu_ps(o1, b0); _mm512_storeu_ps(o1 + 16, b1);                                        \
                _mm512_storeu_ps(o1 + 32, b2); _mm512_storeu_ps(o1 + 48, b3);                                   \
            }                                                                                                   \
        }                                                                                                       \
    }

/* Four heads (a GQA group) at once, 64 dims per pass: each value row is
 * converted once for all four, with 16 accumulators in registers. With two
 * heads per pass the rows were read and converted twice per group, and the
 * f16 cache's decode at depth was limited by that, not by memory. */
#define AV512_BODY4(LOAD)                                                                                      \
    for (int g = 0; g + 4 <= nq; g += 4) {                                                                      \
        for (int d0 = 0; d0 < hd; d0 += 64) {                                                                   \
            __m512 a[4][4];                                                                                     \
            _Pragma("GCC unroll 4") for (int h = 0; h < 4; h++)                                                                         \
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) a[h][j] = _mm512_loadu_ps(out + (g + h) * hd + d0 + 16 * j);        \
            const float *w0 = w + (size_t)g * ldw;                                                              \
            for (int i = 0; i < n; i++) {                                                                       \
                const size_t r = (size_t)i * hd + d0;                                                           \
                __m512 v0 = LOAD(r), v1 = LOAD(r + 16), v2 = LOAD(r + 32), v3 = LOAD(r + 48);                   \
                _Pragma("GCC unroll 4") for (int h = 0; h < 4; h++) {                                                                   \
                    __m512 x = _mm512_set1_ps(w0[(size_t)h * ldw + i]);                                         \
                    a[h][0] = _mm512_fmadd_ps(x, v0, a[h][0]); a[h][1] = _mm512_fmadd_ps(x, v1, a[h][1]);       \
                    a[h][2] = _mm512_fmadd_ps(x, v2, a[h][2]); a[h][3] = _mm512_fmadd_ps(x, v3, a[h][3]);       \
                }                                                                                               \
            }                                                                                                   \
            _Pragma("GCC unroll 4") for (int h = 0; h < 4; h++)                                                                         \
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) _mm512_storeu_ps(out + (g + h) * hd + d0 + 16 * j, a[h][j]);        \
        }                                                                                                       \
    }

T5 static void av_f16_avx512(const uint16_t *v, int n, int hd, const float *w, int ldw, int nq, float *out) {
    if (hd % 64) { av_f16_avx2(v, n, hd, w, ldw, nq, out); return; }
#define LOAD16(off) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v + (off))))
    if (nq % 4 == 0) {
        AV512_BODY4(LOAD16)
        return;
    }
    AV512_BODY(LOAD16)
#undef LOAD16
}

T5 static void av_f32_avx512(const float *v, int n, int hd, const float *w, int ldw, int nq, float *out) {
    if (hd % 64) { av_f32_avx2(v, n, hd, w, ldw, nq, out); return; }
#define LOAD32(off) _mm512_loadu_ps(v + (off))
    if (nq % 4 == 0) {
        AV512_BODY4(LOAD32)
        return;
    }
    AV512_BODY(LOAD32)
#undef LOAD32
}
#endif

static const kvq_attn_kernels K_REF = {qk_tile_f16_ref, qk_tile_f32_ref, av_f16_ref, av_f32_ref, softmax_step_ref};
#if defined(__x86_64__)
static const kvq_attn_kernels K_AVX2 = {qk_tile_f16_avx2, qk_tile_f32_avx2, av_f16_avx2, av_f32_avx2,
                                        softmax_step_avx2};
static const kvq_attn_kernels K_AVX512 = {qk_tile_f16_avx512, qk_tile_f32_avx512, av_f16_avx512, av_f32_avx512,
                                          softmax_step_avx512};
#endif

const kvq_attn_kernels *kvq_attn_kernels_isa(int isa) {
#if defined(__x86_64__)
    static const void *const T[KVQ_ISA_COUNT] = {&K_REF, &K_AVX2, &K_AVX512};
#else
    static const void *const T[KVQ_ISA_COUNT] = {&K_REF};
#endif
    return kvq_isa_pick(isa, T);
}

const kvq_attn_kernels *kvq_attn_kernels_active(void) { return kvq_attn_kernels_isa(kvq_isa_active()); }
