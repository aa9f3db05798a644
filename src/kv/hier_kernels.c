#include "hier_kernels.h"

#include <immintrin.h>
#include <string.h>
#include "../core/cpu.h"
#include "../kernels/simd_x86.h"
#include "kivi_kernels.h"
#include "kvquant.h"

/* ------------------------------------------------------------------ scalar */
static void qk_ref(const uint8_t *up, const uint8_t *lo, const kvq_f16 *ms, int G, int hd, const float *q, int nq,
                   float *s, int lds) {
    const int nb = G / 2;
    for (int g = 0; g < nq; g++) {
        float *acc = s + (size_t)g * lds;
        for (int j = 0; j < G; j++) acc[j] = 0;
        for (int d = 0; d < hd; d++) {
            float mn, sc;
            kvq_hier_view_ms(lo != NULL, ms[d], ms[hd + d], &mn, &sc);
            const float qd = q[(size_t)g * hd + d];
            for (int j = 0; j < G; j++) {
                int c = kvq_code_at(up + (size_t)d * nb, G, 4, j);
                if (lo) c = 16 * c + kvq_code_at(lo + (size_t)d * nb, G, 4, j);
                acc[j] += qd * (mn + sc * (float)c);
            }
        }
    }
}

static void av_ref(const uint8_t *up, const uint8_t *lo, int t0, const kvq_f16 *ms, int n, int hd, int vg,
                   const float *w, int ldw, int nq, float *out) {
    const int ng = hd / vg, gb = vg / 2, rb = hd / 2;
    uint8_t ur[512], lr[512];
    for (int i = 0; i < n; i++) {
        kvq_vrow_get(up, t0 + i, rb, ur);
        if (lo) kvq_vrow_get(lo, t0 + i, rb, lr);
        for (int gr = 0; gr < ng; gr++) {
            float mn, sc;
            kvq_hier_view_ms(lo != NULL, ms[((size_t)i * ng + gr) * 2], ms[((size_t)i * ng + gr) * 2 + 1], &mn, &sc);
            for (int c = 0; c < vg; c++) {
                int code = kvq_code_at(ur + gr * gb, vg, 4, c);
                if (lo) code = 16 * code + kvq_code_at(lr + gr * gb, vg, 4, c);
                const float v = mn + sc * (float)code;
                for (int g = 0; g < nq; g++) out[(size_t)g * hd + gr * vg + c] += w[(size_t)g * ldw + i] * v;
            }
        }
    }
}

static const kvq_hier_kernels H_REF = {qk_ref, av_ref};

#if defined(__x86_64__)
#define T2 __attribute__((target("avx2,fma,f16c")))

/* kvq_hier_view_ms on F16C instructions: the same roundings (nearest even),
 * a few instructions instead of the bit-exact portable conversions, which
 * cost more per token than the token's multiply-adds. */
T2 static inline void view_ms_f16c(bool target, kvq_f16 m, kvq_f16 s4, float *mn, float *sc) {
    float fm = _cvtsh_ss(m), fs = _cvtsh_ss(s4);
    if (target) {
        fm = _cvtsh_ss(_cvtss_sh(fm - 0.5f * fs, _MM_FROUND_TO_NEAREST_INT));
        const unsigned short s8 = _cvtss_sh(fs / 16.0f, _MM_FROUND_TO_NEAREST_INT);
        fs = _cvtsh_ss(s8 == 0 ? 1 : s8);
    }
    *mn = fm;
    *sc = fs;
}

/* The same for 8 consecutive tokens of a single group of values, whose (m, s4)
 * pairs sit side by side. */
