#include "blk_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "../core/cpu.h"
#include "../core/fp16.h"
#include "../kernels/simd_x86.h"

#define MAX_HD 1024

static inline size_t blk_bytes(bool q8) { return kvq_blk_block_bytes(q8); }

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

/* Tiles (blk_kernels.h): block b of tile T at T * tile + b * TB, its 8
 * scales first, then the code bytes. */
static inline size_t tile_blk(bool q8) { return 8 * blk_bytes(q8); }
static inline int code_nb(bool q8) { return q8 ? 32 : 16; } /* code bytes of a ggml block */
static inline uint8_t *tile_at(const uint8_t *tiles, int t, int hd, bool q8) {
    return (uint8_t *)tiles + (size_t)(t / 8) * kvq_blk_tile_bytes(hd, q8);
}
/* where code byte i of lane t sits in a key or value tile block: the one
 * statement of the layouts in blk_kernels.h, which put, get and the scalar
 * reference all go through */
static inline int tpos(int t, int i, bool q8, bool value) {
    return value ? 16 + 2 * code_nb(q8) * (t / 2) + 16 * (i / 8) + 2 * (i % 8) + t % 2
                 : 16 + 16 * (i / 2) + 2 * t + i % 2;
}

void kvq_blk_put(uint8_t *tiles, int t, int hd, bool q8, bool value, const uint8_t *row) {
    uint8_t *tb = tile_at(tiles, t, hd, q8);
    const int lane = t % 8;
    for (int b = 0; b < hd / 32; b++) {
        uint8_t *o = tb + (size_t)b * tile_blk(q8);
        const uint8_t *r = row + (size_t)b * blk_bytes(q8);
        memcpy(o + 2 * lane, r, 2);
        for (int i = 0; i < code_nb(q8); i++) o[tpos(lane, i, q8, value)] = r[2 + i];
    }
}

void kvq_blk_get(const uint8_t *tiles, int t, int hd, bool q8, bool value, uint8_t *row) {
    const uint8_t *tb = tile_at(tiles, t, hd, q8);
    const int lane = t % 8;
    for (int b = 0; b < hd / 32; b++) {
        const uint8_t *o = tb + (size_t)b * tile_blk(q8);
        uint8_t *r = row + (size_t)b * blk_bytes(q8);
        memcpy(r, o + 2 * lane, 2);
        for (int i = 0; i < code_nb(q8); i++) r[2 + i] = o[tpos(lane, i, q8, value)];
    }
}

/* code of channel c (0-31) of a tile block's lane */
static inline int tcode_at(const uint8_t *blk, int lane, bool q8, bool value, int c) {
    const int i = q8 ? c : c % 16;
    const uint8_t v = blk[tpos(lane, i, q8, value)];
    if (q8) return (int8_t)v;
    return (c < 16 ? v & 15 : v >> 4) - 8;
}

static inline float tile_d(const uint8_t *blk, int lane) {
    kvq_f16 h;
    memcpy(&h, blk + 2 * lane, 2);
    return kvq_f16_to_f32(h);
}

/* one token's score against a quantized query: exact integer block sums,
 * then fmaf in block order (what the SIMD lanes do) */
static float tile_score(const uint8_t *tiles, int t, int hd, bool q8, const int16_t *q16, const float *sq) {
    const uint8_t *tb = tile_at(tiles, t, hd, q8);
    const int lane = t % 8;
    float acc = 0;
    for (int b = 0; b < hd / 32; b++) {
        const uint8_t *blk = tb + (size_t)b * tile_blk(q8);
        int32_t isum = 0;
        for (int i = 0; i < 32; i++) isum += tcode_at(blk, lane, q8, false, i) * q16[32 * b + i];
        acc = fmaf((float)isum, tile_d(blk, lane) * sq[b], acc);
    }
    return acc;
}

