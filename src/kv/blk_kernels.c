#include "blk_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "../core/cpu.h"
#include "../core/fp16.h"
#include "../kernels/simd_x86.h"

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

/* Values in integers: per pass of AV_PASS rows, block and query, the weights
 * w_i d_i (d the row's block scale) are rounded to 16-bit integers (beta =
 * max |w_i d_i| / AV_WMAX, error at most 1/65534 of the largest, far below
 * an 8-bit code's), summed against the exact codes, and out += beta * sum.
 * In f32 each code cost a conversion and a multiply-add per query; this way
 * the AVX2 kernel multiplies two tokens' codes by their weights in one
 * pmaddwd. Both paths compute the same integer sums and the same roundings. */
#define AV_PASS 256
#define AV_WMAX 32767 /* AV_PASS / 2 pairs of 2 x 32767 x 128: 1.07e9 < 2^31 */

static inline int32_t wround(float x) {
    const float r = rintf(x);
    return r >= -AV_WMAX ? (r <= AV_WMAX ? (int32_t)r : AV_WMAX) : -AV_WMAX; /* a NaN weight counts as -max */
}

/* the pass's weights of one query and block: wq_i, beta; returns sum_i wq_i */
static int32_t weights_q(const float *w, const float *d, int n, int32_t *wq, float *beta) {
    float amax = 0;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(w[i] * d[i]));
    const float inv = amax > 0 ? (float)AV_WMAX / amax : 0.0f;
    int32_t sum = 0;
    for (int i = 0; i < n; i++) sum += wq[i] = wround(w[i] * d[i] * inv);
    *beta = amax / (float)AV_WMAX;
    return sum;
}

static void av_ref(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *w, int ldw, int nq,
                   float *out) {
    float d[AV_PASS], beta;
    int32_t wq[AV_PASS];
    for (int p0 = 0; p0 < n; p0 += AV_PASS) {
        const int np = n - p0 < AV_PASS ? n - p0 : AV_PASS;
        for (int b = 0; b < hd / 32; b++) {
            for (int i = 0; i < np; i++) d[i] = blk_d(rows + (size_t)(p0 + i) * stride + (size_t)b * blk_bytes(q8));
            for (int g = 0; g < nq; g++) {
                weights_q(w + (size_t)g * ldw + p0, d, np, wq, &beta);
                float *o = out + (size_t)g * hd + 32 * b;
                for (int c = 0; c < 32; c++) {
                    int32_t acc = 0;
                    for (int i = 0; i < np; i++)
                        acc += wq[i] * code_at(rows + (size_t)(p0 + i) * stride + (size_t)b * blk_bytes(q8), q8, c);
                    o[c] = fmaf(beta, (float)acc, o[c]);
                }
            }
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

/* NQ (1, 2 or 4) queries, 8 / NQ rows at a time: each row's codes are widened
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
            __m256i Q[4][2];
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
                for (int j = 1; j < NQ; j++) dh[j * R + t] = dh[t];
            }
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
            const __m256 sc = NQ == 1   ? _mm256_set1_ps(sq[0][b])
                              : NQ == 2 ? _mm256_setr_ps(sq[0][b], sq[0][b], sq[0][b], sq[0][b], sq[1][b], sq[1][b],
                                                         sq[1][b], sq[1][b])
                                        : _mm256_setr_ps(sq[0][b], sq[0][b], sq[1][b], sq[1][b], sq[2][b], sq[2][b],
                                                         sq[3][b], sq[3][b]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum8(p)), _mm256_mul_ps(d, sc), acc);
        }
        if (NQ == 1) {
            _mm256_storeu_ps(s[0] + i, acc);
        } else if (NQ == 2) {
            _mm_storeu_ps(s[0] + i, _mm256_castps256_ps128(acc));
            _mm_storeu_ps(s[1] + i, _mm256_extractf128_ps(acc, 1));
        } else {
            float r[8];
            _mm256_storeu_ps(r, acc);
            for (int j = 0; j < 4; j++) memcpy(s[j] + i, r + 2 * j, 2 * sizeof(float));
        }
    }
    for (; i < n; i++)
        for (int j = 0; j < NQ; j++) s[j][i] = row_score(rows + (size_t)i * stride, hd / 32, q8, q16[j], sq[j]);
}

/* quant_q16 in vectors, the same roundings (max is exact, cvtps rounds to
 * nearest even as lrintf does): it ran per call and query in scalar code,
 * a tenth of the keys' time at 128 rows a call. */
T2 static void quant_q16_avx2(const float *q, int hd, int16_t *q16, float *sq) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < hd / 32; b++) {
        const float *x = q + 32 * b;
        __m256 m = _mm256_andnot_ps(sign, _mm256_loadu_ps(x));
        for (int k = 8; k < 32; k += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
        float r[8], amax = 0;
        _mm256_storeu_ps(r, m);
        for (int k = 0; k < 8; k++) amax = fmaxf(amax, r[k]);
        if (!(amax > 0) || !isfinite(amax)) {
            memset(q16 + 32 * b, 0, 32 * sizeof(int16_t));
            sq[b] = 0;
            continue;
        }
        const __m256 inv = _mm256_set1_ps(32767.0f / amax);
        const __m256i hi = _mm256_set1_epi32(32767), lo = _mm256_set1_epi32(-32767);
        for (int k = 0; k < 32; k += 8) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), inv));
            v = _mm256_max_epi32(_mm256_min_epi32(v, hi), lo);
            _mm_storeu_si128((__m128i *)(q16 + 32 * b + k),
                             _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
        }
        sq[b] = amax / 32767.0f;
    }
}

