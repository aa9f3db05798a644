#include "blk_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "../core/cpu.h"
#include "../core/fp16.h"

#define MAX_HD 1024

static inline size_t blk_bytes(bool q8) { return q8 ? 34 : 18; }

/* Block b of a query as int16 and its scale; both paths use this one. */
static void quant_q16(const float *q, int hd, int16_t *q16, float *sq) {
    for (int b = 0; b < hd / 32; b++) {
        const float *x = q + 32 * b;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        if (!(amax > 0) || !isfinite(amax)) { /* zeros; a NaN query has no meaningful score anyway */
            memset(q16 + 32 * b, 0, 32 * sizeof(int16_t));
            sq[b] = 0;
            continue;
        }
        const float inv = 32767.0f / amax;
        for (int i = 0; i < 32; i++) {
            long v = lrintf(x[i] * inv);
            q16[32 * b + i] = (int16_t)(v > 32767 ? 32767 : v < -32767 ? -32767 : v);
        }
        sq[b] = amax / 32767.0f;
    }
}

static inline int code_at(const uint8_t *blk, bool q8, int i) {
    if (q8) return (int8_t)blk[2 + i];
    return (i < 16 ? blk[2 + i] & 15 : blk[2 + i - 16] >> 4) - 8;
}

static inline float blk_d(const uint8_t *blk) {
    kvq_f16 h;
    memcpy(&h, blk, 2);
    return kvq_f16_to_f32(h);
}

/* one row's score against a quantized query: exact integer block sums, then
 * fmaf in block order (what the SIMD lanes do) */
static float row_score(const uint8_t *row, int nb, bool q8, const int16_t *q16, const float *sq) {
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * blk_bytes(q8);
        int32_t isum = 0;
        for (int i = 0; i < 32; i++) isum += code_at(blk, q8, i) * q16[32 * b + i];
        acc = fmaf((float)isum, blk_d(blk) * sq[b], acc);
    }
    return acc;
}

static void qk_ref(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *q, int nq, float *s,
                   int lds) {
    int16_t q16[MAX_HD];
    float sq[MAX_HD / 32];
    for (int g = 0; g < nq; g++) {
        quant_q16(q + (size_t)g * hd, hd, q16, sq);
        for (int i = 0; i < n; i++) s[(size_t)g * lds + i] = row_score(rows + (size_t)i * stride, hd / 32, q8, q16, sq);
    }
}

static void av_ref(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *w, int ldw, int nq,
                   float *out) {
    for (int i = 0; i < n; i++)
        for (int b = 0; b < hd / 32; b++) {
            const uint8_t *blk = rows + (size_t)i * stride + (size_t)b * blk_bytes(q8);
            const float d = blk_d(blk);
            for (int g = 0; g < nq; g++) {
                const float wd = w[(size_t)g * ldw + i] * d;
                float *o = out + (size_t)g * hd + 32 * b;
                for (int c = 0; c < 32; c++) o[c] = fmaf(wd, (float)code_at(blk, q8, c), o[c]);
            }
        }
}

static const kvq_blk_kernels B_REF = {qk_ref, av_ref};

#if defined(__x86_64__)
#define T2 __attribute__((target("avx2,fma,f16c")))

/* a block's 32 codes as two vectors of 16 int16 (elements 0-15, 16-31) */
T2 static inline __attribute__((always_inline)) void codes16(const uint8_t *blk, const bool q8, __m256i *x0, __m256i *x1) {
    if (q8) {
        *x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2)));
        *x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)));
    } else {
        const __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(15);
        const __m256i eight = _mm256_set1_epi16(8);
        *x0 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m)), eight);
        *x1 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m)), eight);
    }
}

/* lane t = the sum of the 8 lanes of p[t] */
T2 static inline __m256i sum8(const __m256i p[8]) {
    const __m256i a = _mm256_hadd_epi32(p[0], p[1]), b = _mm256_hadd_epi32(p[2], p[3]);
    const __m256i c = _mm256_hadd_epi32(p[4], p[5]), d = _mm256_hadd_epi32(p[6], p[7]);
    const __m256i e = _mm256_hadd_epi32(a, b), f = _mm256_hadd_epi32(c, d);
    return _mm256_add_epi32(_mm256_permute2x128_si256(e, f, 0x20), _mm256_permute2x128_si256(e, f, 0x31));
}