static void qk_ref(const uint8_t *tiles, int t0, int n, int hd, bool q8, const float *q, int nq, float *s, int lds) {
    int16_t q16[MAX_HD];
    float sq[MAX_HD / 32];
    for (int g = 0; g < nq; g++) {
        quant_q16(q + (size_t)g * hd, hd, q16, sq);
        for (int i = 0; i < n; i++) s[(size_t)g * lds + i] = tile_score(tiles, t0 + i, hd, q8, q16, sq);
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

static void av_ref(const uint8_t *tiles, int t0, int n, int hd, bool q8, const float *w, int ldw, int nq,
                   float *out) {
    float d[AV_PASS], beta;
    int32_t wq[AV_PASS];
    for (int p0 = 0; p0 < n; p0 += AV_PASS) {
        const int np = n - p0 < AV_PASS ? n - p0 : AV_PASS;
        for (int b = 0; b < hd / 32; b++) {
            for (int i = 0; i < np; i++) {
                const int t = t0 + p0 + i;
                d[i] = tile_d(tile_at(tiles, t, hd, q8) + (size_t)b * tile_blk(q8), t % 8);
            }
            for (int g = 0; g < nq; g++) {
                weights_q(w + (size_t)g * ldw + p0, d, np, wq, &beta);
                float *o = out + (size_t)g * hd + 32 * b;
                for (int c = 0; c < 32; c++) {
                    int32_t acc = 0;
                    for (int i = 0; i < np; i++) {
                        const int t = t0 + p0 + i;
                        acc += wq[i] * tcode_at(tile_at(tiles, t, hd, q8) + (size_t)b * tile_blk(q8), t % 8, q8, true, c);
                    }
                    o[c] = fmaf(beta, (float)acc, o[c]);
                }
            }
        }
    }
}

static const kvq_blk_kernels B_REF = {qk_ref, av_ref};

#if defined(__x86_64__)
#define T2 __attribute__((target("avx2,fma,f16c")))

/* fmaxf(a, x) for a that is not NaN, inlined (fmaxf is a libm call here:
 * 3% of a decode at 32K went to it) */
static inline float fmax_nn(float a, float x) { return x > a ? x : a; }

/* The value kernel sweeps a pass's tiles four times (2 blocks x 2 halves),
 * the first time a quarter of each line apart: all its lines are asked for
 * at once, before the weights are rounded. From DRAM (1M tokens, one
 * thread) q8_0's values took 18.5 ns per token and KV head without, 13.9
 * with. The keys, read in order, lost 10% with the same prefetch. */
T2 static inline void prefetch_range(const uint8_t *p, size_t n) {
    for (size_t o = 0; o < n; o += 64) _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

/* A tile's 8 scores: the tokens 8T .. 8T+7 that fall in [t0, t0 + n). */
T2 static inline void store_tile(float *s, __m256 acc, int T, int t0, int n) {
    const int a = 8 * T < t0 ? t0 - 8 * T : 0, e = 8 * T + 8 > t0 + n ? t0 + n - 8 * T : 8;
    if (a == 0 && e == 8) {
        _mm256_storeu_ps(s + 8 * T - t0, acc);
    } else {
        float r[8];
        _mm256_storeu_ps(r, acc);
        memcpy(s + 8 * T + a - t0, r + a, (size_t)(e - a) * sizeof(float));
    }
}

/* NQ (1-4) queries against the tiles T0 .. T1-1: per block, per chunk of
 * 8 tokens x 2 channels, one pmaddwd per query against the query's pair of
 * int16 values, so the 8 tokens' sums build up side by side with no
 * horizontal sum; q4_0's nibbles stay unsigned and 8 * sum(q16) comes off
 * the block's sum. Lane t is tile_score's arithmetic for token t. */
T2 static inline __attribute__((always_inline)) void qk_tiles(const uint8_t *tiles, int T0, int T1, int t0, int n,
                                                              int hd, const bool q8, const int NQ,
                                                              const int16_t *const *q16, const float *const *sq,
                                                              const int32_t *const *qs, float *const *s) {
    const size_t tb = kvq_blk_tile_bytes(hd, q8);
    const __m128i m4 = _mm_set1_epi8(15);
    for (int T = T0; T < T1; T++) {
        __m256 acc[4];
#pragma GCC unroll 4
        for (int j = 0; j < NQ; j++) acc[j] = _mm256_setzero_ps();
        for (int b = 0; b < hd / 32; b++) {
            const uint8_t *blk = tiles + (size_t)T * tb + (size_t)b * tile_blk(q8);
            __m256i is[4];
#pragma GCC unroll 4
            for (int j = 0; j < NQ; j++) is[j] = _mm256_setzero_si256();
            if (q8) {
#pragma GCC unroll 16
                for (int p = 0; p < 16; p++) {
                    const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 16 + 16 * p)));
#pragma GCC unroll 4
                    for (int j = 0; j < NQ; j++) {
                        int32_t w;
                        memcpy(&w, q16[j] + 32 * b + 2 * p, 4);
                        is[j] = _mm256_add_epi32(is[j], _mm256_madd_epi16(x, _mm256_set1_epi32(w)));
                    }
                }
            } else {
#pragma GCC unroll 8
                for (int p = 0; p < 8; p++) {
                    const __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 16 + 16 * p));
                    const __m256i lo = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
                    const __m256i hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
#pragma GCC unroll 4
                    for (int j = 0; j < NQ; j++) {
                        int32_t wl, wh;
                        memcpy(&wl, q16[j] + 32 * b + 2 * p, 4);
                        memcpy(&wh, q16[j] + 32 * b + 16 + 2 * p, 4);
                        is[j] = _mm256_add_epi32(is[j], _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_set1_epi32(wl)),
                                                                         _mm256_madd_epi16(hi, _mm256_set1_epi32(wh))));
                    }
                }
