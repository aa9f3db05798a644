#include "gemm_i8.h"

#include <immintrin.h>
#include <string.h>

#include "../core/cpu.h"
#include "quant_ref.h"
#include "simd_x86.h"

#define GT 16 /* tokens per group: one int32 lane each */
#define MAX_R 4
#define MAX_TG 3

/* 32 elements of 16 tokens. The weights enter VNNI as the unsigned operand,
 * offset by o (128 for Q8_0, 8 for Q4_0, 0 for types with a min), so each
 * token's accumulator starts at c = -o * sum(q) to cancel the offset. */
typedef struct {
    int8_t q[8][GT][4]; /* elements 4j..4j+3 of token i at q[j][i] */
    float d[GT];        /* scale */
    int32_t c[GT];      /* -o * sum(q) */
    int32_t c1[GT];     /* the same over elements 0..15 and 16..31, for Q6_K, */
    int32_t c2[GT];     /* whose weight scale changes halfway through a block */
    float s[GT];        /* d * sum(q): multiplies the weights' min */
} act_cell;

bool kvq_gemm_i8_ok(kvq_type t, int64_t cols) {
    switch (t) {
    case KVQ_TYPE_Q8_0:
    case KVQ_TYPE_Q4_0:
    case KVQ_TYPE_Q4_1: return cols > 0 && cols % 32 == 0;
    case KVQ_TYPE_Q4_K:
    case KVQ_TYPE_Q5_K:
    case KVQ_TYPE_Q6_K: return cols > 0 && cols % KVQ_QK_K == 0;
    default: return false;
    }
}

size_t kvq_gemm_i8_act_size(int64_t cols, int n) {
    return (size_t)((n + GT - 1) / GT) * (size_t)(cols / 32) * sizeof(act_cell);
}

static int weight_offset(kvq_type t) {
    return t == KVQ_TYPE_Q8_0 ? 128 : t == KVQ_TYPE_Q4_0 ? 8 : t == KVQ_TYPE_Q6_K ? 32 : 0;
}

static inline uint32_t ld32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Elements 4j..4j+3 of 32-element block b of a weight row, as unsigned bytes
 * (true value + offset). The SIMD kernel does the same on broadcast lanes. */
static inline uint32_t w_quad(kvq_type t, const uint8_t *row, int64_t b, int j) {
    switch (t) {
    case KVQ_TYPE_Q8_0: return ld32((const uint8_t *)((const kvq_block_q8_0 *)row)[b].qs + 4 * j) ^ 0x80808080u;
    case KVQ_TYPE_Q4_0: {
        uint32_t v = ld32(((const kvq_block_q4_0 *)row)[b].qs + 4 * (j & 3));
        return (j < 4 ? v : v >> 4) & 0x0F0F0F0Fu;
    }
    case KVQ_TYPE_Q4_1: {
        uint32_t v = ld32(((const kvq_block_q4_1 *)row)[b].qs + 4 * (j & 3));
        return (j < 4 ? v : v >> 4) & 0x0F0F0F0Fu;
    }
    case KVQ_TYPE_Q4_K: {
        const kvq_block_q4_K *x = (const kvq_block_q4_K *)row + b / 8;
        int sb = (int)(b % 8);
        uint32_t v = ld32(x->qs + 32 * (sb / 2) + 4 * j);
        return (sb & 1 ? v >> 4 : v) & 0x0F0F0F0Fu;
    }
    case KVQ_TYPE_Q5_K: {
        const kvq_block_q5_K *x = (const kvq_block_q5_K *)row + b / 8;
        int sb = (int)(b % 8);
        uint32_t v = ld32(x->qs + 32 * (sb / 2) + 4 * j), h = ld32(x->qh + 4 * j);
        return ((sb & 1 ? v >> 4 : v) & 0x0F0F0F0Fu) | (((h >> sb) & 0x01010101u) << 4);
    }
    case KVQ_TYPE_Q6_K: {
        /* element e = 32 (b % 8) + 4j of the super-block: half e / 128, then
         * group k (of 32) picks the low/high nibble of ql[l] or ql[l + 32]
         * and bits 2k..2k+1 of qh[l] */
        const kvq_block_q6_K *x = (const kvq_block_q6_K *)row + b / 8;
        const int e = 32 * (int)(b % 8) + 4 * j, h = e / 128, k = (e % 128) / 32, l = e % 32;
        uint32_t lo = ld32(x->ql + 64 * h + l + 32 * (k & 1)), hi = ld32(x->qh + 32 * h + l);
        return ((k & 2 ? lo >> 4 : lo) & 0x0F0F0F0Fu) | (((hi >> (2 * k)) & 0x03030303u) << 4);
    }
    default: return 0;
    }
}

