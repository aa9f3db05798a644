#include "ops.h"

#include "../core/cpu.h"
#include "gemm_i8.h"
#include "repack.h"
#include "simd_x86.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

void kvq_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    ss = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

void kvq_swiglu_ref(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g * (1.0f / (1.0f + expf(-g))) * up[i];
    }
}

/* In decode this runs on one thread between two parallel products; with
 * scalar expf it was about a tenth of a small model's time per token. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))) static void swiglu_512(float *gate,
                                                                                                const float *up, int n) {
    int i = 0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        /* exp(-g) overflows for g < -88: then silu(g) = g / inf = -0, as in expf */
        __m512 e = kvq_exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        _mm512_storeu_ps(gate + i, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up + i)));
    }
    if (i < n) kvq_swiglu_ref(gate + i, up + i, n - i);
}

void kvq_swiglu(float *gate, const float *up, int n) {
    if (kvq_isa_active() == KVQ_ISA_AVX512)
        swiglu_512(gate, up, n);
    else
        kvq_swiglu_ref(gate, up, n);
}

void kvq_add(float *y, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += x[i];
}

void kvq_rope_cache(float *cs, int32_t pos, int n_rot, float theta, float freq_scale, const float *freq_factors) {
    for (int i = 0; i < n_rot / 2; i++) {
        float freq = 1.0f / powf(theta, (float)(2 * i) / (float)n_rot);
        if (freq_factors) freq /= freq_factors[i];
        float a = (float)pos * freq * freq_scale;
        cs[2 * i] = cosf(a);
        cs[2 * i + 1] = sinf(a);
    }
}

void kvq_rope_apply(float *x, int n_heads, int head_dim, int n_rot, bool neox, const float *cs) {
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

size_t kvq_matmul_qbuf_size(kvq_type wtype, int64_t cols, int n) {
    const kvq_type_traits *t = kvq_traits(wtype);
    if (!t) return 0;
    size_t s = t->dot_type == KVQ_TYPE_F32 ? 0 : kvq_row_size((int)t->dot_type, cols) * (size_t)n;
    if (kvq_gemm_i8_ok(wtype, cols)) {
        size_t a = kvq_gemm_i8_act_size(cols, n);
        if (a > s) s = a;
    }
    const kvq_matvec_kernel *own = t->matvec;
    if (own) {
        size_t a = own->act_size(cols) * (size_t)n;
        if (a > s) s = a;
    }
    const size_t a = kvq_repack_act_size(wtype, cols) * (size_t)n;
    return a > s ? a : s;
}

#define ROW_BLOCK 16
#define TOK_BLOCK 32
#define GEMM_MIN_TOKENS 8
/* With a multi-row dot the int8 path stays ahead of dequantize + sgemm for
 * longer: a decode batch of many sequences must not pay a dequantization of
 * every weight per step. Measured on the 1B q4_0 model, 2 Zen 3 threads:
 * int8 ~35 rows/s at any count, sgemm 28.5 at 32 rows, 40 at 64, 48 at 128. */
#define GEMM_MIN_TOKENS_XN 48

static int gemm_min(const kvq_matw *W) {
    const kvq_type_traits *t = kvq_traits(W->type);
    /* the repacked int8 kernels beat dequantize + sgemm at every batch on the
     * AVX2 host they are for (1B q4_0, 256-token prefill: 89 tok/s against 50) */
    if (W->pk) return INT32_MAX;
    return t && t->vec_dot_xn && !t->matvec ? GEMM_MIN_TOKENS_XN : GEMM_MIN_TOKENS;
}
#define GEMM_ROWS 64

/* Batched (prefill) product: each thread dequantizes a tile of GEMM_ROWS
 * weight rows to f32 once and multiplies all n tokens by it with sgemm, so
 * the dequantization is amortized over the batch. */
static void matmul_gemm(const kvq_matw *W, const float *X, int n, float *Y, int n_threads) {
    kvq_blas_serial(); /* kvq parallelizes over weight tiles itself */
    const kvq_type_traits *t = kvq_traits(W->type);
    /* two tiles per thread: few enough that the activations are packed rarely,
     * enough to balance the threads */
    const int64_t cols = W->cols, rows = W->rows;
    int64_t tr = (rows + 2 * n_threads - 1) / (2 * n_threads);
    tr = (tr + GEMM_ROWS - 1) / GEMM_ROWS * GEMM_ROWS;
    if (tr * cols > (8ll << 20)) tr = (8ll << 20) / cols / GEMM_ROWS * GEMM_ROWS; /* tile buffer <= 32 MiB */
    if (tr < GEMM_ROWS) tr = GEMM_ROWS;
    const int64_t n_tiles = (rows + tr - 1) / tr;
#pragma omp parallel num_threads(n_threads)
    {
        float *tile = W->type == KVQ_TYPE_F32 ? NULL : malloc((size_t)tr * (size_t)cols * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int64_t ti = 0; ti < n_tiles; ti++) {
            const int64_t r0 = ti * tr, nr = rows - r0 < tr ? rows - r0 : tr;
            const float *B;
            if (W->type == KVQ_TYPE_F32) {
                B = (const float *)((const uint8_t *)W->data + (size_t)r0 * W->row_bytes);
            } else {
                if (!tile) continue; /* out of memory: rows stay unset; cannot happen in practice */
                if (!t->to_float) {
                    t->matvec->dequant(W, r0, nr, tile);
                } else {
                    for (int64_t r = 0; r < nr; r++)
                        t->to_float((const uint8_t *)W->data + (size_t)(r0 + r) * W->row_bytes, tile + (size_t)r * cols,
                                    cols);
                }
                B = tile;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)nr, (int)cols, 1.0f, X, (int)cols, B,
                        (int)cols, 0.0f, Y + r0, (int)rows);
        }
        free(tile);
    }
}