/* NQ (1 or 2) queries, 8 / NQ rows at a time: each row's codes are widened
 * once for all the queries (a GQA group's heads share the rows), each
 * (query, row) pair keeps its block products in 8 int32 lanes, and one
 * transposing reduction puts the pairs' block sums side by side (lane
 * j * R + t: query j, row t). Same arithmetic per query as row_score, so a
 * query's scores do not depend on the other one. */
T2 static inline __attribute__((always_inline)) void qk_rows(const uint8_t *rows, size_t stride, int n, int hd,
                                                             const bool q8, const int NQ, const int16_t *const *q16,
                                                             const float *const *sq, float *const *s) {
    const int R = 8 / NQ;
    const size_t bs = blk_bytes(q8);
    int i = 0;
    for (; i + R <= n; i += R) {
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < hd / 32; b++) {
            __m256i Q[2][2];
            for (int j = 0; j < NQ; j++) {
                Q[j][0] = _mm256_loadu_si256((const __m256i *)(q16[j] + 32 * b));
                Q[j][1] = _mm256_loadu_si256((const __m256i *)(q16[j] + 32 * b + 16));
            }
            __m256i p[8];
            uint16_t dh[8];
            for (int t = 0; t < R; t++) {
                const uint8_t *blk = rows + (size_t)(i + t) * stride + (size_t)b * bs;
                __m256i x0, x1;
                codes16(blk, q8, &x0, &x1);
                for (int j = 0; j < NQ; j++)
                    p[j * R + t] = _mm256_add_epi32(_mm256_madd_epi16(x0, Q[j][0]), _mm256_madd_epi16(x1, Q[j][1]));
                memcpy(&dh[t], blk, 2);
                if (NQ == 2) dh[R + t] = dh[t];
            }
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
            const __m256 sc = NQ == 1 ? _mm256_set1_ps(sq[0][b])
                                      : _mm256_setr_ps(sq[0][b], sq[0][b], sq[0][b], sq[0][b], sq[1][b], sq[1][b],
                                                       sq[1][b], sq[1][b]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum8(p)), _mm256_mul_ps(d, sc), acc);
        }
        if (NQ == 1) {
            _mm256_storeu_ps(s[0] + i, acc);
        } else {
            _mm_storeu_ps(s[0] + i, _mm256_castps256_ps128(acc));
            _mm_storeu_ps(s[1] + i, _mm256_extractf128_ps(acc, 1));
        }
    }
    for (; i < n; i++)
        for (int j = 0; j < NQ; j++) s[j][i] = row_score(rows + (size_t)i * stride, hd / 32, q8, q16[j], sq[j]);
}

T2 static void qk_avx2(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *q, int nq, float *s,
                       int lds) {
    if (hd % 32 || hd > MAX_HD) { qk_ref(rows, stride, n, hd, q8, q, nq, s, lds); return; }
    int16_t q16[2][MAX_HD];
    float sq[2][MAX_HD / 32];
    const int16_t *const qp[2] = {q16[0], q16[1]};
    const float *const sp[2] = {sq[0], sq[1]};
    for (int g = 0, m; g < nq; g += m) {
        m = nq - g >= 2 ? 2 : 1;
        float *out[2] = {s + (size_t)g * lds, s + (size_t)g * lds};
        for (int j = 0; j < m; j++) {
            quant_q16(q + (size_t)(g + j) * hd, hd, q16[j], sq[j]);
            out[j] = s + (size_t)(g + j) * lds;
        }
        if (q8) {
            if (m == 2) qk_rows(rows, stride, n, hd, true, 2, qp, sp, out);
            else qk_rows(rows, stride, n, hd, true, 1, qp, sp, out);
        } else {
            if (m == 2) qk_rows(rows, stride, n, hd, false, 2, qp, sp, out);
            else qk_rows(rows, stride, n, hd, false, 1, qp, sp, out);
        }
    }
}