/* Q6_K: the scale of half hf (elements 16 hf .. 16 hf + 15) of block b. */
static inline float w_scale_q6(const uint8_t *row, int64_t b, int hf) {
    const kvq_block_q6_K *x = (const kvq_block_q6_K *)row + b / 8;
    return kvq_f16_to_f32(x->d) * x->scales[2 * (b % 8) + hf];
}

/* Block b of a row is scale * q - min. */
static inline void w_scale(kvq_type t, const uint8_t *row, int64_t b, float *s, float *m) {
    switch (t) {
    case KVQ_TYPE_Q8_0: *s = kvq_f16_to_f32(((const kvq_block_q8_0 *)row)[b].d), *m = 0; return;
    case KVQ_TYPE_Q4_0: *s = kvq_f16_to_f32(((const kvq_block_q4_0 *)row)[b].d), *m = 0; return;
    case KVQ_TYPE_Q4_1: {
        const kvq_block_q4_1 *x = (const kvq_block_q4_1 *)row + b;
        *s = kvq_f16_to_f32(x->d), *m = -kvq_f16_to_f32(x->m);
        return;
    }
    case KVQ_TYPE_Q4_K:
    case KVQ_TYPE_Q5_K: {
        /* both K layouts start with d, dmin and the 12 scale bytes */
        const size_t bs = t == KVQ_TYPE_Q4_K ? sizeof(kvq_block_q4_K) : sizeof(kvq_block_q5_K);
        const kvq_block_q4_K *x = (const kvq_block_q4_K *)(row + (size_t)(b / 8) * bs);
        uint8_t sc, mn;
        kvq_k4_scale_min((int)(b % 8), x->scales, &sc, &mn);
        *s = kvq_f16_to_f32(x->d) * sc, *m = kvq_f16_to_f32(x->dmin) * mn;
        return;
    }
    default: *s = *m = 0;
    }
}

/* ------------------------------------------------------------ activations */
#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

void kvq_gemm_i8_quant(kvq_type t, const float *X, int64_t cols, int n, int64_t g0, int64_t g1, void *act, int isa) {
    const int64_t nb = cols / 32;
    const int o = weight_offset(t);
    act_cell *cells = act;
    for (int64_t g = g0; g < g1; g++) {
        for (int i = 0; i < GT; i++) {
            const int64_t tok = g * GT + i;
            for (int64_t b = 0; b < nb; b++) {
                act_cell *c = cells + g * nb + b;
                int8_t q[32];
                float d = 0;
                if (tok < n) {
                    if (isa == KVQ_ISA_AVX512)
                        kvq_quant32_512(X + tok * cols + b * 32, q, &d);
                    else
                        kvq_quant32_ref(X + tok * cols + b * 32, q, &d);
                } else {
                    memset(q, 0, sizeof q);
                }
                int sum = 0, sum1 = 0;
                for (int k = 0; k < 32; k++) sum += q[k];
                for (int k = 0; k < 16; k++) sum1 += q[k];
                for (int j = 0; j < 8; j++) memcpy(c->q[j][i], q + 4 * j, 4);
                c->d[i] = d;
                c->c[i] = -o * sum;
                c->c1[i] = -o * sum1;
                c->c2[i] = -o * (sum - sum1);
                c->s[i] = d * (float)sum;
            }
        }
    }
}

