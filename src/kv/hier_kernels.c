#include "hier_kernels.h"

#include <immintrin.h>
#include <string.h>
#include "../core/cpu.h"
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

/* 8 bytes of codes -> the low and high nibbles as 8 ints each; with a lower
 * plane, the 8-bit codes 16 U + L. */
T2 static inline void codes8(const uint8_t *up, const uint8_t *lo, __m256 *flo, __m256 *fhi) {
    const __m256i m15 = _mm256_set1_epi32(15);
    __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)up));
    __m256i a = _mm256_and_si256(x, m15), b = _mm256_srli_epi32(x, 4);
    if (lo) {
        __m256i y = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)lo));
        a = _mm256_add_epi32(_mm256_slli_epi32(a, 4), _mm256_and_si256(y, m15));
        b = _mm256_add_epi32(_mm256_slli_epi32(b, 4), _mm256_srli_epi32(y, 4));
    }
    *flo = _mm256_cvtepi32_ps(a);
    *fhi = _mm256_cvtepi32_ps(b);
}

/* Keys: 8 tokens j and 8 tokens G/2 + j per 8-byte load, 4 queries at a time. */
T2 static void qk_avx2(const uint8_t *up, const uint8_t *lo, const kvq_f16 *ms, int G, int hd, const float *q, int nq,
                       float *s, int lds) {
    if (G % 16 || hd > 1024) { qk_ref(up, lo, ms, G, hd, q, nq, s, lds); return; }
    const int nb = G / 2;
    float mn[1024], sc[1024], qs[4][1024];
    for (int d = 0; d < hd; d++) kvq_hier_view_ms(lo != NULL, ms[d], ms[hd + d], &mn[d], &sc[d]);
    for (int g0 = 0; g0 < nq; g0 += 4) {
        const int ng = nq - g0 < 4 ? nq - g0 : 4;
        float base[4] = {0};
        for (int g = 0; g < ng; g++) {
            const float *qg = q + (size_t)(g0 + g) * hd;
            for (int d = 0; d < hd; d++) {
                qs[g][d] = qg[d] * sc[d];
                base[g] += qg[d] * mn[d];
            }
        }
        for (int k0 = 0; k0 < nb; k0 += 8) {
            __m256 acc[8];
            for (int g = 0; g < ng; g++) acc[2 * g] = acc[2 * g + 1] = _mm256_set1_ps(base[g]);
            for (int d = 0; d < hd; d++) {
                __m256 a, b;
                codes8(up + (size_t)d * nb + k0, lo ? lo + (size_t)d * nb + k0 : NULL, &a, &b);
                for (int g = 0; g < ng; g++) {
                    const __m256 x = _mm256_set1_ps(qs[g][d]);
                    acc[2 * g] = _mm256_fmadd_ps(x, a, acc[2 * g]);
                    acc[2 * g + 1] = _mm256_fmadd_ps(x, b, acc[2 * g + 1]);
                }
            }
            for (int g = 0; g < ng; g++) {
                _mm256_storeu_ps(s + (size_t)(g0 + g) * lds + k0, acc[2 * g]);
                _mm256_storeu_ps(s + (size_t)(g0 + g) * lds + nb + k0, acc[2 * g + 1]);
            }
        }
    }
}

/* Values: a quad of 4 tokens at a time straight from the interleaved rows.
 * An 8-byte load holds channels k, k+1 (low nibbles) and k+gb, k+gb+1 (high)
 * of the 4 tokens; the products accumulate per (channel, token) lane and the
 * 4 token lanes are summed once at the end. */
T2 static void av_avx2(const uint8_t *up, const uint8_t *lo, int t0, const kvq_f16 *ms, int n, int hd, int vg,
                       const float *w, int ldw, int nq, float *out) {
    const int ng = hd / vg, gb = vg / 2, rb = hd / 2;
    if (gb % 2 || hd > 512 || ng > 64) { av_ref(up, lo, t0, ms, n, hd, vg, w, ldw, nq, out); return; }
    float A[4][4 * 512];
    for (int g0 = 0; g0 < nq; g0 += 4) {
        const int nqb = nq - g0 < 4 ? nq - g0 : 4;
        const float *wb = w + (size_t)g0 * ldw;
        float *ob = out + (size_t)g0 * hd;
        float mm[4][64];
        memset(A, 0, sizeof A);
        memset(mm, 0, sizeof mm);
        int i = 0;
        while (i < n) {
            const int t = t0 + i;
            if (t % 4 || i + 4 > n) { /* a token outside a whole quad */
                av_ref(up, lo, t, ms + (size_t)i * ng * 2, 1, hd, vg, wb + i, ldw, nqb, ob);
                i++;
                continue;
            }
            const uint8_t *qu = up + (size_t)(t >> 2) * 4 * rb, *ql = lo ? lo + (size_t)(t >> 2) * 4 * rb : NULL;
            for (int gr = 0; gr < ng; gr++) {
                float m4[4], s4[4];
                for (int e = 0; e < 4; e++) {
                    const kvq_f16 *p = ms + ((size_t)(i + e) * ng + gr) * 2;
                    kvq_hier_view_ms(lo != NULL, p[0], p[1], &m4[e], &s4[e]);
                }
                __m256 wv[4];
                for (int g = 0; g < nqb; g++) {
                    const float *wg = wb + (size_t)g * ldw + i;
                    const __m128 ws = _mm_mul_ps(_mm_loadu_ps(wg), _mm_loadu_ps(s4));
                    wv[g] = _mm256_set_m128(ws, ws);
                    for (int e = 0; e < 4; e++) mm[g][gr] += wg[e] * m4[e];
                }
                for (int kk = 0; kk < gb; kk += 2) {
                    const int k = gr * gb + kk;
                    __m256 a, b;
                    codes8(qu + 4 * k, ql ? ql + 4 * k : NULL, &a, &b);
                    const size_t ia = (size_t)(gr * vg + kk) * 4, ib = (size_t)(gr * vg + gb + kk) * 4;
                    for (int g = 0; g < nqb; g++) {
                        _mm256_storeu_ps(&A[g][ia], _mm256_fmadd_ps(wv[g], a, _mm256_loadu_ps(&A[g][ia])));
                        _mm256_storeu_ps(&A[g][ib], _mm256_fmadd_ps(wv[g], b, _mm256_loadu_ps(&A[g][ib])));
                    }
                }
            }
            i += 4;
        }
        for (int g = 0; g < nqb; g++)
            for (int c = 0; c < hd; c++) {
                const float *a = &A[g][(size_t)c * 4];
                ob[(size_t)g * hd + c] += (a[0] + a[1]) + (a[2] + a[3]) + mm[g][c / vg];
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
