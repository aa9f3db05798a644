/* HIGGS vector quantization (AQUA-KV's residual quantizer): a group of g
 * values (g a power of two) is scaled by its norm and rotated with the
 * unnormalized Walsh-Hadamard transform, so its coordinates are close to
 * standard normal; they are cut into d-tuples, each replaced by the index of
 * the nearest point of a grid that is MSE-optimal for N(0, I_d):
 *     s = ||x||_2,  y = H x / s,  idx_j = nearest(G, y[j d .. j d + d))
 *     x_hat = H (s * concat G[idx]) / g
 * Grids (d = 2 with 16, 64 or 256 points: 2, 3 or 4 bits per value; d = 4
 * with 256 points: 2 bits) are built by kvq itself with Lloyd iterations on
 * a fixed pseudo-random Gaussian sample, bit for bit the same every time,
 * once per process. */
#ifndef KVQ_QUANT_HIGGS_H
#define KVQ_QUANT_HIGGS_H
#include <stdint.h>
#include "../core/fp16.h"

typedef struct kvq_higgs_grid {
    int d, n;
    float pts[256 * 4]; /* [n][d] */
    float soa[4 * 256]; /* the same points coordinate-major, [d][n], for the SIMD search */
} kvq_higgs_grid;

/* The grid for (d, n) in {(2,16), (2,64), (2,256), (4,256)}, or NULL. */
const kvq_higgs_grid *kvq_higgs_grid_get(int d, int n);
/* Builds a grid into g (what kvq_higgs_grid_get caches); for tests. */
void kvq_higgs_build(int d, int n, kvq_higgs_grid *g);

/* One group of g values: g/d indices (one byte each, n <= 256) and the fp16 norm. */
void kvq_higgs_quant(const kvq_higgs_grid *G, const float *x, int g, uint8_t *idx, kvq_f16 *norm);
void kvq_higgs_dequant(const kvq_higgs_grid *G, const uint8_t *idx, kvq_f16 norm, int g, float *x);

#endif
