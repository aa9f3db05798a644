#include "hier_kernels.h"
#include "hier_x86.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "../core/cpu.h"
#include "../kernels/simd_x86.h"
#include "int_weights.h"
#include "kivi_kernels.h"
#include "kvquant.h"

/* ------------------------------------------------------------------ scalar */

/* The integer query of one block: x_d = q_d s_d / alpha with alpha = max |q_d s_d| / 127,
 * qi_d = round(x_d), and for the target view a low part ql_d = round(128 (x_d - qi_d))
 * (|ql_d| <= 64); *base = sum_d q_d m_d. */
static void query_int(const float *q, const float *mn, const float *sc, int hd, int8_t *qi, int8_t *ql, float *alpha,
                      float *base) {
    float amax = 0, b = 0;
    for (int d = 0; d < hd; d++) {
        const float x = q[d] * sc[d];
        amax = fabsf(x) > amax ? fabsf(x) : amax;
        b += q[d] * mn[d];
    }
    const float inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int d = 0; d < hd; d++) {
        const float x = q[d] * sc[d] * inv, r = rintf(x); /* within +-127 unless q is not finite */
        qi[d] = (int8_t)(r >= -127 && r <= 127 ? r : r > 127 ? 127 : -127);
        if (ql) {
            const float e = rintf((x - r) * 128.0f);
            ql[d] = (int8_t)(e >= -64 && e <= 64 ? e : 0);
        }
    }
    *alpha = amax / 127.0f;
    *base = b;
}

/* A code's integer product in a view: the draft view's 4-bit code against the
 * high part; the target view's 8-bit code 16 U + L against high + low / 128,
 * times 128, without the low part's product with L (1/2048 of the sum, below
 * the 8-bit code's own rounding). The kernels sum the same three products. */
static inline int32_t view_prod(bool target, int u, int l, int hi, int lo) {
    return target ? 2048 * hi * u + 128 * hi * l + 16 * lo * u : hi * u;
}
#define VIEW_DIV(target) ((target) ? 128.0f : 1.0f)

static void qk_ref(const uint8_t *up, const uint8_t *lo, const kvq_f16 *ms, int G, int hd, const float *q, int nq,
                   float *s, int lds) {
    const bool tg = lo != NULL;
    float mn[1024], sc[1024], alpha, base;
    int8_t qi[1024], ql[1024];
    for (int d = 0; d < hd; d++) kvq_hier_view_ms(tg, ms[d], ms[hd + d], &mn[d], &sc[d]);
    for (int g = 0; g < nq; g++) {
        query_int(q + (size_t)g * hd, mn, sc, hd, qi, tg ? ql : NULL, &alpha, &base);
        for (int j = 0; j < G; j++) {
            int32_t acc = 0;
            for (int d = 0; d < hd; d++)
                acc += view_prod(tg, kvq_hier_kcode(up, hd, j, d), tg ? kvq_hier_kcode(lo, hd, j, d) : 0, qi[d],
                                 tg ? ql[d] : 0);
            s[(size_t)g * lds + j] = fmaf(alpha / VIEW_DIV(tg), (float)acc, base);
        }
    }
}

/* The integer weights of one pass, group and query: y_i = w_i s_i / beta with
 * beta = max_i w_i s_i / 255, wq_i = round(y_i) clamped to [0, 255], and for
 * the target view wl_i = round(128 (y_i - wq_i)); *m = sum_i w_i m_i. */
static void weights_int(const float *w, const float *mn, const float *sc, int n, uint8_t *wq, int8_t *wl, float *beta,
                        float *m) {
    float wmax = 0, acc = 0;
    for (int i = 0; i < n; i++) {
        const float x = w[i] * sc[i];
        wmax = x > wmax ? x : wmax;
        acc += w[i] * mn[i];
    }
    const float inv = wmax > 0 ? 255.0f / wmax : 0.0f;
    for (int i = 0; i < n; i++) {
        const float y = w[i] * sc[i] * inv, r = rintf(y);
        wq[i] = (uint8_t)(r >= 0 && r <= 255 ? r : r > 255 ? 255 : 0);
        if (wl) {
            const float e = rintf((y - r) * 128.0f);
            wl[i] = (int8_t)(e >= -64 && e <= 64 ? e : 0);
        }
    }
    *beta = wmax / 255.0f;
    *m = acc;
}