#pragma GCC unroll 4
                for (int j = 0; j < NQ; j++) is[j] = _mm256_sub_epi32(is[j], _mm256_set1_epi32(8 * qs[j][b]));
            }
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
#pragma GCC unroll 4
            for (int j = 0; j < NQ; j++)
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[j]), _mm256_mul_ps(d, _mm256_set1_ps(sq[j][b])), acc[j]);
        }
#pragma GCC unroll 4
        for (int j = 0; j < NQ; j++) store_tile(s[j], acc[j], T, t0, n);
    }
}

/* quant_q16 in vectors, the same roundings (max is exact, cvtps rounds to
 * nearest even as lrintf does): it ran per call and query in scalar code,
 * a tenth of the keys' time at 128 rows a call. qs[b] gets the block's sum. */
T2 static void quant_q16_avx2(const float *q, int hd, int16_t *q16, float *sq, int32_t *qs) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < hd / 32; b++) {
        const float *x = q + 32 * b;
        __m256 m = _mm256_andnot_ps(sign, _mm256_loadu_ps(x));
        for (int k = 8; k < 32; k += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
        float r[8], amax = 0;
        _mm256_storeu_ps(r, m);
        for (int k = 0; k < 8; k++) amax = fmax_nn(amax, r[k]);
        qs[b] = 0;
        if (!(amax > 0) || !isfinite(amax)) {
            memset(q16 + 32 * b, 0, 32 * sizeof(int16_t));
            sq[b] = 0;
            continue;
        }
        const __m256 inv = _mm256_set1_ps(32767.0f / amax);
        const __m256i hi = _mm256_set1_epi32(32767), lo = _mm256_set1_epi32(-32767);
        __m256i vs = _mm256_setzero_si256();
        for (int k = 0; k < 32; k += 8) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), inv));
            v = _mm256_max_epi32(_mm256_min_epi32(v, hi), lo);
            vs = _mm256_add_epi32(vs, v);
            _mm_storeu_si128((__m128i *)(q16 + 32 * b + k),
                             _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
        }
        qs[b] = kvq_hsum8_epi32(vs);
        sq[b] = amax / 32767.0f;
    }
}