T2 static void qk_avx2(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *q, int nq, float *s,
                       int lds) {
    if (hd % 32 || hd > MAX_HD) { qk_ref(rows, stride, n, hd, q8, q, nq, s, lds); return; }
    int16_t q16[4][MAX_HD];
    float sq[4][MAX_HD / 32];
    const int16_t *const qp[4] = {q16[0], q16[1], q16[2], q16[3]};
    const float *const sp[4] = {sq[0], sq[1], sq[2], sq[3]};
    /* 4 queries (a GQA group) per pass: each row's codes widened once for all */
    for (int g = 0, m; g < nq; g += m) {
        m = nq - g >= 4 ? 4 : nq - g >= 2 ? 2 : 1;
        float *out[4];
        for (int j = 0; j < m; j++) {
            quant_q16_avx2(q + (size_t)(g + j) * hd, hd, q16[j], sq[j]);
            out[j] = s + (size_t)(g + j) * lds;
        }
#define QK_M(Q8)                                                                                                      \
    if (m == 4) qk_rows(rows, stride, n, hd, Q8, 4, qp, sp, out);                                                      \
    else if (m == 2) qk_rows(rows, stride, n, hd, Q8, 2, qp, sp, out);                                                 \
    else qk_rows(rows, stride, n, hd, Q8, 1, qp, sp, out);
        if (q8) {
            QK_M(true)
        } else {
            QK_M(false)
        }
#undef QK_M
    }
}

/* Codes 16h .. 16h+15 of one block of rows i and j, paired per channel as
 * int16 (c_i, c_j): channels 16h .. 16h+7 in *lo, the next 8 in *hi. q4_0
 * codes stay unsigned nibbles here (their -8 is taken off the sum once). */
T2 static inline __attribute__((always_inline)) void pair16(const uint8_t *bi, const uint8_t *bj, const bool q8,
                                                            const int h, __m256i *lo, __m256i *hi) {
    __m128i a, b;
    if (q8) {
        a = _mm_loadu_si128((const __m128i *)(bi + 2 + 16 * h));
        b = _mm_loadu_si128((const __m128i *)(bj + 2 + 16 * h));
    } else {
        const __m128i m = _mm_set1_epi8(15);
        a = _mm_loadu_si128((const __m128i *)(bi + 2));
        b = _mm_loadu_si128((const __m128i *)(bj + 2));
        a = _mm_and_si128(h ? _mm_srli_epi16(a, 4) : a, m);
        b = _mm_and_si128(h ? _mm_srli_epi16(b, 4) : b, m);
    }
    const __m128i pl = _mm_unpacklo_epi8(a, b), ph = _mm_unpackhi_epi8(a, b);
    *lo = q8 ? _mm256_cvtepi8_epi16(pl) : _mm256_cvtepu8_epi16(pl);
    *hi = q8 ? _mm256_cvtepi8_epi16(ph) : _mm256_cvtepu8_epi16(ph);
}

/* NG (<= 4) queries on 16 channels of block b over np rows (np even: an odd
 * count's last row is paired with itself at weight 0): per pair of rows one
 * pmaddwd per 8 channels and query against the pair's two weights. */
T2 static inline __attribute__((always_inline)) void av_int(const uint8_t *rows, size_t stride, int np, int b,
                                                            const int h, const bool q8, const int16_t *wq, int ldq,
                                                            const int NG, __m256i *acc) {
    const size_t bb = (size_t)b * blk_bytes(q8);
    for (int i = 0; i < np; i += 2) {
        __m256i lo, hi;
        pair16(rows + (size_t)i * stride + bb, rows + (size_t)(i + 1) * stride + bb, q8, h, &lo, &hi);
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) {
            int32_t pw;
            memcpy(&pw, wq + (size_t)g * ldq + i, 4);
            const __m256i wv = _mm256_set1_epi32(pw);
            acc[2 * g] = _mm256_add_epi32(acc[2 * g], _mm256_madd_epi16(lo, wv));
            acc[2 * g + 1] = _mm256_add_epi32(acc[2 * g + 1], _mm256_madd_epi16(hi, wv));
        }
    }
}