static void av_ref(const uint8_t *up, const uint8_t *lo, int t0, const kvq_f16 *ms, int n, int hd, int vg,
                   const float *w, int ldw, int nq, float *out) {
    const bool tg = lo != NULL;
    const int ng = hd / vg, gb = vg / 2, rb = hd / 2;
    float mn[KVQ_HIER_AV_PASS], sc[KVQ_HIER_AV_PASS], beta, m;
    uint8_t wq[KVQ_HIER_AV_PASS], ur[512], lr[512];
    int8_t wl[KVQ_HIER_AV_PASS];
    int32_t acc[1024];
    for (int p0 = 0; p0 < n; p0 += KVQ_HIER_AV_PASS) {
        const int np = n - p0 < KVQ_HIER_AV_PASS ? n - p0 : KVQ_HIER_AV_PASS;
        for (int gr = 0; gr < ng; gr++) {
            for (int i = 0; i < np; i++) {
                const kvq_f16 *p = ms + ((size_t)(p0 + i) * ng + gr) * 2;
                kvq_hier_view_ms(tg, p[0], p[1], &mn[i], &sc[i]);
            }
            for (int g = 0; g < nq; g++) {
                weights_int(w + (size_t)g * ldw + p0, mn, sc, np, wq, tg ? wl : NULL, &beta, &m);
                memset(acc, 0, (size_t)vg * sizeof *acc);
                for (int i = 0; i < np; i++) {
                    kvq_vrow_get(up, t0 + p0 + i, rb, ur);
                    if (tg) kvq_vrow_get(lo, t0 + p0 + i, rb, lr);
                    for (int c = 0; c < vg; c++)
                        acc[c] += view_prod(tg, kvq_code_at(ur + gr * gb, vg, 4, c),
                                            tg ? kvq_code_at(lr + gr * gb, vg, 4, c) : 0, wq[i], tg ? wl[i] : 0);
                }
                float *o = out + (size_t)g * hd + (size_t)gr * vg;
                for (int c = 0; c < vg; c++) o[c] += fmaf(beta / VIEW_DIV(tg), (float)acc[c], m);
            }
        }
    }
}

static const kvq_hier_kernels H_REF = {qk_ref, av_ref};

#if defined(__x86_64__)
#define T2 __attribute__((target("avx2,fma,f16c")))

/* 8 channels' (m, s4) -> a view's (mn, sc) on F16C: the roundings of
 * kvq_hier_view_ms (nearest even), a few instructions instead of the portable
 * conversions, which would cost more than a block's dot products. */
T2 static inline void view_ms8(bool target, __m128i m, __m128i s, __m256 *mn, __m256 *sc) {
    if (target) {
        const __m256 fm = _mm256_cvtph_ps(m), fs = _mm256_cvtph_ps(s);
        m = _mm256_cvtps_ph(_mm256_fnmadd_ps(_mm256_set1_ps(0.5f), fs, fm), _MM_FROUND_TO_NEAREST_INT);
        s = _mm256_cvtps_ph(_mm256_mul_ps(fs, _mm256_set1_ps(1.0f / 16.0f)), _MM_FROUND_TO_NEAREST_INT);
        s = _mm_blendv_epi8(s, _mm_set1_epi16(1), _mm_cmpeq_epi16(s, _mm_setzero_si128()));
    }
    *mn = _mm256_cvtph_ps(m);
    *sc = _mm256_cvtph_ps(s);
}

T2 static inline void view_ms1(bool target, kvq_f16 m, kvq_f16 s, float *mn, float *sc) {
    __m256 a, b;
    view_ms8(target, _mm_cvtsi32_si128(m), _mm_cvtsi32_si128(s), &a, &b);
    *mn = _mm256_cvtss_f32(a);
    *sc = _mm256_cvtss_f32(b);
}

/* 8 int32 -> 8 signed bytes, saturating (the query). */
T2 static inline void store8_i8(int8_t *p, __m256i v) {
    const __m128i a = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(a, a));
}

/* One product of a view for NG (compile-time) queries and a tile row of 8
 * tokens: per load of 8 channels of a plane, the low and high nibbles against
 * the query's 8-bit parts 4 channels at a time (pmaddubsw), summed in int16
 * over 4 loads (at most 8 products of 4-bit codes and int8: 30480 < 32767),
 * then widened and scaled by the product's weight (pmaddwd). */