T2 static inline void view_ms8_f16c(bool target, const kvq_f16 *pairs, float *mn, float *sc) {
    const __m256i x = _mm256_loadu_si256((const __m256i *)pairs), lo16 = _mm256_set1_epi32(0xffff);
    /* per lane [m m m m s s s s], then [m0..7 s0..7] */
    const __m256i ms = _mm256_permute4x64_epi64(
        _mm256_packus_epi32(_mm256_and_si256(x, lo16), _mm256_srli_epi32(x, 16)), 0xd8);
    __m128i m = _mm256_castsi256_si128(ms), s = _mm256_extracti128_si256(ms, 1);
    if (target) {
        const __m256 fm = _mm256_cvtph_ps(m), fs = _mm256_cvtph_ps(s);
        m = _mm256_cvtps_ph(_mm256_fnmadd_ps(_mm256_set1_ps(0.5f), fs, fm), _MM_FROUND_TO_NEAREST_INT);
        s = _mm256_cvtps_ph(_mm256_mul_ps(fs, _mm256_set1_ps(1.0f / 16.0f)), _MM_FROUND_TO_NEAREST_INT);
        s = _mm_blendv_epi8(s, _mm_set1_epi16(1), _mm_cmpeq_epi16(s, _mm_setzero_si128()));
    }
    _mm256_storeu_ps(mn, _mm256_cvtph_ps(m));
    _mm256_storeu_ps(sc, _mm256_cvtph_ps(s));
}

/* 8 bytes of codes -> the low and high nibbles as 8 floats each; with a lower
 * plane (LO, a compile-time constant at every call), the 8-bit codes 16 U + L. */
T2 static inline __attribute__((always_inline)) void codes8(const uint8_t *up, const uint8_t *lo, const bool LO,
                                                            __m256 *flo, __m256 *fhi) {
    const __m256i m15 = _mm256_set1_epi32(15);
    __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)up));
    __m256i a = _mm256_and_si256(x, m15), b = _mm256_srli_epi32(x, 4);
    if (LO) {
        __m256i y = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)lo));
        a = _mm256_add_epi32(_mm256_slli_epi32(a, 4), _mm256_and_si256(y, m15));
        b = _mm256_add_epi32(_mm256_slli_epi32(b, 4), _mm256_srli_epi32(y, 4));
    }
    *flo = _mm256_cvtepi32_ps(a);
    *fhi = _mm256_cvtepi32_ps(b);
}

/* Keys of NG (<= 6) queries: 8 tokens j and 8 tokens G/2 + j per 8-byte load.
 * NG and LO are constants at every call, so the 2 NG accumulators stay in
 * registers (with a run-time count the compiler kept them on the stack, and
 * every multiply-add waited on a store: 5x slower). Each query's sums run in
 * the same order whatever the other queries, so a score never depends on the
 * batch it was computed in. */
T2 static inline __attribute__((always_inline)) void qk_ng(const uint8_t *up, const uint8_t *lo, const bool LO, int nb,
                                                           int hd, const float *qs, const float *base, const int NG,
                                                           float *s, int lds) {
    for (int k0 = 0; k0 < nb; k0 += 8) {
        __m256 acc[12];
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) acc[2 * g] = acc[2 * g + 1] = _mm256_set1_ps(base[g]);
        for (int d = 0; d < hd; d++) {
            __m256 a, b;
            codes8(up + (size_t)d * nb + k0, LO ? lo + (size_t)d * nb + k0 : NULL, LO, &a, &b);
            kvq_fma2_ng(qs + d, (size_t)hd, NG, a, b, acc);
        }
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) {
            _mm256_storeu_ps(s + (size_t)g * lds + k0, acc[2 * g]);
            _mm256_storeu_ps(s + (size_t)g * lds + nb + k0, acc[2 * g + 1]);
        }
    }
}

#define QK_DISPATCH(LO)                                                                                               \
    switch (ng) {                                                                                                     \
    case 6: qk_ng(up, lo, LO, nb, hd, qs, base, 6, sg, lds); break;                                                   \
    case 5: qk_ng(up, lo, LO, nb, hd, qs, base, 5, sg, lds); break;                                                   \
    case 4: qk_ng(up, lo, LO, nb, hd, qs, base, 4, sg, lds); break;                                                   \
    case 3: qk_ng(up, lo, LO, nb, hd, qs, base, 3, sg, lds); break;                                                   \
    case 2: qk_ng(up, lo, LO, nb, hd, qs, base, 2, sg, lds); break;                                                   \
    default: qk_ng(up, lo, LO, nb, hd, qs, base, 1, sg, lds); break;                                                  \
    }

#define QK_NG 6 /* queries per pass over a block: 12 accumulators, 2 code vectors and a broadcast in 16 registers */