/* codes 16h .. 16h+15 of a block as two vectors of 8 floats */
T2 static inline __attribute__((always_inline)) void codes_f32(const uint8_t *blk, const bool q8, const int h,
                                                               __m256 *x0, __m256 *x1) {
    if (q8) {
        *x0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 16 * h))));
        *x1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 10 + 16 * h))));
    } else {
        const __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(15);
        const __m128i c = _mm_and_si128(h ? _mm_srli_epi16(raw, 4) : raw, m);
        const __m256i eight = _mm256_set1_epi32(8);
        *x0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(c), eight));
        *x1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(c, 8)), eight));
    }
}

/* NG (<= 4) queries on 16 channels of one block: 8 accumulators in
 * registers over all the rows, each converted row serving every query (the
 * heads of a GQA group) */
T2 static inline __attribute__((always_inline)) void av_ng(const uint8_t *rows, size_t stride, int n, int hd, int b,
                                                           const int h, const bool q8, const float *w, int ldw,
                                                           const int NG, float *out) {
    __m256 a[8];
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
        for (int k = 0; k < 2; k++) a[2 * g + k] = _mm256_loadu_ps(out + (size_t)g * hd + 32 * b + 16 * h + 8 * k);
    for (int i = 0; i < n; i++) {
        const uint8_t *blk = rows + (size_t)i * stride + (size_t)b * blk_bytes(q8);
        kvq_f16 dh;
        memcpy(&dh, blk, 2);
        const float d = _cvtsh_ss(dh);
        __m256 x0, x1;
        codes_f32(blk, q8, h, &x0, &x1);
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) {
            const __m256 wd = _mm256_set1_ps(w[(size_t)g * ldw + i] * d);
            a[2 * g] = _mm256_fmadd_ps(wd, x0, a[2 * g]);
            a[2 * g + 1] = _mm256_fmadd_ps(wd, x1, a[2 * g + 1]);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
        for (int k = 0; k < 2; k++) _mm256_storeu_ps(out + (size_t)g * hd + 32 * b + 16 * h + 8 * k, a[2 * g + k]);
}

#define AV_NG_CASES(Q8, H)                                                                                            \
    switch (ng) {                                                                                                     \
    case 4: av_ng(rows, stride, n, hd, b, H, Q8, wg, ldw, 4, og); break;                                              \
    case 3: av_ng(rows, stride, n, hd, b, H, Q8, wg, ldw, 3, og); break;                                              \
    case 2: av_ng(rows, stride, n, hd, b, H, Q8, wg, ldw, 2, og); break;                                              \
    default: av_ng(rows, stride, n, hd, b, H, Q8, wg, ldw, 1, og); break;                                             \
    }

T2 static void av_avx2(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *w, int ldw, int nq,
                       float *out) {
    if (hd % 32) { av_ref(rows, stride, n, hd, q8, w, ldw, nq, out); return; }
    for (int g = 0; g < nq; g += 4) {
        const int ng = nq - g < 4 ? nq - g : 4;
        const float *wg = w + (size_t)g * ldw;
        float *og = out + (size_t)g * hd;
        for (int b = 0; b < hd / 32; b++) {
            if (q8) {
                AV_NG_CASES(true, 0)
                AV_NG_CASES(true, 1)
            } else {
                AV_NG_CASES(false, 0)
                AV_NG_CASES(false, 1)
            }
        }
    }
}

static const kvq_blk_kernels B_AVX2 = {qk_avx2, av_avx2};
#endif

const kvq_blk_kernels *kvq_blk_kernels_isa(int isa) {
#if defined(__x86_64__)
    static const void *const T[KVQ_ISA_COUNT] = {&B_REF, &B_AVX2, NULL};
#else
    static const void *const T[KVQ_ISA_COUNT] = {&B_REF};
#endif
    return kvq_isa_pick(isa, T);
}
