#include "ops.h"

#include <math.h>
#include <omp.h>
#include <string.h>

void kvq_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    ss = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

void kvq_swiglu(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g * (1.0f / (1.0f + expf(-g))) * up[i];
    }
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
    if (!t || t->dot_type == KVQ_TYPE_F32) return 0;
    return kvq_row_size((int)t->dot_type, cols) * (size_t)n;
}

#define ROW_BLOCK 16
#define TOK_BLOCK 32

void kvq_matmul(const kvq_matw *W, const float *X, int n, float *Y, void *qbuf, int n_threads) {
    const kvq_type_traits *t = kvq_traits(W->type);
    const int64_t cols = W->cols, rows = W->rows;
    const void *xq = X;
    size_t xrow = (size_t)cols * sizeof(float);
    if (t->dot_type != KVQ_TYPE_F32) {
        const kvq_type_traits *dt = kvq_traits(t->dot_type);
        xrow = kvq_row_size((int)t->dot_type, cols);
        for (int i = 0; i < n; i++) dt->from_float(X + (size_t)i * cols, (uint8_t *)qbuf + (size_t)i * xrow, cols);
        xq = qbuf;
    }
    const kvq_vec_dot_fn dot = t->vec_dot;
    const int64_t n_rb = (rows + ROW_BLOCK - 1) / ROW_BLOCK;
    /* Row blocks of W stay in cache while a block of tokens streams past;
     * decode (n = 1) is then one pass over the weights. */
#pragma omp parallel for schedule(static) num_threads(n_threads) if (rows * cols > 32768)
    for (int64_t rb = 0; rb < n_rb; rb++) {
        const int64_t r0 = rb * ROW_BLOCK, r1 = r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows;
        for (int t0 = 0; t0 < n; t0 += TOK_BLOCK) {
            const int t1 = t0 + TOK_BLOCK < n ? t0 + TOK_BLOCK : n;
            for (int64_t r = r0; r < r1; r++) {
                const uint8_t *w = (const uint8_t *)W->data + (size_t)r * W->row_bytes;
                for (int tk = t0; tk < t1; tk++)
                    Y[(size_t)tk * rows + r] = dot(w, (const uint8_t *)xq + (size_t)tk * xrow, cols);
            }
        }
    }
}