#define I8_ROWS 64

/* Batched product on int8 (see gemm_i8.h): the activations are quantized
 * once, split by token groups, then the threads share out tiles of rows. */
static void matmul_i8(const kvq_matw *W, const float *X, int n, float *Y, void *act, int n_threads) {
    const int isa = kvq_isa_active();
    const int64_t ng = (n + 15) / 16, n_tiles = (W->rows + I8_ROWS - 1) / I8_ROWS;
#pragma omp parallel num_threads(n_threads)
    {
#pragma omp for schedule(static)
        for (int64_t g = 0; g < ng; g++) kvq_gemm_i8_quant(W->type, X, W->cols, n, g, g + 1, act, isa);
#pragma omp for schedule(dynamic, 1)
        for (int64_t ti = 0; ti < n_tiles; ti++) {
            const int64_t r0 = ti * I8_ROWS, r1 = r0 + I8_ROWS < W->rows ? r0 + I8_ROWS : W->rows;
            kvq_gemm_i8_rows(W, r0, r1, act, n, Y, W->rows, isa);
        }
    }
}

/* Decode: the activations are quantized once for all nw matrices (same type
 * and width), then one parallel loop covers the row blocks of all of them,
 * so a token pays one fork/join for Q, K and V together. */
static void matvec(const kvq_matw *W, int nw, const float *X, int n, float *const *Y, void *qbuf, int n_threads) {
    const kvq_type_traits *t = kvq_traits(W[0].type);
    const int64_t cols = W[0].cols;
    const void *xq = X;
    size_t xrow = (size_t)cols * sizeof(float);
    kvq_vec_dot_fn dot = t->vec_dot;
    kvq_rows_fn rows_fn = NULL;
    const kvq_matvec_kernel *own = t->matvec;
    const struct kvq_packed_kernel *pk = W[0].pk;
    if (pk) {
        xrow = pk->act_size(cols);
        for (int i = 0; i < n; i++) pk->quant(X + (size_t)i * cols, (uint8_t *)qbuf + (size_t)i * xrow, cols);
        xq = qbuf;
    } else if (own) {
        xrow = own->act_size(cols);
        for (int i = 0; i < n; i++) own->quant(X + (size_t)i * cols, (uint8_t *)qbuf + (size_t)i * xrow, cols);
        xq = qbuf;
        dot = own->dot;
        rows_fn = own->rows;
    } else if (t->dot_type != KVQ_TYPE_F32) {
        const kvq_type_traits *dt = kvq_traits(t->dot_type);
        xrow = kvq_row_size((int)t->dot_type, cols);
        for (int i = 0; i < n; i++) dt->from_float(X + (size_t)i * cols, (uint8_t *)qbuf + (size_t)i * xrow, cols);
        xq = qbuf;
    }
    /* a repacked kernel reads each token's activations once per row block:
     * a batch gets larger blocks, so they are read less often */
    const int64_t rb1 = pk && pk->row_block ? pk->row_block : ROW_BLOCK;
    const int64_t RB = pk && n > 8 ? 4 * rb1 : rb1; /* 1B q4_0, 512-token prefill: 92 tok/s, 81 at 128 */
    int64_t first_rb[KVQ_MATMUL_MAX + 1] = {0}, work = 0;
    for (int m = 0; m < nw; m++) {
        first_rb[m + 1] = first_rb[m] + (W[m].rows + RB - 1) / RB;
        work += W[m].rows * cols;
    }
    const int64_t n_rb = first_rb[nw];
    /* Row blocks of W stay in cache while a block of tokens streams past;
     * decode (n = 1) is then one pass over the weights, each thread reading
     * a few long contiguous ranges (the hardware prefetcher follows one
     * stream per thread best). Guided, not static: the ranges shrink
     * towards the end, so a thread slowed by another process does not
     * leave the other waiting for a whole half (+3-6% decode on a shared
     * Zen 5 host; within noise on Zen 3). */
#pragma omp parallel for schedule(guided) num_threads(n_threads) if (work >= KVQ_FORK_MIN_WORK)
    for (int64_t rb = 0; rb < n_rb; rb++) {
        int m = 0;
        while (rb >= first_rb[m + 1]) m++;
        const kvq_matw *w = &W[m];
        const int64_t r0 = (rb - first_rb[m]) * RB, r1 = r0 + RB < w->rows ? r0 + RB : w->rows;
        if (pk) {
            pk->rows(w->packed, cols, w->rows, r0, r1, xq, xrow, n, Y[m], w->rows);
            continue;
        }
        if (own && own->rows_w) { /* rows that need their companions */
            for (int tk = 0; tk < n; tk++)
                own->rows_w(w, r0, r1, (const uint8_t *)xq + (size_t)tk * xrow, Y[m] + (size_t)tk * w->rows + r0);
            continue;
        }
        if (rows_fn && n == 1) {
            rows_fn((const uint8_t *)w->data + (size_t)r0 * w->row_bytes, w->row_bytes, (int)(r1 - r0), xq, cols, Y[m] + r0);
            continue;
        }
        if (t->vec_dot_xn && !own && n > 1) { /* each row unpacked once per KVQ_DOT_XN activation rows */
            float o[KVQ_DOT_XN];
            for (int64_t r = r0; r < r1; r++) {
                const uint8_t *wr = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
                for (int t0 = 0; t0 < n; t0 += KVQ_DOT_XN) {
                    const int nx = n - t0 < KVQ_DOT_XN ? n - t0 : KVQ_DOT_XN;
                    t->vec_dot_xn(wr, (const uint8_t *)xq + (size_t)t0 * xrow, xrow, nx, cols, o);
                    for (int k = 0; k < nx; k++) Y[m][(size_t)(t0 + k) * w->rows + r] = o[k];
                }
            }
            continue;
        }
        for (int t0 = 0; t0 < n; t0 += TOK_BLOCK) {
            const int t1 = t0 + TOK_BLOCK < n ? t0 + TOK_BLOCK : n;
            for (int64_t r = r0; r < r1; r++) {
                const uint8_t *wr = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
                for (int tk = t0; tk < t1; tk++)
                    Y[m][(size_t)tk * w->rows + r] = dot(wr, (const uint8_t *)xq + (size_t)tk * xrow, cols);
            }
        }
    }
}

void kvq_matmul(const kvq_matw *W, const float *X, int n, float *Y, void *qbuf, int n_threads) {
    if (n >= GEMM_MIN_TOKENS && !W->pk && kvq_isa_active() == KVQ_ISA_AVX512 && kvq_gemm_i8_ok(W->type, W->cols)) {
        matmul_i8(W, X, n, Y, qbuf, n_threads);
        return;
    }
    if (n >= gemm_min(W)) {
        matmul_gemm(W, X, n, Y, n_threads);
        return;
    }
    matvec(W, 1, X, n, &Y, qbuf, n_threads);
}

void kvq_matmul_multi(const kvq_matw *W, int nw, const float *X, int n, float *const *Y, void *qbuf, int n_threads) {
    bool shared = nw >= 1 && nw <= KVQ_MATMUL_MAX && n < gemm_min(&W[0]);
    for (int m = 1; m < nw && shared; m++)
        shared = W[m].type == W[0].type && W[m].cols == W[0].cols && W[m].pk == W[0].pk;
    if (shared) {
        matvec(W, nw, X, n, Y, qbuf, n_threads);
        return;
    }
    for (int m = 0; m < nw; m++) kvq_matmul(&W[m], X, n, Y[m], qbuf, n_threads);
}