T2 static inline __attribute__((always_inline)) void qk_prod(const uint8_t *p, const int8_t *qv, int ldq, int hd8,
                                                             __m256i mul, const int NG, __m256i *acc) {
    const __m256i m15 = _mm256_set1_epi8(15);
    for (int k0 = 0; k0 < hd8; k0 += 4) {
        const int ke = k0 + 4 < hd8 ? k0 + 4 : hd8;
        __m256i a16[4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) a16[g] = _mm256_setzero_si256();
        for (int k = k0; k < ke; k++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(p + (size_t)k * 32));
            const __m256i xl = _mm256_and_si256(x, m15), xh = _mm256_and_si256(_mm256_srli_epi16(x, 4), m15);
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) {
                const int8_t *qg = qv + (size_t)g * ldq + 8 * k;
                a16[g] = _mm256_add_epi16(a16[g], _mm256_maddubs_epi16(xl, kvq_bcast4_avx2(qg)));
                a16[g] = _mm256_add_epi16(a16[g], _mm256_maddubs_epi16(xh, kvq_bcast4_avx2(qg + 4)));
            }
        }
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) acc[g] = _mm256_add_epi32(acc[g], _mm256_madd_epi16(a16[g], mul));
    }
}

/* Scores of NG queries for one block, tile row by tile row: the draft view's
 * one product, the target view's three (view_prod). */
T2 static inline __attribute__((always_inline)) void qk_int(const uint8_t *up, const uint8_t *lo, const bool LO, int G,
                                                            int hd, const int8_t *qh, const int8_t *ql, int ldq,
                                                            const float *al, const float *bs, const int NG, float *s,
                                                            int lds) {
    const int hd8 = hd >> 3;
    for (int o = 0; o < G >> 3; o++) {
        const size_t off = (size_t)o * hd8 * 32;
        for (size_t b = off + 2 * (size_t)hd8 * 32; b < off + 3 * (size_t)hd8 * 32; b += 64) { /* 2 rows ahead */
            __builtin_prefetch(up + b);
            if (LO) __builtin_prefetch(lo + b);
        }
        __m256i acc[4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) acc[g] = _mm256_setzero_si256();
        if (LO) {
            qk_prod(up + off, qh, ldq, hd8, _mm256_set1_epi16(2048), NG, acc);
            qk_prod(up + off, ql, ldq, hd8, _mm256_set1_epi16(16), NG, acc);
            qk_prod(lo + off, qh, ldq, hd8, _mm256_set1_epi16(128), NG, acc);
        } else {
            qk_prod(up + off, qh, ldq, hd8, _mm256_set1_epi16(1), NG, acc);
        }
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++)
            _mm256_storeu_ps(s + (size_t)g * lds + 8 * o,
                             _mm256_fmadd_ps(_mm256_set1_ps(al[g]), _mm256_cvtepi32_ps(acc[g]), _mm256_set1_ps(bs[g])));
    }
}

#define QK_NG 4 /* queries per pass over a block: 4 int32 and 4 int16 accumulators, 2 code vectors, 2 constants */

T2 void kvq_hier_kms_avx2(bool tg, const kvq_f16 *ms, int hd, float *mn, float *sc) {
    for (int d = 0; d < hd; d += 8) {
        __m256 a, b;
        view_ms8(tg, _mm_loadu_si128((const __m128i *)(ms + d)), _mm_loadu_si128((const __m128i *)(ms + hd + d)), &a, &b);
        _mm256_storeu_ps(mn + d, a);
        _mm256_storeu_ps(sc + d, b);
    }
}

/* ng queries as int8 (hd % 8 == 0): qh[g*ldq + d] and, for the target view,
 * the low parts ql; al[g] the integer sum's scale (the view's divisor
 * included), bs[g] = sum_d q_d mn_d. */