/* The AVX-512 VNNI key kernel (below): NQ queries, the same tiles. */
static void qk_tiles_512(const uint8_t *tiles, int T0, int T1, int t0, int n, int hd, bool q8, int NQ,
                         const int16_t *const *q16, const float *const *sq, const int32_t *const *qs, float *const *s);

T2 static inline __attribute__((always_inline)) void qk_body(const uint8_t *tiles, int t0, int n, int hd, bool q8,
                                                             const float *q, int nq, float *s, int lds, const bool wide) {
    if (hd % 32 || hd > MAX_HD) { qk_ref(tiles, t0, n, hd, q8, q, nq, s, lds); return; }
    if (n <= 0) return;
    int16_t q16[4][MAX_HD];
    float sq[4][MAX_HD / 32];
    int32_t qs[4][MAX_HD / 32];
    const int16_t *const qp[4] = {q16[0], q16[1], q16[2], q16[3]};
    const float *const sp[4] = {sq[0], sq[1], sq[2], sq[3]};
    const int32_t *const ssp[4] = {qs[0], qs[1], qs[2], qs[3]};
    const int T0 = t0 / 8, T1 = (t0 + n + 7) / 8;
    /* 4 queries (a GQA group) per pass: each chunk widened once for all */
    for (int g = 0, m; g < nq; g += m) {
        m = nq - g >= 4 ? 4 : nq - g >= 2 ? 2 : 1;
        float *out[4];
        for (int j = 0; j < m; j++) {
            quant_q16_avx2(q + (size_t)(g + j) * hd, hd, q16[j], sq[j], qs[j]);
            out[j] = s + (size_t)(g + j) * lds;
        }
        if (wide) {
            qk_tiles_512(tiles, T0, T1, t0, n, hd, q8, m, qp, sp, ssp, out);
            continue;
        }
#define QK_M(Q8)                                                                                                      \
    if (m == 4) qk_tiles(tiles, T0, T1, t0, n, hd, Q8, 4, qp, sp, ssp, out);                                             \
    else if (m == 2) qk_tiles(tiles, T0, T1, t0, n, hd, Q8, 2, qp, sp, ssp, out);                                        \
    else qk_tiles(tiles, T0, T1, t0, n, hd, Q8, 1, qp, sp, ssp, out);
        if (q8) {
            QK_M(true)
        } else {
            QK_M(false)
        }
#undef QK_M
    }
}
T2 static void qk_avx2(const uint8_t *tiles, int t0, int n, int hd, bool q8, const float *q, int nq, float *s,
                       int lds) {
    qk_body(tiles, t0, n, hd, q8, q, nq, s, lds, false);
}
T2 static void qk_512(const uint8_t *tiles, int t0, int n, int hd, bool q8, const float *q, int nq, float *s,
                      int lds) {
    qk_body(tiles, t0, n, hd, q8, q, nq, s, lds, true);
}

/* NG (<= 4) queries on half h of block b over the tiles T0 .. T1-1 of a
 * pass: per token pair, one pmaddwd per 8 channels and query against the
 * pair's two weights (wq[g * ldq + k]: token 8 * T0 + k, 0 outside the
 * pass). q8_0's half h is channels 16h .. 16h+15; q4_0's chunk h holds
 * channels 8h .. 8h+7 and 16+8h .. 16+8h+7, its nibbles unsigned (their -8
 * is taken off the sum once). */