/* ------------------------------------------------------------ reference */
static void rows_ref(const kvq_matw *W, int64_t r0, int64_t r1, const act_cell *cells, int n, float *Y, int64_t ldy) {
    const int64_t nb = W->cols / 32;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)W->data + (size_t)r * W->row_bytes;
        for (int tok = 0; tok < n; tok++) {
            const int g = tok / GT, i = tok % GT;
            float acc = 0;
            for (int64_t b = 0; b < nb; b++) {
                const act_cell *c = cells + g * nb + b;
                int32_t dot[2] = {c->c1[i], c->c2[i]};
                for (int j = 0; j < 8; j++) {
                    uint32_t wq = w_quad(W->type, row, b, j);
                    for (int k = 0; k < 4; k++) dot[j / 4] += (int32_t)((wq >> (8 * k)) & 0xFF) * c->q[j][i][k];
                }
                if (W->type == KVQ_TYPE_Q6_K) {
                    acc += ((float)dot[0] * w_scale_q6(row, b, 0) + (float)dot[1] * w_scale_q6(row, b, 1)) * c->d[i];
                } else {
                    float s, m;
                    w_scale(W->type, row, b, &s, &m);
                    acc += (float)(dot[0] + dot[1]) * s * c->d[i] - m * c->s[i];
                }
            }
            Y[(size_t)tok * ldy + r] = acc;
        }
    }
}

/* ------------------------------------------------------------ AVX-512 VNNI */
T_512 static inline __attribute__((always_inline)) __m512i w_quad_512(kvq_type t, const uint8_t *row, int64_t b,
                                                                      int j) {
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    switch (t) {
    case KVQ_TYPE_Q8_0:
        return _mm512_xor_si512(_mm512_set1_epi32((int)ld32((const uint8_t *)((const kvq_block_q8_0 *)row)[b].qs + 4 * j)),
                                _mm512_set1_epi8((char)0x80));
    case KVQ_TYPE_Q4_0:
    case KVQ_TYPE_Q4_1: {
        const uint8_t *qs = t == KVQ_TYPE_Q4_0 ? ((const kvq_block_q4_0 *)row)[b].qs : ((const kvq_block_q4_1 *)row)[b].qs;
        __m512i v = _mm512_set1_epi32((int)ld32(qs + 4 * (j & 3)));
        return _mm512_and_si512(j < 4 ? v : _mm512_srli_epi32(v, 4), lo4);
    }
    case KVQ_TYPE_Q4_K: {
        const kvq_block_q4_K *x = (const kvq_block_q4_K *)row + b / 8;
        int sb = (int)(b % 8);
        __m512i v = _mm512_set1_epi32((int)ld32(x->qs + 32 * (sb / 2) + 4 * j));
        return _mm512_and_si512(sb & 1 ? _mm512_srli_epi32(v, 4) : v, lo4);
    }
    case KVQ_TYPE_Q6_K: {
        const kvq_block_q6_K *x = (const kvq_block_q6_K *)row + b / 8;
        const int e = 32 * (int)(b % 8) + 4 * j, h = e / 128, k = (e % 128) / 32, l = e % 32;
        __m512i lo = _mm512_set1_epi32((int)ld32(x->ql + 64 * h + l + 32 * (k & 1)));
        __m512i hi = _mm512_set1_epi32((int)ld32(x->qh + 32 * h + l));
        lo = _mm512_and_si512(k & 2 ? _mm512_srli_epi32(lo, 4) : lo, lo4);
        hi = _mm512_and_si512(_mm512_slli_epi32(_mm512_srli_epi32(hi, 2 * k), 4), _mm512_set1_epi8(0x30));
        return _mm512_or_si512(lo, hi);
    }
    default: return _mm512_set1_epi32((int)w_quad(t, row, b, j));
    }
}

/* the small loops over rows and token groups must unroll for the
 * accumulator arrays to become registers */
#define UNROLL _Pragma("GCC unroll 8")