T2 static void kvq_hier_qint_avx2(bool tg, const float *q, int ng, int hd, const float *mn, const float *sc, int8_t *qh,
                           int8_t *ql, int ldq, float *al, float *bs) {
    for (int g = 0; g < ng; g++) {
        const float *qg = q + (size_t)g * hd;
        float amax, base;
        kvq_qstats_avx2(qg, mn, sc, hd, &amax, &base);
        const __m256 inv = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
        for (int d = 0; d < hd; d += 8) {
            const __m256 x = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(qg + d), _mm256_loadu_ps(sc + d)), inv);
            const __m256i h = _mm256_cvtps_epi32(x);
            store8_i8(qh + (size_t)g * ldq + d, h);
            if (tg)
                store8_i8(ql + (size_t)g * ldq + d,
                          _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(x, _mm256_cvtepi32_ps(h)), _mm256_set1_ps(128.0f))));
        }
        al[g] = amax / 127.0f / VIEW_DIV(tg);
        bs[g] = base;
    }
}

T2 static void qk_avx2(const uint8_t *up, const uint8_t *lo, const kvq_f16 *ms, int G, int hd, const float *q, int nq,
                       float *s, int lds) {
    if (G % 8 || hd % 8 || hd > 1024) { qk_ref(up, lo, ms, G, hd, q, nq, s, lds); return; }
    const bool tg = lo != NULL;
    _Alignas(32) float mn[1024], sc[1024];
    _Alignas(32) int8_t qh[QK_NG * 1024], ql[QK_NG * 1024];
    float al[QK_NG], bs[QK_NG];
    kvq_hier_kms_avx2(tg, ms, hd, mn, sc);
    for (int g0 = 0; g0 < nq; g0 += QK_NG) {
        const int ng = nq - g0 < QK_NG ? nq - g0 : QK_NG;
        kvq_hier_qint_avx2(tg, q + (size_t)g0 * hd, ng, hd, mn, sc, qh, ql, 1024, al, bs);
        float *sg = s + (size_t)g0 * lds;
#define QK_CASE(N)                                                                                                    \
    if (tg) qk_int(up, lo, true, G, hd, qh, ql, 1024, al, bs, N, sg, lds);                                            \
    else qk_int(up, NULL, false, G, hd, qh, NULL, 1024, al, bs, N, sg, lds);
        switch (ng) {
        case 4: QK_CASE(4) break;
        case 3: QK_CASE(3) break;
        case 2: QK_CASE(2) break;
        default: QK_CASE(1) break;
        }
#undef QK_CASE
    }
}

/* One product of a view for NG (compile-time) queries over nquad quads and
 * 8 row bytes at kb of each (16 channels: 8 in low nibbles, 8 in high), against
 * the quads' 4 weights (pmaddubsw; 8-bit weights unsigned, their signed low
 * parts (SW) in the other operand), summed in int16 over 4 quads (at most 8
 * products of 8-bit weights and 4-bit codes: 30600), then widened and scaled
 * by the product's weight (pmaddwd). */
T2 static inline __attribute__((always_inline)) void av_prod(const uint8_t *p, size_t qstride, int e0, int ee,
                                                             const uint8_t *wv8, int ldq, const bool SW, __m256i mul,
                                                             const int NG, int32_t *isum, int ldi, int gb) {
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256i l16[4], h16[4];
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++) l16[g] = h16[g] = _mm256_setzero_si256();
    for (int e = e0; e < ee; e++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(p + (size_t)e * qstride));
        const __m256i xl = _mm256_and_si256(x, m15), xh = _mm256_and_si256(_mm256_srli_epi16(x, 4), m15);
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) {
            const __m256i wv = kvq_bcast4_avx2((const int8_t *)wv8 + (size_t)g * ldq + 4 * e);
            l16[g] = _mm256_add_epi16(l16[g], SW ? _mm256_maddubs_epi16(xl, wv) : _mm256_maddubs_epi16(wv, xl));
            h16[g] = _mm256_add_epi16(h16[g], SW ? _mm256_maddubs_epi16(xh, wv) : _mm256_maddubs_epi16(wv, xh));
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++) {
        __m256i *lo = (__m256i *)(isum + (size_t)g * ldi), *hi = (__m256i *)(isum + (size_t)g * ldi + gb);
        _mm256_storeu_si256(lo, _mm256_add_epi32(_mm256_loadu_si256(lo), _mm256_madd_epi16(l16[g], mul)));
        _mm256_storeu_si256(hi, _mm256_add_epi32(_mm256_loadu_si256(hi), _mm256_madd_epi16(h16[g], mul)));
    }
}

