/* SnapKV scoring and selection (snapkv.h). */
#include "snapkv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "topk.h"

#define TILE 128

int kvq_snapkv_scores(const kvq_kv_cache *c, int il, int h, int window, float *out) {
    const kvq_kv_layer *L = &c->layers[il];
    const int W = c->obs_w, nh = c->g.n_head, nkv = c->g.n_head_kv, hd = c->g.head_dim,
              rep = nh / nkv, n = L->n;
    int w = window < c->obs_n ? window : c->obs_n;
    if (w > W) w = W;
    if (w > n) w = n;
    const int pre = n - w;
    memset(out, 0, (size_t)(pre > 0 ? pre : 0) * sizeof(float));
    if (w <= 0 || pre <= 0) return w > 0 ? w : 0;
    const size_t row = (size_t)nh * hd;
    const float *ring = c->obs_q + (size_t)il * W * row;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = malloc((size_t)rep * n * sizeof(float)), *tile = malloc((size_t)rep * TILE * sizeof(float));
    if (!sc || !tile) {
        free(sc);
        free(tile);
        return 0;
    }
    for (int i = 0; i < w; i++) {
        /* query i of the window is slot pre + i: it sees slots [0, pre + i] */
        const float *q = ring + (size_t)(W - w + i) * row + (size_t)h * rep * hd;
        const int vis = pre + i + 1;
        for (int t0 = 0, m; t0 < vis; t0 += m) {
            m = vis - t0 < TILE ? vis - t0 : TILE;
            const int pe = (t0 / L->page + 1) * L->page;
            if (t0 + m > pe) m = pe - t0;
            L->codec->qk(L, KVQ_VIEW_FULL, vis, h, t0, m, q, rep, tile);
            for (int g = 0; g < rep; g++) memcpy(sc + (size_t)g * n + t0, tile + (size_t)g * m, (size_t)m * sizeof(float));
        }
        for (int g = 0; g < rep; g++) {
            float *s = sc + (size_t)g * n, mx = -INFINITY;
            for (int t = 0; t < vis; t++) mx = s[t] * scale > mx ? s[t] * scale : mx;
            double z = 0;
            for (int t = 0; t < vis; t++) z += exp((double)(s[t] * scale - mx));
            const double iz = 1.0 / z;
            for (int t = 0; t < pre; t++) out[t] += (float)(exp((double)(s[t] * scale - mx)) * iz);
        }
    }
    free(sc);
    free(tile);
    return w;
}

/* Sliding-window maximum with a monotonic deque: linear in n whatever the pool. */
void kvq_maxpool1d(const float *x, int n, int pool, float *out) {
    const int half = pool / 2;
    int *dq = malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    if (!dq) {
        memcpy(out, x, (size_t)n * sizeof(float));
        return;
    }
    int head = 0, tail = 0, next = 0;
    for (int i = 0; i < n; i++) {
        const int hi = i + half < n - 1 ? i + half : n - 1;
        for (; next <= hi; next++) {
            while (tail > head && x[dq[tail - 1]] <= x[next]) tail--;
            dq[tail++] = next;
        }
        while (dq[head] < i - half) head++;
        out[i] = x[dq[head]];
    }
    free(dq);
}

kvq_status kvq_snapkv_select(const kvq_kv_cache *c, int il, int n_keep, int window, int pool, int32_t *keep,
                             int n_threads) {
    const int n = c->layers[il].n, nkv = c->g.n_head_kv;
    if (n_keep >= n || n_keep < 0) return KVQ_ERR_ARG;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (nkv > 1 && n >= 1024)
    for (int h = 0; h < nkv; h++) {
        float *score = malloc((size_t)n * sizeof(float)), *pooled = malloc((size_t)n * sizeof(float)),
              *tmp = malloc((size_t)n * sizeof(float));
        int32_t *k = keep + (size_t)h * n_keep;
        if (!score || !pooled || !tmp) {
#pragma omp atomic write
            failed = 1;
        } else {
            /* a window larger than the budget: the newest n_keep only */
            const int w = kvq_snapkv_scores(c, il, h, window < n_keep ? window : n_keep, score), pre = n - w;
            kvq_maxpool1d(score, pre, pool, pooled);
            int m = kvq_topk(pooled, pre, n_keep - w, tmp, k);
            for (int t = pre; t < n; t++) k[m++] = t;
        }
        free(score);
        free(pooled);
        free(tmp);
    }
    return failed ? KVQ_ERR_NOMEM : KVQ_OK;
}

kvq_status kvq_snapkv_evict(kvq_kv_cache *c, int il, int n_keep, int window, int pool) {
    if (c->layers[il].n <= n_keep) return KVQ_OK;
    int32_t *keep = malloc((size_t)n_keep * (size_t)c->g.n_head_kv * sizeof *keep + 1);
    if (!keep) return KVQ_ERR_NOMEM;
    kvq_status st = kvq_snapkv_select(c, il, n_keep, window, pool, keep, c->n_threads);
    if (!st) st = kvq_kv_compact(c, il, keep, n_keep);
    free(keep);
    return st;
}