/* R weight rows x TG groups of 16 tokens, over the whole row. R and TG are
 * constants after inlining, so the accumulators live in registers:
 * R*TG int32 (one block) and R*TG float (the row). */
T_512 static inline __attribute__((always_inline)) void tile_512(kvq_type t, int R, int TG, const kvq_matw *W,
                                                                 int64_t r, const act_cell *cells, int64_t nb,
                                                                 int64_t g, float out[MAX_R][MAX_TG][GT]) {
    const uint8_t *rows[MAX_R];
    UNROLL for (int i = 0; i < R; i++) rows[i] = (const uint8_t *)W->data + (size_t)(r + i) * W->row_bytes;
    const bool has_min = t == KVQ_TYPE_Q4_1 || t == KVQ_TYPE_Q4_K || t == KVQ_TYPE_Q5_K;
    const bool halves = t == KVQ_TYPE_Q6_K; /* a weight scale per 16 elements */
    __m512 f[MAX_R][MAX_TG];
    UNROLL for (int i = 0; i < R; i++)
        UNROLL for (int k = 0; k < TG; k++) f[i][k] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const act_cell *c[MAX_TG];
        __m512i acc[MAX_R][MAX_TG];
        UNROLL for (int k = 0; k < TG; k++) {
            c[k] = cells + (g + k) * nb + b;
            __m512i c0 = _mm512_loadu_si512(halves ? c[k]->c1 : c[k]->c);
            UNROLL for (int i = 0; i < R; i++) acc[i][k] = c0;
        }
        UNROLL for (int j = 0; j < 8; j++) {
            if (halves && j == 4) {
                /* the first half's scale, then a fresh accumulator */
                UNROLL for (int i = 0; i < R; i++) {
                    const __m512 sv = _mm512_set1_ps(w_scale_q6(rows[i], b, 0));
                    UNROLL for (int k = 0; k < TG; k++) {
                        __m512 ds = _mm512_mul_ps(sv, _mm512_loadu_ps(c[k]->d));
                        f[i][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][k]), ds, f[i][k]);
                        acc[i][k] = _mm512_loadu_si512(c[k]->c2);
                    }
                }
            }
            __m512i a[MAX_TG];
            UNROLL for (int k = 0; k < TG; k++) a[k] = _mm512_loadu_si512(c[k]->q[j]);
            UNROLL for (int i = 0; i < R; i++) {
                __m512i w = w_quad_512(t, rows[i], b, j);
                UNROLL for (int k = 0; k < TG; k++) acc[i][k] = _mm512_dpbusd_epi32(acc[i][k], w, a[k]);
            }
        }
        UNROLL for (int i = 0; i < R; i++) {
            float s, m;
            if (halves)
                s = w_scale_q6(rows[i], b, 1), m = 0;
            else
                w_scale(t, rows[i], b, &s, &m);
            const __m512 sv = _mm512_set1_ps(s), mv = _mm512_set1_ps(m);
            UNROLL for (int k = 0; k < TG; k++) {
                __m512 ds = _mm512_mul_ps(sv, _mm512_loadu_ps(c[k]->d));
                f[i][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][k]), ds, f[i][k]);
                if (has_min) f[i][k] = _mm512_fnmadd_ps(mv, _mm512_loadu_ps(c[k]->s), f[i][k]);
            }
        }
    }
    UNROLL for (int i = 0; i < R; i++)
        UNROLL for (int k = 0; k < TG; k++) _mm512_storeu_ps(out[i][k], f[i][k]);
}

#define TILE_CASES(T)                                                  \
    case T:                                                            \
        if (R == 4 && TG == 3) tile_512(T, 4, 3, W, r, cells, nb, g, out); \
        else if (R == 4 && TG == 2) tile_512(T, 4, 2, W, r, cells, nb, g, out); \
        else if (R == 4) tile_512(T, 4, 1, W, r, cells, nb, g, out); \
        else if (TG == 3) tile_512(T, 1, 3, W, r, cells, nb, g, out); \
        else if (TG == 2) tile_512(T, 1, 2, W, r, cells, nb, g, out); \
        else tile_512(T, 1, 1, W, r, cells, nb, g, out);               \
        break;