/* Values of NG queries for one group's gb row bytes from byte kb0: the draft
 * view's one product, the target view's three (view_prod), 4 quads at a time
 * in the order the rows are stored, so the codes stream from memory in order.
 * isum[g*ldi + c] (zeroed here): channel c of the group. */
T2 static inline __attribute__((always_inline)) void av_int(const uint8_t *qu, const uint8_t *ql, const bool LO,
                                                            size_t qstride, int kb0, int gb, int nquad,
                                                            const uint8_t *wq, const uint8_t *wl, int ldq, const int NG,
                                                            int32_t *isum, int ldi) {
    for (int g = 0; g < NG; g++) memset(isum + (size_t)g * ldi, 0, 2 * (size_t)gb * sizeof *isum);
    for (int e0 = 0; e0 < nquad; e0 += 4) {
        const int ee = e0 + 4 < nquad ? e0 + 4 : nquad;
        if (kb0 == 0) /* a few quads ahead: a single core's misses, left to the hardware, cost a third of the time */
            for (size_t b = (size_t)(e0 + 8) * qstride; b < (size_t)(e0 + 12) * qstride; b += 64) {
                __builtin_prefetch(qu + b);
                if (LO) __builtin_prefetch(ql + b);
            }
        for (int kk = 0; kk < gb; kk += 8) {
            const size_t off = 4 * (size_t)(kb0 + kk);
            int32_t *is = isum + kk;
            if (LO) {
                av_prod(qu + off, qstride, e0, ee, wq, ldq, false, _mm256_set1_epi16(2048), NG, is, ldi, gb);
                av_prod(qu + off, qstride, e0, ee, wl, ldq, true, _mm256_set1_epi16(16), NG, is, ldi, gb);
                av_prod(ql + off, qstride, e0, ee, wq, ldq, false, _mm256_set1_epi16(128), NG, is, ldi, gb);
            } else {
                av_prod(qu + off, qstride, e0, ee, wq, ldq, false, _mm256_set1_epi16(1), NG, is, ldi, gb);
            }
        }
    }
}

#define AV_NG 4 /* queries per pass over the codes: 8 int16 accumulators, 2 code vectors, a mask, a weight */

T2 void kvq_hier_vms_avx2(bool tg, const kvq_f16 *ms, int np, int ng, int gr, float *mn, float *sc) {
    int i = 0;
    if (ng == 1)
        for (; i + 8 <= np; i += 8) {
            /* 8 (m, s) pairs -> 8 m and 8 s */
            const __m256i x = _mm256_loadu_si256((const __m256i *)(ms + (size_t)i * 2));
            const __m256i lo16 = _mm256_set1_epi32(0xffff);
            const __m256i y =
                _mm256_permute4x64_epi64(_mm256_packus_epi32(_mm256_and_si256(x, lo16), _mm256_srli_epi32(x, 16)), 0xd8);
            __m256 a, b;
            view_ms8(tg, _mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1), &a, &b);
            _mm256_storeu_ps(mn + i, a);
            _mm256_storeu_ps(sc + i, b);
        }
    for (; i < np; i++) {
        const kvq_f16 *p = ms + ((size_t)i * ng + gr) * 2;
        view_ms1(tg, p[0], p[1], &mn[i], &sc[i]);
    }
}

/* One query's weights over a pass of np tokens starting at byte off of nquad
 * quads (4 * nquad bytes, zero outside the pass): wq 8 unsigned bits, wl (the
 * target view's) signed low parts; beta the scale (the view's divisor
 * included), mt = sum_i w_i mn_i. */
T2 static void kvq_hier_wint_avx2(bool tg, const float *wg, const float *mn, const float *sc, int np, int off, int nquad,
                           uint8_t *wq, int8_t *wl, float *beta, float *mt) {
    float wmax;
    kvq_wstats_avx2(wg, mn, sc, np, &wmax, mt);
    const float inv = wmax > 0 ? 255.0f / wmax : 0.0f;
    memset(wq, 0, (size_t)(4 * nquad));
    if (tg) memset(wl, 0, (size_t)(4 * nquad));
    kvq_wquant_avx2(wg, sc, np, inv, wq + off, tg ? wl + off : NULL);
    *beta = wmax / 255.0f / VIEW_DIV(tg);
}