T2 static void qk_avx2(const uint8_t *up, const uint8_t *lo, const kvq_f16 *ms, int G, int hd, const float *q, int nq,
                       float *s, int lds) {
    if (G % 16 || hd > 512) { qk_ref(up, lo, ms, G, hd, q, nq, s, lds); return; }
    const int nb = G / 2;
    float mn[512], sc[512], qs[QK_NG * 512];
    for (int d = 0; d < hd; d++) view_ms_f16c(lo != NULL, ms[d], ms[hd + d], &mn[d], &sc[d]);
    for (int g0 = 0; g0 < nq; g0 += QK_NG) {
        const int ng = nq - g0 < QK_NG ? nq - g0 : QK_NG;
        float base[QK_NG] = {0};
        for (int g = 0; g < ng; g++) {
            const float *qg = q + (size_t)(g0 + g) * hd;
            for (int d = 0; d < hd; d++) {
                qs[(size_t)g * hd + d] = qg[d] * sc[d];
                base[g] += qg[d] * mn[d];
            }
        }
        float *sg = s + (size_t)g0 * lds;
        if (lo) {
            QK_DISPATCH(true)
        } else {
            QK_DISPATCH(false)
        }
    }
}

/* Values of NG (<= 6) queries over the whole quads [q0, q1) of one group of
 * channels, one pair of code bytes at a time: an 8-byte load holds channels
 * k, k+1 (low nibbles) and k+gb, k+gb+1 (high) of the 4 tokens of a quad,
 * which multiply the quad's 4 weights (times the tokens' steps, wq), so the
 * accumulators stay in registers over all the quads and are reduced over
 * their 4 token lanes once. */
T2 static inline __attribute__((always_inline)) void av_ng(const uint8_t *qu, const uint8_t *ql, const bool LO, int rb,
                                                           int k0, int gb, int nquad, const float *wq, size_t ldq,
                                                           const int NG, float *o, int ldo) {
    for (int kk = 0; kk < gb; kk += 2) {
        const int k = k0 + kk;
        __m256 acc[12];
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) acc[2 * g] = acc[2 * g + 1] = _mm256_setzero_ps();
        for (int e = 0; e < nquad; e++) {
            __m256 a, b;
            codes8(qu + (size_t)e * 4 * rb + 4 * k, LO ? ql + (size_t)e * 4 * rb + 4 * k : NULL, LO, &a, &b);
#pragma GCC unroll 6
            for (int g = 0; g < NG; g++) {
                const __m256 x = _mm256_load_ps(wq + (size_t)g * ldq + (size_t)e * 8);
                acc[2 * g] = _mm256_fmadd_ps(x, a, acc[2 * g]);
                acc[2 * g + 1] = _mm256_fmadd_ps(x, b, acc[2 * g + 1]);
            }
        }
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) {
            float ra[8], rbv[8];
            _mm256_storeu_ps(ra, acc[2 * g]);
            _mm256_storeu_ps(rbv, acc[2 * g + 1]);
            float *og = o + (size_t)g * ldo;
            og[kk] += (ra[0] + ra[1]) + (ra[2] + ra[3]);
            og[kk + 1] += (ra[4] + ra[5]) + (ra[6] + ra[7]);
            og[gb + kk] += (rbv[0] + rbv[1]) + (rbv[2] + rbv[3]);
            og[gb + kk + 1] += (rbv[4] + rbv[5]) + (rbv[6] + rbv[7]);
        }
    }
}

#define AV_DISPATCH(LO)                                                                                               \
    switch (nqb) {                                                                                                    \
    case 6: av_ng(qu, ql, LO, rb, gr * gb, gb, nquad, wq, ldq, 6, og, hd); break;                                     \
    case 5: av_ng(qu, ql, LO, rb, gr * gb, gb, nquad, wq, ldq, 5, og, hd); break;                                     \
    case 4: av_ng(qu, ql, LO, rb, gr * gb, gb, nquad, wq, ldq, 4, og, hd); break;                                     \
    case 3: av_ng(qu, ql, LO, rb, gr * gb, gb, nquad, wq, ldq, 3, og, hd); break;                                     \
    case 2: av_ng(qu, ql, LO, rb, gr * gb, gb, nquad, wq, ldq, 2, og, hd); break;                                     \
    default: av_ng(qu, ql, LO, rb, gr * gb, gb, nquad, wq, ldq, 1, og, hd); break;                                    \
    }