T2 static inline __attribute__((always_inline)) void av_tiles(const uint8_t *tiles, size_t tb, int T0, int T1, int b,
                                                              const int h, const bool q8, const int16_t *wq, int ldq,
                                                              const int NG, __m256i *acc) {
    const __m128i m4 = _mm_set1_epi8(15);
    __m256i a[8]; /* local, so that they live in registers (through *acc they were spilled) */
#pragma GCC unroll 8
    for (int k = 0; k < 2 * NG; k++) a[k] = _mm256_setzero_si256();
    for (int T = T0; T < T1; T++) {
        const uint8_t *blk = tiles + (size_t)T * tb + (size_t)b * tile_blk(q8);
#pragma GCC unroll 4
        for (int P = 0; P < 4; P++) {
            __m256i x0, x1;
            if (q8) {
                const uint8_t *c = blk + 16 + 64 * P + 32 * h;
                x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)c));
                x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + 16)));
            } else {
                const __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 16 + 32 * P + 16 * h));
                x0 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
                x1 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
            }
            const int k = 8 * (T - T0) + 2 * P;
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) {
                int32_t pw;
                memcpy(&pw, wq + (size_t)g * ldq + k, 4);
                const __m256i wv = _mm256_set1_epi32(pw);
                a[2 * g] = _mm256_add_epi32(a[2 * g], _mm256_madd_epi16(x0, wv));
                a[2 * g + 1] = _mm256_add_epi32(a[2 * g + 1], _mm256_madd_epi16(x1, wv));
            }
        }
    }
#pragma GCC unroll 8
    for (int k = 0; k < 2 * NG; k++) acc[k] = a[k];
}

/* The AVX-512 VNNI value kernel (below): block b's 32 channels over the
 * tiles T0 .. T1-1 for ng queries, added into out (query g at o[g * hd]). */
static void av_block_512(const uint8_t *tiles, size_t tb, int T0, int T1, int b, bool q8, const int16_t *wq, int ldq,
                         int ng, const float *beta, const int32_t *wsum, float *o, int hd);

