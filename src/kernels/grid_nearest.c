/* Nearest grid point search (grid_nearest.h). */
#include "grid_nearest.h"

#include <immintrin.h>
#include <math.h>
#include "../core/cpu.h"

void kvq_grid_nearest_ref(const float *soa, int n, int d, const float *y, int m, uint8_t *idx) {
    for (int t = 0; t < m; t++) {
        const float *yt = y + (size_t)t * d;
        int best = 0;
        float bd = INFINITY;
        for (int i = 0; i < n; i++) {
            float e = 0;
            for (int k = 0; k < d; k++) {
                const float u = yt[k] - soa[k * n + i];
                e += u * u;
            }
            if (e < bd) { bd = e; best = i; }
        }
        idx[t] = (uint8_t)best;
    }
}

/* Each lane keeps its own first minimum over the points i = lane (mod 8); the
 * lanes are then merged by distance, ties to the lower index, which is the
 * reference's first minimum. No FMA in the target: a fused multiply-add would
 * round differently from the reference. */
__attribute__((target("avx2"))) void kvq_grid_nearest_avx2(const float *soa, int n, int d, const float *y, int m,
                                                            uint8_t *idx) {
    if (n % 8 || d < 1 || d > 4) {
        kvq_grid_nearest_ref(soa, n, d, y, m, idx);
        return;
    }
    const __m256i eight = _mm256_set1_epi32(8), lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int t = 0; t < m; t++) {
        const float *yt = y + (size_t)t * d;
        __m256 yv[4];
        for (int k = 0; k < d; k++) yv[k] = _mm256_set1_ps(yt[k]);
        __m256 bd = _mm256_set1_ps(INFINITY);
        __m256i bi = _mm256_setzero_si256(), cur = lane;
        for (int i = 0; i < n; i += 8) {
            __m256 u = _mm256_sub_ps(yv[0], _mm256_loadu_ps(soa + i));
            __m256 e = _mm256_mul_ps(u, u);
            for (int k = 1; k < d; k++) {
                u = _mm256_sub_ps(yv[k], _mm256_loadu_ps(soa + k * n + i));
                e = _mm256_add_ps(e, _mm256_mul_ps(u, u));
            }
            const __m256 lt = _mm256_cmp_ps(e, bd, _CMP_LT_OQ);
            bd = _mm256_blendv_ps(bd, e, lt);
            bi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bi), _mm256_castsi256_ps(cur), lt));
            cur = _mm256_add_epi32(cur, eight);
        }
        float bdl[8];
        int32_t bil[8];
        _mm256_storeu_ps(bdl, bd);
        _mm256_storeu_si256((__m256i *)bil, bi);
        float best = bdl[0];
        int besti = bil[0];
        for (int l = 1; l < 8; l++)
            if (bdl[l] < best || (bdl[l] == best && bil[l] < besti)) { best = bdl[l]; besti = bil[l]; }
        idx[t] = (uint8_t)besti;
    }
}

void kvq_grid_nearest(const float *soa, int n, int d, const float *y, int m, uint8_t *idx) {
    if (kvq_isa_active() >= KVQ_ISA_AVX2) kvq_grid_nearest_avx2(soa, n, d, y, m, idx);
    else kvq_grid_nearest_ref(soa, n, d, y, m, idx);
}
