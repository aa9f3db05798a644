/* Element-wise and row operations of the forward pass. */
#ifndef KVQ_KERNELS_OPS_H
#define KVQ_KERNELS_OPS_H
#include <stdbool.h>
#include <stdint.h>
#include "types.h"

void kvq_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
void kvq_swiglu(float *gate, const float *up, int n); /* gate = silu(gate) * up */
void kvq_swiglu_ref(float *gate, const float *up, int n); /* scalar reference */
void kvq_add(float *y, const float *x, int n);

/* Rotary embedding on n_heads heads of head_dim, rotating the first n_rot
 * dims of each: adjacent pairs (neox=false) or halves (neox=true).
 * cs holds cos/sin pairs for the n_rot/2 frequencies at this position. */
void kvq_rope_apply(float *x, int n_heads, int head_dim, int n_rot, bool neox, const float *cs);
/* Fills cs[2*i], cs[2*i+1] = cos, sin of pos * freq_i. */
void kvq_rope_cache(float *cs, int32_t pos, int n_rot, float theta, float freq_scale, const float *freq_factors);

/* Y[t][r] = W[r] . X[t] for t < n: W is [rows][cols] of any type with
 * kernels; qbuf must hold n rows of X converted to W's partner type (see
 * kvq_matmul_qbuf_size). */
typedef struct kvq_matw {
    kvq_type type;
    int64_t cols, rows;
    const void *data;
    size_t row_bytes;
    const void *const *aux; /* the tensor's companions (mixed-precision types), or NULL */
    const uint64_t *aux_bytes;
    /* a row-interleaved copy of the matrix (repack.h) and its kernels: when
     * set, products read it instead of data */
    const void *packed;
    const struct kvq_packed_kernel *pk;
} kvq_matw;
size_t kvq_matmul_qbuf_size(kvq_type wtype, int64_t cols, int n);
void kvq_matmul(const kvq_matw *W, const float *X, int n, float *Y, void *qbuf, int n_threads);
/* Y[m] = W[m] X for nw <= KVQ_MATMUL_MAX matrices sharing the input (Q, K, V;
 * gate, up). In decode, when all have the same type and width, X is quantized
 * once and one parallel loop covers them all. */
#define KVQ_MATMUL_MAX 4
void kvq_matmul_multi(const kvq_matw *W, int nw, const float *X, int n, float *const *Y, void *qbuf, int n_threads);

#endif