T2 static inline __attribute__((always_inline)) void av_body(const uint8_t *tiles, int t0, int n, int hd, bool q8,
                                                             const float *w, int ldw, int nq, float *out,
                                                             const bool wide) {
    if (hd % 32 || hd > MAX_HD) { av_ref(tiles, t0, n, hd, q8, w, ldw, nq, out); return; }
    /* a pass of AV_PASS tokens spans at most AV_PASS + 14 tile lanes */
    enum { LDQ = AV_PASS + 16 };
    _Alignas(32) float d[LDQ];
    _Alignas(32) int16_t wq[4 * LDQ];
    const size_t tb = kvq_blk_tile_bytes(hd, q8);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i wmax = _mm256_set1_epi32(AV_WMAX), wmin = _mm256_set1_epi32(-AV_WMAX);
    for (int p0 = 0; p0 < n; p0 += AV_PASS) {
        const int np = n - p0 < AV_PASS ? n - p0 : AV_PASS, a = t0 + p0;
        const int T0 = a / 8, T1 = (a + np + 7) / 8, lo = a - 8 * T0, K = 8 * (T1 - T0);
        prefetch_range(tiles + (size_t)T0 * tb, (size_t)(T1 - T0) * tb);
        for (int b = 0; b < hd / 32; b++) {
            for (int T = T0; T < T1; T++)
                _mm256_store_ps(d + 8 * (T - T0),
                                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(tiles + (size_t)T * tb + (size_t)b * tile_blk(q8)))));
            const float *dp = d + lo;
            for (int g0 = 0; g0 < nq; g0 += 4) {
                const int ng = nq - g0 < 4 ? nq - g0 : 4;
                float beta[4];
                int32_t wsum[4];
                for (int g = 0; g < ng; g++) {
                    const float *wg = w + (size_t)(g0 + g) * ldw + p0;
                    int16_t *qg = wq + (size_t)g * LDQ;
                    memset(qg, 0, (size_t)K * sizeof(int16_t)); /* lanes outside the pass weigh nothing */
                    qg += lo;
                    __m256 vm = _mm256_setzero_ps();
                    float amax = 0;
                    int i = 0;
                    for (; i + 8 <= np; i += 8)
                        vm = _mm256_max_ps(vm, _mm256_andnot_ps(sign, _mm256_mul_ps(_mm256_loadu_ps(wg + i), _mm256_loadu_ps(dp + i))));
                    for (int k = i; k < np; k++) amax = fmax_nn(amax, fabsf(wg[k] * dp[k]));
                    float r[8];
                    _mm256_storeu_ps(r, vm);
                    for (int k = 0; k < 8; k++) amax = fmax_nn(amax, r[k]);
                    const float inv = amax > 0 ? (float)AV_WMAX / amax : 0.0f;
                    __m256i vs = _mm256_setzero_si256();
                    for (i = 0; i + 8 <= np; i += 8) {
                        const __m256 x = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(wg + i), _mm256_loadu_ps(dp + i)),
                                                       _mm256_set1_ps(inv));
                        const __m256i v = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(x), wmax), wmin);
                        vs = _mm256_add_epi32(vs, v);
                        _mm_storeu_si128((__m128i *)(qg + i),
                                         _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
                    }
                    int32_t sum = kvq_hsum8_epi32(vs);
                    for (; i < np; i++) sum += qg[i] = (int16_t)wround(wg[i] * dp[i] * inv);
                    beta[g] = amax / (float)AV_WMAX;
                    wsum[g] = sum;
                }
                if (wide) {
                    av_block_512(tiles, tb, T0, T1, b, q8, wq, LDQ, ng, beta, wsum, out + (size_t)g0 * hd + 32 * b, hd);
                    continue;
                }
                for (int h = 0; h < 2; h++) {
                    __m256i acc[8];
#define AV_T(N)                                                                                                       \
    if (q8) av_tiles(tiles, tb, T0, T1, b, h, true, wq, LDQ, N, acc);                                                  \
    else av_tiles(tiles, tb, T0, T1, b, h, false, wq, LDQ, N, acc);
                    switch (ng) {
                    case 4: AV_T(4) break;
                    case 3: AV_T(3) break;
                    case 2: AV_T(2) break;
                    default: AV_T(1) break;
                    }
#undef AV_T
                    const int c0 = q8 ? 16 * h : 8 * h, c1 = q8 ? 16 * h + 8 : 16 + 8 * h;
                    for (int g = 0; g < ng; g++) {
                        float *o = out + (size_t)(g0 + g) * hd + 32 * b;
                        const __m256i off = _mm256_set1_epi32(q8 ? 0 : 8 * wsum[g]); /* q4_0: the codes' -8 */
                        const __m256 be = _mm256_set1_ps(beta[g]);
                        _mm256_storeu_ps(o + c0, _mm256_fmadd_ps(be, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[2 * g], off)),
                                                                 _mm256_loadu_ps(o + c0)));
                        _mm256_storeu_ps(o + c1, _mm256_fmadd_ps(be, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[2 * g + 1], off)),
                                                                 _mm256_loadu_ps(o + c1)));
                    }
                }
            }
        }
    }
}

T2 static void av_avx2(const uint8_t *tiles, int t0, int n, int hd, bool q8, const float *w, int ldw, int nq,
                       float *out) {
    av_body(tiles, t0, n, hd, q8, w, ldw, nq, out, false);
}
T2 static void av_512(const uint8_t *tiles, int t0, int n, int hd, bool q8, const float *w, int ldw, int nq,
                      float *out) {
    av_body(tiles, t0, n, hd, q8, w, ldw, nq, out, true);
}

static const kvq_blk_kernels B_AVX2 = {qk_avx2, av_avx2};

/* AVX-512 VNNI. The tiles and the integer sums are the AVX2 kernels', so
 * the results are bit for bit theirs (and the reference's); vpdpwssd does
 * a pmaddwd and its add in one instruction, on 64-byte registers.
 *
 * Keys: two chunks (8 tokens x 2 channels each) widen to one register,
 * against a register holding the query's two channel pairs, each repeated
 * for 8 tokens (expanded once per call: 16 x 32 bytes per block); the two
 * halves of a block's sums are added at its end. */