T2 static void av_avx2(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *w, int ldw, int nq,
                       float *out) {
    if (hd % 32 || hd > MAX_HD) { av_ref(rows, stride, n, hd, q8, w, ldw, nq, out); return; }
    enum { LDQ = AV_PASS + 16 };
    _Alignas(32) float d[AV_PASS + 8];
    _Alignas(32) int16_t wq[4 * LDQ];
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i wmax = _mm256_set1_epi32(AV_WMAX), wmin = _mm256_set1_epi32(-AV_WMAX);
    for (int p0 = 0; p0 < n; p0 += AV_PASS) {
        const int np = n - p0 < AV_PASS ? n - p0 : AV_PASS, np2 = (np + 1) & ~1;
        const uint8_t *pr = rows + (size_t)p0 * stride;
        for (int b = 0; b < hd / 32; b++) {
            for (int i = 0; i < np; i++) {
                kvq_f16 dh;
                memcpy(&dh, pr + (size_t)i * stride + (size_t)b * blk_bytes(q8), 2);
                d[i] = _cvtsh_ss(dh);
            }
            for (int g0 = 0; g0 < nq; g0 += 4) {
                const int ng = nq - g0 < 4 ? nq - g0 : 4;
                float beta[4];
                int32_t wsum[4];
                for (int g = 0; g < ng; g++) {
                    const float *wg = w + (size_t)(g0 + g) * ldw + p0;
                    int16_t *qg = wq + (size_t)g * LDQ;
                    __m256 vm = _mm256_setzero_ps();
                    float amax = 0;
                    int i = 0;
                    for (; i + 8 <= np; i += 8)
                        vm = _mm256_max_ps(vm, _mm256_andnot_ps(sign, _mm256_mul_ps(_mm256_loadu_ps(wg + i), _mm256_load_ps(d + i))));
                    for (int k = i; k < np; k++) amax = fmaxf(amax, fabsf(wg[k] * d[k]));
                    float r[8];
                    _mm256_storeu_ps(r, vm);
                    for (int k = 0; k < 8; k++) amax = fmaxf(amax, r[k]);
                    const float inv = amax > 0 ? (float)AV_WMAX / amax : 0.0f;
                    __m256i vs = _mm256_setzero_si256();
                    for (i = 0; i + 8 <= np; i += 8) {
                        const __m256 x = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(wg + i), _mm256_load_ps(d + i)),
                                                       _mm256_set1_ps(inv));
                        const __m256i v = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(x), wmax), wmin);
                        vs = _mm256_add_epi32(vs, v);
                        _mm_storeu_si128((__m128i *)(qg + i),
                                         _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
                    }
                    int32_t sum = kvq_hsum8_epi32(vs);
                    for (; i < np; i++) sum += qg[i] = (int16_t)wround(wg[i] * d[i] * inv);
                    if (np2 > np) qg[np] = 0;
                    beta[g] = amax / (float)AV_WMAX;
                    wsum[g] = sum;
                }
                /* the odd last row pairs with itself at weight 0 */
                for (int h = 0; h < 2; h++) {
                    __m256i acc[8];
                    for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_si256();
                    if (np2 > np) { /* pair16 reads row np - 1 twice */
                        const int m = np - 1;
#define AV_ODD(N)                                                                                                     \
    if (q8) { av_int(pr, stride, m, b, h, true, wq, LDQ, N, acc); av_int(pr + (size_t)m * stride, 0, 2, b, h, true, wq + m, LDQ, N, acc); } \
    else { av_int(pr, stride, m, b, h, false, wq, LDQ, N, acc); av_int(pr + (size_t)m * stride, 0, 2, b, h, false, wq + m, LDQ, N, acc); }
                        switch (ng) {
                        case 4: AV_ODD(4) break;
                        case 3: AV_ODD(3) break;
                        case 2: AV_ODD(2) break;
                        default: AV_ODD(1) break;
                        }
#undef AV_ODD
                    } else {
#define AV_EVEN(N)                                                                                                    \
    if (q8) av_int(pr, stride, np, b, h, true, wq, LDQ, N, acc);                                                       \
    else av_int(pr, stride, np, b, h, false, wq, LDQ, N, acc);
                        switch (ng) {
                        case 4: AV_EVEN(4) break;
                        case 3: AV_EVEN(3) break;
                        case 2: AV_EVEN(2) break;
                        default: AV_EVEN(1) break;
                        }
#undef AV_EVEN
                    }
                    for (int g = 0; g < ng; g++) {
                        float *o = out + (size_t)(g0 + g) * hd + 32 * b + 16 * h;
                        const __m256i off = _mm256_set1_epi32(q8 ? 0 : 8 * wsum[g]); /* q4_0: the codes' -8 */
                        const __m256 be = _mm256_set1_ps(beta[g]);
                        for (int k = 0; k < 2; k++)
                            _mm256_storeu_ps(o + 8 * k, _mm256_fmadd_ps(be, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[2 * g + k], off)),
                                                                        _mm256_loadu_ps(o + 8 * k)));
                    }
                }
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