#define AV_QUADS 32 /* quads per pass: the scaled weights of 6 queries stay within 6 KiB per group */
#define AV_NG 6

/* Values: tokens outside whole quads go through the reference; whole quads
 * in passes of AV_QUADS, per group of channels, AV_NG queries at a time. */
T2 static void av_avx2(const uint8_t *up, const uint8_t *lo, int t0, const kvq_f16 *ms, int n, int hd, int vg,
                       const float *w, int ldw, int nq, float *out) {
    const int ng = hd / vg, gb = vg / 2, rb = hd / 2;
    if (gb % 2 || hd > 512 || ng > 16) { av_ref(up, lo, t0, ms, n, hd, vg, w, ldw, nq, out); return; }
    int i0 = (4 - t0 % 4) % 4;
    if (i0 > n) i0 = n;
    const int i1 = i0 + (n - i0) / 4 * 4;
    if (i0 > 0) av_ref(up, lo, t0, ms, i0, hd, vg, w, ldw, nq, out);
    if (i1 < n) av_ref(up, lo, t0 + i1, ms + (size_t)i1 * ng * 2, n - i1, hd, vg, w + i1, ldw, nq, out);
    const size_t ldq = (size_t)AV_QUADS * 8;
    _Alignas(32) float wq[AV_NG * AV_QUADS * 8];
    float mn[AV_QUADS * 4], sc[AV_QUADS * 4];
    for (int p0 = i0; p0 < i1; p0 += 4 * AV_QUADS) {
        const int nquad = (i1 - p0) / 4 < AV_QUADS ? (i1 - p0) / 4 : AV_QUADS;
        const uint8_t *qu = up + (size_t)((t0 + p0) >> 2) * 4 * rb;
        const uint8_t *ql = lo ? lo + (size_t)((t0 + p0) >> 2) * 4 * rb : NULL;
        for (int gr = 0; gr < ng; gr++) {
            int i = 0;
            if (ng == 1)
                for (; i + 8 <= 4 * nquad; i += 8) view_ms8_f16c(lo != NULL, ms + (size_t)(p0 + i) * 2, mn + i, sc + i);
            for (; i < 4 * nquad; i++) {
                const kvq_f16 *p = ms + ((size_t)(p0 + i) * ng + gr) * 2;
                view_ms_f16c(lo != NULL, p[0], p[1], &mn[i], &sc[i]);
            }
            for (int g0 = 0; g0 < nq; g0 += AV_NG) {
                const int nqb = nq - g0 < AV_NG ? nq - g0 : AV_NG;
                float *og = out + (size_t)g0 * hd + (size_t)gr * vg;
                for (int g = 0; g < nqb; g++) {
                    const float *wg = w + (size_t)(g0 + g) * ldw + p0;
                    __m128 m4 = _mm_setzero_ps();
                    for (int e = 0; e < nquad; e++) {
                        const __m128 x = _mm_loadu_ps(wg + 4 * e);
                        const __m128 y = _mm_mul_ps(x, _mm_loadu_ps(sc + 4 * e));
                        _mm256_store_ps(wq + (size_t)g * ldq + (size_t)e * 8, _mm256_set_m128(y, y));
                        m4 = _mm_fmadd_ps(x, _mm_loadu_ps(mn + 4 * e), m4);
                    }
                    float r[4];
                    _mm_storeu_ps(r, m4);
                    const float m = (r[0] + r[1]) + (r[2] + r[3]);
                    for (int c = 0; c < vg; c++) og[(size_t)g * hd + c] += m;
                }
                if (lo) {
                    AV_DISPATCH(true)
                } else {
                    AV_DISPATCH(false)
                }
            }
        }
    }
}

static const kvq_hier_kernels H_AVX2 = {qk_avx2, av_avx2};
#endif

const kvq_hier_kernels *kvq_hier_kernels_isa(int isa) {
#if defined(__x86_64__)
    static const void *const T[KVQ_ISA_COUNT] = {&H_REF, &H_AVX2, NULL};
#else
    static const void *const T[KVQ_ISA_COUNT] = {&H_REF};
#endif
    return kvq_isa_pick(isa, T);
}