#define T5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

T5 static inline __attribute__((always_inline)) void qk_t512(const uint8_t *tiles, int T0, int T1, int t0, int n,
                                                             int hd, const bool q8, const int NQ, const int32_t *qx,
                                                             const float *const *sq, const int32_t *const *qs,
                                                             float *const *s) {
    const size_t tb = kvq_blk_tile_bytes(hd, q8);
    const int nb = hd / 32;
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int T = T0; T < T1; T++) {
        __m256 acc[4];
#pragma GCC unroll 4
        for (int j = 0; j < NQ; j++) acc[j] = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++) {
            const uint8_t *blk = tiles + (size_t)T * tb + (size_t)b * tile_blk(q8);
            __m512i is[4];
#pragma GCC unroll 4
            for (int j = 0; j < NQ; j++) is[j] = _mm512_setzero_si512();
            if (q8) {
#pragma GCC unroll 8
                for (int p = 0; p < 16; p += 2) {
                    const __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(blk + 16 + 16 * p)));
#pragma GCC unroll 4
                    for (int j = 0; j < NQ; j++)
                        is[j] = _mm512_dpwssd_epi32(is[j], x, _mm512_loadu_si512(qx + ((size_t)j * nb + b) * 128 + 8 * p));
                }
            } else {
#pragma GCC unroll 4
                for (int p = 0; p < 8; p += 2) {
                    const __m256i raw = _mm256_loadu_si256((const __m256i *)(blk + 16 + 16 * p));
                    const __m512i lo = _mm512_cvtepu8_epi16(_mm256_and_si256(raw, m4));
                    const __m512i hi = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4));
#pragma GCC unroll 4
                    for (int j = 0; j < NQ; j++) {
                        const int32_t *qj = qx + ((size_t)j * nb + b) * 128;
                        is[j] = _mm512_dpwssd_epi32(is[j], lo, _mm512_loadu_si512(qj + 8 * p));
                        is[j] = _mm512_dpwssd_epi32(is[j], hi, _mm512_loadu_si512(qj + 8 * (8 + p)));
                    }
                }
            }
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
#pragma GCC unroll 4
            for (int j = 0; j < NQ; j++) {
                __m256i v = _mm256_add_epi32(_mm512_castsi512_si256(is[j]), _mm512_extracti64x4_epi64(is[j], 1));
                if (!q8) v = _mm256_sub_epi32(v, _mm256_set1_epi32(8 * qs[j][b]));
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_mul_ps(d, _mm256_set1_ps(sq[j][b])), acc[j]);
            }
        }
#pragma GCC unroll 4
        for (int j = 0; j < NQ; j++) store_tile(s[j], acc[j], T, t0, n);
    }
}

T5 __attribute__((noinline)) static void qk_tiles_512(const uint8_t *tiles, int T0, int T1, int t0, int n, int hd,
                                                      bool q8, int NQ, const int16_t *const *q16,
                                                      const float *const *sq, const int32_t *const *qs,
                                                      float *const *s) {
    /* query j, block b, channel pair p: 8 copies of its 32-bit word at qx[((j nb + b) 16 + p) 8] */
    _Alignas(64) int32_t qx[4 * (MAX_HD / 32) * 128];
    const int nb = hd / 32;
    for (int j = 0; j < NQ; j++)
        for (int k = 0; k < 16 * nb; k++) {
            int32_t v;
            memcpy(&v, q16[j] + 2 * k, 4);
            _mm256_store_si256((__m256i *)(qx + ((size_t)j * nb * 16 + k) * 8), _mm256_set1_epi32(v));
        }
#define QK5(Q8)                                                                                                           if (NQ == 4) qk_t512(tiles, T0, T1, t0, n, hd, Q8, 4, qx, sq, qs, s);                                                  else if (NQ == 2) qk_t512(tiles, T0, T1, t0, n, hd, Q8, 2, qx, sq, qs, s);                                             else qk_t512(tiles, T0, T1, t0, n, hd, Q8, 1, qx, sq, qs, s);
    if (q8) {
        QK5(true)
    } else {
        QK5(false)
    }
#undef QK5
}