T_512 static void tile_dispatch(const kvq_matw *W, int R, int TG, int64_t r, const act_cell *cells, int64_t nb,
                                int64_t g, float out[MAX_R][MAX_TG][GT]) {
    switch (W->type) {
        TILE_CASES(KVQ_TYPE_Q8_0)
        TILE_CASES(KVQ_TYPE_Q4_0)
        TILE_CASES(KVQ_TYPE_Q4_1)
        TILE_CASES(KVQ_TYPE_Q4_K)
        TILE_CASES(KVQ_TYPE_Q5_K)
        TILE_CASES(KVQ_TYPE_Q6_K)
    default: break;
    }
}

/* Y[tok][r..r+3] for 16 tokens from 4 rows of 16 tokens: a 4x16 transpose
 * in registers, then one 16-byte store per token. */
T_512 static void store_4x16(const float rows4[MAX_R][MAX_TG][GT], int k, float *Y, int64_t ldy) {
    __m512 f0 = _mm512_loadu_ps(rows4[0][k]), f1 = _mm512_loadu_ps(rows4[1][k]);
    __m512 f2 = _mm512_loadu_ps(rows4[2][k]), f3 = _mm512_loadu_ps(rows4[3][k]);
    __m512 a = _mm512_unpacklo_ps(f0, f1), b = _mm512_unpacklo_ps(f2, f3);
    __m512 c = _mm512_unpackhi_ps(f0, f1), d = _mm512_unpackhi_ps(f2, f3);
    /* lane l of t[m] holds token 4l + m */
    __m512 t[4] = {_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))),
                   _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))),
                   _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(c), _mm512_castps_pd(d))),
                   _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(c), _mm512_castps_pd(d)))};
    for (int m = 0; m < 4; m++) {
        _mm_storeu_ps(Y + (size_t)(m)*ldy, _mm512_extractf32x4_ps(t[m], 0));
        _mm_storeu_ps(Y + (size_t)(4 + m) * ldy, _mm512_extractf32x4_ps(t[m], 1));
        _mm_storeu_ps(Y + (size_t)(8 + m) * ldy, _mm512_extractf32x4_ps(t[m], 2));
        _mm_storeu_ps(Y + (size_t)(12 + m) * ldy, _mm512_extractf32x4_ps(t[m], 3));
    }
}

static void rows_512(const kvq_matw *W, int64_t r0, int64_t r1, const act_cell *cells, int n, float *Y, int64_t ldy) {
    const int64_t nb = W->cols / 32, ng = (n + GT - 1) / GT;
    float out[MAX_R][MAX_TG][GT];
    /* a few token groups at a time: their activations stay in L2 while the
     * rows stream past */
    for (int64_t g = 0; g < ng; g += MAX_TG) {
        const int TG = ng - g < MAX_TG ? (int)(ng - g) : MAX_TG;
        for (int64_t r = r0; r < r1;) {
            const int R = r1 - r >= MAX_R ? MAX_R : 1;
            tile_dispatch(W, R, TG, r, cells, nb, g, out);
            for (int k = 0; k < TG; k++) {
                const int64_t t0 = (g + k) * GT;
                if (R == 4 && t0 + GT <= n) {
                    store_4x16(out, k, Y + (size_t)t0 * ldy + r, ldy);
                    continue;
                }
                for (int i = 0; i < R; i++)
                    for (int l = 0; l < GT && t0 + l < n; l++) Y[(size_t)(t0 + l) * ldy + r + i] = out[i][k][l];
            }
            r += R;
        }
    }
}

void kvq_gemm_i8_rows(const kvq_matw *W, int64_t r0, int64_t r1, const void *act, int n, float *Y, int64_t ldy,
                      int isa) {
    if (isa == KVQ_ISA_AVX512)
        rows_512(W, r0, r1, act, n, Y, ldy);
    else
        rows_ref(W, r0, r1, act, n, Y, ldy);
}
