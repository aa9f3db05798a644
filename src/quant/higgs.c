/* HIGGS grids and group quantization (higgs.h). */
#include "higgs.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "../kernels/fwht.h"
#include "../kernels/grid_nearest.h"

#define N_SAMPLES 32768
#define ITERS 25

/* Standard normal samples from a fixed xorshift stream (Box-Muller), so the
 * grids are the same on every machine and run. */
static void gaussian(float *out, int n) {
    uint64_t s = 0x853c49e6748fea9bull;
    for (int i = 0; i < n; i += 2) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            u[k] = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        }
        const double r = sqrt(-2.0 * log(u[0])), a = 6.283185307179586 * u[1];
        out[i] = (float)(r * cos(a));
        if (i + 1 < n) out[i + 1] = (float)(r * sin(a));
    }
}

static void to_soa(kvq_higgs_grid *g) {
    for (int i = 0; i < g->n; i++)
        for (int k = 0; k < g->d; k++) g->soa[k * g->n + i] = g->pts[i * g->d + k];
}

void kvq_higgs_build(int d, int n, kvq_higgs_grid *g) {
    memset(g, 0, sizeof *g);
    g->d = d;
    g->n = n;
    const int m = N_SAMPLES;
    float *x = malloc((size_t)m * d * sizeof(float));
    uint8_t *a = malloc((size_t)m);
    double *sum = malloc((size_t)n * d * sizeof(double));
    int *cnt = malloc((size_t)n * sizeof(int));
    if (!x || !a || !sum || !cnt) { free(x); free(a); free(sum); free(cnt); return; }
    gaussian(x, m * d);
    /* start from evenly spaced samples of the stream */
    for (int i = 0; i < n; i++) memcpy(g->pts + i * d, x + (size_t)(i * (m / n)) * d, (size_t)d * sizeof(float));
    for (int it = 0; it < ITERS; it++) {
        /* the assignments in parallel (every ISA's search gives the same index), the sums in
         * sample order: the same bits whatever the thread count and the CPU */
        to_soa(g);
#pragma omp parallel for schedule(static)
        for (int j = 0; j < m; j += 512) kvq_grid_nearest(g->soa, n, d, x + (size_t)j * d, m - j < 512 ? m - j : 512, a + j);
        memset(sum, 0, (size_t)n * d * sizeof(double));
        memset(cnt, 0, (size_t)n * sizeof(int));
        for (int j = 0; j < m; j++) {
            cnt[a[j]]++;
            for (int k = 0; k < d; k++) sum[a[j] * d + k] += x[(size_t)j * d + k];
        }
        for (int i = 0; i < n; i++)
            if (cnt[i])
                for (int k = 0; k < d; k++) g->pts[i * d + k] = (float)(sum[i * d + k] / cnt[i]);
    }
    to_soa(g);
    free(x); free(a); free(sum); free(cnt);
}

static kvq_higgs_grid GRIDS[4];
static pthread_once_t once[4] = {PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT};
static void b0(void) { kvq_higgs_build(2, 16, &GRIDS[0]); }
static void b1(void) { kvq_higgs_build(2, 64, &GRIDS[1]); }
static void b2(void) { kvq_higgs_build(2, 256, &GRIDS[2]); }
static void b3(void) { kvq_higgs_build(4, 256, &GRIDS[3]); }

const kvq_higgs_grid *kvq_higgs_grid_get(int d, int n) {
    static void (*const build[4])(void) = {b0, b1, b2, b3};
    const int i = d == 2 && n == 16 ? 0 : d == 2 && n == 64 ? 1 : d == 2 && n == 256 ? 2 : d == 4 && n == 256 ? 3 : -1;
    if (i < 0) return NULL;
    pthread_once(&once[i], build[i]);
    return GRIDS[i].n ? &GRIDS[i] : NULL;
}

void kvq_higgs_quant(const kvq_higgs_grid *G, const float *x, int g, uint8_t *idx, kvq_f16 *norm) {
    float y[1024];
    double ss = 0;
    for (int i = 0; i < g; i++) ss += (double)x[i] * x[i];
    const float s = (float)sqrt(ss);
    *norm = kvq_f32_to_f16(s);
    const float sq = kvq_f16_to_f32(*norm), inv = sq > 0 ? 1.0f / sq : 0.0f;
    memcpy(y, x, (size_t)g * sizeof(float));
    kvq_fwht(y, g);
    for (int i = 0; i < g; i++) y[i] *= inv;
    kvq_grid_nearest(G->soa, G->n, G->d, y, g / G->d, idx);
}

void kvq_higgs_dequant(const kvq_higgs_grid *G, const uint8_t *idx, kvq_f16 norm, int g, float *x) {
    const float s = kvq_f16_to_f32(norm) / (float)g;
    for (int j = 0; j < g / G->d; j++)
        for (int k = 0; k < G->d; k++) x[j * G->d + k] = G->pts[idx[j] * G->d + k];
    kvq_fwht(x, g);
    for (int i = 0; i < g; i++) x[i] *= s;
}
