/* Nearest grid point for a run of short vectors: the search at the heart of
 * HIGGS quantization (a 4-D tuple against 256 points is 1024 multiply-adds).
 * The grid is coordinate-major (soa[k * n + i] is coordinate k of point i),
 * so eight points are compared at once. Every variant computes the same
 * squared distances in the same order, ((y0-p0)^2 + (y1-p1)^2) + ..., without
 * fused multiply-adds, and keeps the lowest index among equal distances: the
 * results are identical bit for bit, which the grids' reproducibility relies on. */
#ifndef KVQ_KERNELS_GRID_NEAREST_H
#define KVQ_KERNELS_GRID_NEAREST_H
#include <stdint.h>

/* idx[t] = the index of the point of the d-dimensional grid soa (n <= 256 points)
 * nearest to y[t*d .. t*d + d), for t < m. NaN inputs give index 0. */
void kvq_grid_nearest_ref(const float *soa, int n, int d, const float *y, int m, uint8_t *idx);
void kvq_grid_nearest_avx2(const float *soa, int n, int d, const float *y, int m, uint8_t *idx);
void kvq_grid_nearest(const float *soa, int n, int d, const float *y, int m, uint8_t *idx); /* the active ISA's */

#endif