/* Values: per pass of up to KVQ_HIER_AV_PASS tokens and per group, each query's
 * weights are rounded to 8 bits (zero outside the range, so partial quads at
 * either end cost nothing special), the integer sums run over whole quads,
 * and out += beta * sum + m, as the reference computes it. */
T2 static void av_avx2(const uint8_t *up, const uint8_t *lo, int t0, const kvq_f16 *ms, int n, int hd, int vg,
                       const float *w, int ldw, int nq, float *out) {
    const int ng = hd / vg, gb = vg / 2, rb = hd / 2;
    if (gb % 8 || hd > 1024) { av_ref(up, lo, t0, ms, n, hd, vg, w, ldw, nq, out); return; }
    enum { LDQ = KVQ_HIER_AV_PASS + 8 };
    _Alignas(32) float mn[KVQ_HIER_AV_PASS], sc[KVQ_HIER_AV_PASS];
    _Alignas(32) uint8_t wq[AV_NG * LDQ], wl[AV_NG * LDQ];
    const bool tg = lo != NULL;
    _Alignas(32) int32_t isum[AV_NG * 512];
    const size_t qstride = 4 * (size_t)rb;
    for (int p0 = 0; p0 < n; p0 += KVQ_HIER_AV_PASS) {
        const int np = n - p0 < KVQ_HIER_AV_PASS ? n - p0 : KVQ_HIER_AV_PASS, ta = t0 + p0, off = ta & 3;
        const int nquad = (off + np + 3) >> 2;
        const uint8_t *qu = up + (size_t)(ta >> 2) * qstride, *ql = lo ? lo + (size_t)(ta >> 2) * qstride : NULL;
        for (int gr = 0; gr < ng; gr++) {
            kvq_hier_vms_avx2(tg, ms + (size_t)p0 * ng * 2, np, ng, gr, mn, sc);
            for (int g0 = 0; g0 < nq; g0 += AV_NG) {
                const int nb = nq - g0 < AV_NG ? nq - g0 : AV_NG;
                float beta[AV_NG], mt[AV_NG];
                for (int g = 0; g < nb; g++)
                    kvq_hier_wint_avx2(tg, w + (size_t)(g0 + g) * ldw + p0, mn, sc, np, off, nquad, wq + (size_t)g * LDQ,
                                       tg ? (int8_t *)wl + (size_t)g * LDQ : NULL, &beta[g], &mt[g]);
                const int kb0 = gr * gb;
#define AV_CASE(N)                                                                                                    \
    if (tg) av_int(qu, ql, true, qstride, kb0, gb, nquad, wq, wl, LDQ, N, isum, 512);                                  \
    else av_int(qu, NULL, false, qstride, kb0, gb, nquad, wq, NULL, LDQ, N, isum, 512);
                switch (nb) {
                case 4: AV_CASE(4) break;
                case 3: AV_CASE(3) break;
                case 2: AV_CASE(2) break;
                default: AV_CASE(1) break;
                }
#undef AV_CASE
                for (int g = 0; g < nb; g++) {
                    float *o = out + (size_t)(g0 + g) * hd + (size_t)gr * vg;
                    const __m256 be = _mm256_set1_ps(beta[g]), m8 = _mm256_set1_ps(mt[g]);
                    for (int c = 0; c < vg; c += 8) {
                        const __m256 v = _mm256_cvtepi32_ps(_mm256_load_si256((const __m256i *)(isum + (size_t)g * 512 + c)));
                        _mm256_storeu_ps(o + c, _mm256_add_ps(_mm256_loadu_ps(o + c), _mm256_fmadd_ps(be, v, m8)));
                    }
                }
            }
        }
    }
}

static const kvq_hier_kernels H_AVX2 = {qk_avx2, av_avx2};
#endif

const kvq_hier_kernels *kvq_hier_kernels_isa(int isa) {
#if defined(__x86_64__)
    static const void *const T[KVQ_ISA_COUNT] = {&H_REF, &H_AVX2, &kvq_hier_k_avx512};
#else
    static const void *const T[KVQ_ISA_COUNT] = {&H_REF};
#endif
    return kvq_isa_pick(isa, T);
}