/* Values: a token pair's 32 channels are two registers (q8_0: the pair's
 * 64 code bytes widened; q4_0: its 32 bytes' low and high nibbles, channels
 * 0-15 and 16-31), each against the pair's two weights in every word. */
T5 static inline __attribute__((always_inline)) void av_t512(const uint8_t *tiles, size_t tb, int T0, int T1, int b,
                                                             const bool q8, const int16_t *wq, int ldq, const int NG,
                                                             const float *beta, const int32_t *wsum, float *o, int hd) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m512i a[8];
#pragma GCC unroll 8
    for (int k = 0; k < 2 * NG; k++) a[k] = _mm512_setzero_si512();
    for (int T = T0; T < T1; T++) {
        const uint8_t *blk = tiles + (size_t)T * tb + (size_t)b * tile_blk(q8);
#pragma GCC unroll 4
        for (int P = 0; P < 4; P++) {
            __m512i x0, x1;
            if (q8) {
                const uint8_t *c = blk + 16 + 64 * P;
                x0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)c));
                x1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(c + 32)));
            } else {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * P));
                x0 = _mm512_cvtepu8_epi16(_mm256_and_si256(raw, m4));
                x1 = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4));
            }
            const int k = 8 * (T - T0) + 2 * P;
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) {
                int32_t pw;
                memcpy(&pw, wq + (size_t)g * ldq + k, 4);
                const __m512i wv = _mm512_set1_epi32(pw);
                a[2 * g] = _mm512_dpwssd_epi32(a[2 * g], x0, wv);
                a[2 * g + 1] = _mm512_dpwssd_epi32(a[2 * g + 1], x1, wv);
            }
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++) {
        float *og = o + (size_t)g * hd;
        const __m512i off = _mm512_set1_epi32(q8 ? 0 : 8 * wsum[g]); /* q4_0: the codes' -8 */
        const __m512 be = _mm512_set1_ps(beta[g]);
        _mm512_storeu_ps(og, _mm512_fmadd_ps(be, _mm512_cvtepi32_ps(_mm512_sub_epi32(a[2 * g], off)), _mm512_loadu_ps(og)));
        _mm512_storeu_ps(og + 16, _mm512_fmadd_ps(be, _mm512_cvtepi32_ps(_mm512_sub_epi32(a[2 * g + 1], off)),
                                                  _mm512_loadu_ps(og + 16)));
    }
}

T5 __attribute__((noinline)) static void av_block_512(const uint8_t *tiles, size_t tb, int T0, int T1, int b, bool q8,
                                                      const int16_t *wq, int ldq, int ng, const float *beta,
                                                      const int32_t *wsum, float *o, int hd) {
#define AV5(N)                                                                                                            if (q8) av_t512(tiles, tb, T0, T1, b, true, wq, ldq, N, beta, wsum, o, hd);                                            else av_t512(tiles, tb, T0, T1, b, false, wq, ldq, N, beta, wsum, o, hd);
    switch (ng) {
    case 4: AV5(4) break;
    case 3: AV5(3) break;
    case 2: AV5(2) break;
    default: AV5(1) break;
    }
#undef AV5
}

static const kvq_blk_kernels B_512 = {qk_512, av_512};
#endif

const kvq_blk_kernels *kvq_blk_kernels_isa(int isa) {
#if defined(__x86_64__)
    static const void *const T[KVQ_ISA_COUNT] = {&B_REF, &B_AVX2, &B_512};
#else
    static const void *const T[KVQ_ISA_COUNT] = {&B_REF};
#endif
    return kvq_isa_pick(isa, T);
}
