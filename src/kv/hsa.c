/* Hybrid sparse attention: page summaries and per-step page choice (hsa.h). */
#include "hsa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/fp16.h"
#include "../kernels/types.h"
#include "kv_simd.h"
#include "topk.h"

/* fp16 of v rounded towards -inf (down) or +inf (up). */
static uint16_t f16_dir(float v, bool up) {
    uint16_t h = kvq_f32_to_f16(v);
    const float r = kvq_f16_to_f32(h);
    if (isnan(v) || r == v || isinf(r)) return h;
    const bool neg = h & 0x8000;
    if (up == (r < v)) { /* move one step towards the wanted direction */
        if (up) h = neg ? (h == 0x8000 ? 0x0001 : h - 1) : h + 1;
        else h = neg ? h + 1 : (h == 0 ? 0x8001 : h - 1);
    }
    return h;
}

kvq_status kvq_hsa_init(kvq_hsa *s, const kvq_kv_cache *c, int page) {
    memset(s, 0, sizeof *s);
    s->page = page;
    s->n_layer = c->g.n_layer;
    s->n_head_kv = c->g.n_head_kv;
    s->head_dim = c->g.head_dim;
    s->mem = (kvq_kv_mem *)&c->mem;
    s->n_slots = calloc((size_t)s->n_layer, sizeof *s->n_slots);
    s->cap_pages = calloc((size_t)s->n_layer, sizeof *s->cap_pages);
    s->mn = calloc((size_t)s->n_layer, sizeof *s->mn);
    s->mx = calloc((size_t)s->n_layer, sizeof *s->mx);
    return s->n_slots && s->cap_pages && s->mn && s->mx ? KVQ_OK : KVQ_ERR_NOMEM;
}

void kvq_hsa_free(kvq_hsa *s) {
    for (int l = 0; s->mn && l < s->n_layer; l++) {
        free(s->mn[l]);
        free(s->mx[l]);
    }
    if (s->bytes) kvq_kv_mem_charge(s->mem, -(int64_t)s->bytes);
    free(s->mn);
    free(s->mx);
    free(s->n_slots);
    free(s->cap_pages);
    memset(s, 0, sizeof *s);
}

static size_t layer_bytes(const kvq_hsa *s, int cap) {
    return 2 * (size_t)s->n_head_kv * (size_t)s->head_dim * (size_t)cap * sizeof(uint16_t);
}

uint64_t kvq_hsa_bytes_for(const kvq_hsa *s, int64_t n_slots) {
    return layer_bytes(s, (int)((n_slots + s->page - 1) / s->page));
}

/* Room for `pages` pages in layer il (channel-major rows are re-laid out on growth). */
static kvq_status grow(kvq_hsa *s, int il, int pages) {
    if (pages <= s->cap_pages[il]) return KVQ_OK;
    int cap = s->cap_pages[il] ? s->cap_pages[il] : 16;
    while (cap < pages) cap *= 2;
    const size_t old = layer_bytes(s, s->cap_pages[il]), now = layer_bytes(s, cap);
    kvq_status st = kvq_kv_mem_charge(s->mem, (int64_t)(now - old));
    if (st) return st;
    uint16_t *mn = malloc(now / 2), *mx = malloc(now / 2);
    if (!mn || !mx) {
        free(mn);
        free(mx);
        kvq_kv_mem_charge(s->mem, -(int64_t)(now - old));
        return KVQ_ERR_NOMEM;
    }
    const int rows = s->n_head_kv * s->head_dim, used = (s->n_slots[il] + s->page - 1) / s->page;
    for (int r = 0; r < rows && s->mn[il]; r++) {
        memcpy(mn + (size_t)r * cap, s->mn[il] + (size_t)r * s->cap_pages[il], (size_t)used * sizeof(uint16_t));
        memcpy(mx + (size_t)r * cap, s->mx[il] + (size_t)r * s->cap_pages[il], (size_t)used * sizeof(uint16_t));
    }
    free(s->mn[il]);
    free(s->mx[il]);
    s->mn[il] = mn;
    s->mx[il] = mx;
    s->cap_pages[il] = cap;
    s->bytes += now - old;
    return KVQ_OK;
}

kvq_status kvq_hsa_append(kvq_hsa *s, int il, const float *k, int n, int slot0) {
    if (n <= 0) return KVQ_OK;
    const int P = s->page, hd = s->head_dim, nkv = s->n_head_kv;
    kvq_status st = grow(s, il, (slot0 + n + P - 1) / P);
    if (st) return st;
    const int cap = s->cap_pages[il];
    for (int t = 0; t < n; t++) {
        const int slot = slot0 + t, p = slot / P;
        const bool first = slot % P == 0;
        for (int h = 0; h < nkv; h++) {
            const float *kr = k + ((size_t)t * nkv + h) * hd;
            uint16_t *mn = s->mn[il] + (size_t)h * hd * cap + p, *mx = s->mx[il] + (size_t)h * hd * cap + p;
            for (int i = 0; i < hd; i++) {
                const float v = kr[i];
                uint16_t *a = mn + (size_t)i * cap, *b = mx + (size_t)i * cap;
                if (first || v < kvq_f16_to_f32(*a)) *a = f16_dir(v, false);
                if (first || v > kvq_f16_to_f32(*b)) *b = f16_dir(v, true);
            }
        }
    }
    if (slot0 + n > s->n_slots[il]) s->n_slots[il] = slot0 + n;
    return KVQ_OK;
}

kvq_status kvq_hsa_resync(kvq_hsa *s, kvq_kv_cache *c, int il, int from) {
    const kvq_kv_layer *L = &c->layers[il];
    const int P = s->page, n = L->n, p0 = (from < 0 ? 0 : from) / P;
    s->n_slots[il] = p0 * P < n ? p0 * P : n;
    const int row = s->n_head_kv * s->head_dim, chunk = 256;
    float *k = malloc((size_t)chunk * row * sizeof(float));
    if (!k) return KVQ_ERR_NOMEM;
    kvq_status st = KVQ_OK;
    for (int t0 = p0 * P; !st && t0 < n; t0 += chunk) {
        const int m = n - t0 < chunk ? n - t0 : chunk;
        L->codec->read(L, KVQ_VIEW_FULL, t0, m, k, NULL);
        st = kvq_hsa_append(s, il, k, m, t0);
    }
    free(k);
    s->n_slots[il] = n;
    return st;
}

/* Shared by selection and the test hook: the group's summed token
 * probabilities per page into score[n_pages]. tmp holds
 * (n_q + 1) * n_pages + head_dim floats. The bound row of each chosen
 * channel is converted from fp16 once and serves every head of the group. */
static void page_scores(const kvq_hsa *s, int il, int h, const float *q, int n_q, int n_vis, int r, float *score,
                        float *tmp) {
    const int hd = s->head_dim, P = s->page, n_pages = (n_vis + P - 1) / P, cap = s->cap_pages[il];
    float a[1024], sign[1024];
    int32_t I[1024];
    for (int i = 0; i < hd; i++) {
        float sa = 0, ss = 0;
        for (int g = 0; g < n_q; g++) { sa += fabsf(q[(size_t)g * hd + i]); ss += q[(size_t)g * hd + i]; }
        a[i] = sa;
        sign[i] = ss;
    }
    if (r > hd) r = hd;
    r = kvq_topk(a, hd, r, tmp, I);
    float *row = tmp, *u = tmp + n_pages;
    memset(u, 0, (size_t)n_q * n_pages * sizeof(float));
    const kvq_to_float_fn f16 = kvq_traits(KVQ_TYPE_F16)->to_float;
    const uint16_t *mn = s->mn[il] + (size_t)h * hd * cap, *mx = s->mx[il] + (size_t)h * hd * cap;
    for (int j = 0; j < r; j++) {
        const int i = I[j];
        f16((sign[i] > 0 ? mx : mn) + (size_t)i * cap, row, n_pages);
        for (int g = 0; g < n_q; g++) {
            const float qi = q[(size_t)g * hd + i];
            float *ug = u + (size_t)g * n_pages;
#pragma omp simd
            for (int p = 0; p < n_pages; p++) ug[p] += qi * row[p];
        }
    }
    /* per head, the softmax over tokens of u / tau (a page counts once per token it holds),
     * exponentials by the attention kernels' vectorized softmax step */
    const kvq_attn_kernels *ak = kvq_attn_kernels_active();
    const int last = n_vis - (n_pages - 1) * P;
    memset(score, 0, (size_t)n_pages * sizeof(float));
    for (int g = 0; g < n_q; g++) {
        const float *qg = q + (size_t)g * hd;
        float sel = 0, all = 0;
        for (int j = 0; j < r; j++) sel += fabsf(qg[I[j]]);
        for (int i = 0; i < hd; i++) all += fabsf(qg[i]);
        const float tau = all > 0 ? sqrtf((float)hd * sel / all) : 1.0f;
        float *ug = u + (size_t)g * n_pages, m = -INFINITY, l = 0;
        ak->softmax_step(ug, n_pages, tau > 0 ? 1.0f / tau : 1.0f, &m, &l);
        const double z = (double)P * l + (double)(last - P) * ug[n_pages - 1];
        const float w = z > 0 ? (float)(P / z) : 0.0f;
#pragma omp simd
        for (int p = 0; p < n_pages; p++) score[p] += ug[p] * w;
        score[n_pages - 1] += z > 0 ? ug[n_pages - 1] * (float)((last - P) / z) : 0.0f;
    }
}

void kvq_hsa_page_scores(const kvq_hsa *s, int il, int h, const float *q, int n_q, int n_vis, int r, float *out) {
    const int n_pages = (n_vis + s->page - 1) / s->page;
    float *tmp = malloc(((size_t)s->head_dim + (size_t)(n_q + 1) * n_pages) * sizeof(float));
    if (!tmp) return;
    page_scores(s, il, h, q, n_q, n_vis, r, out, tmp);
    free(tmp);
}

int kvq_hsa_select(const kvq_hsa *s, int il, int h, const float *q, int n_q, int n_vis, int r, int k,
                   const uint8_t *cand, int cand_from, kvq_span *out, int cap) {
    const int P = s->page, n_pages = (n_vis + P - 1) / P, want = (k + P - 1) / P;
    if (n_vis > s->n_slots[il] || want >= n_pages) return -1;
    float stack[4096];
    const size_t need = (size_t)(n_q + 2) * n_pages + (size_t)s->head_dim + 16;
    float *buf = need <= 4096 ? stack : malloc(need * sizeof(float));
    int32_t istack[2048], *idx = n_pages <= 2048 ? istack : malloc((size_t)n_pages * sizeof(int32_t));
    if (!buf || !idx) {
        if (buf != stack) free(buf);
        if (idx != istack) free(idx);
        return -1; /* no memory for a choice: read everything, which is correct */
    }
    float *score = buf, *tmp = buf + n_pages;
    page_scores(s, il, h, q, n_q, n_vis, r, score, tmp);
    if (cand)
        for (int p = 0; p < n_pages && p < cand_from; p++)
            if (!cand[p]) score[p] = -INFINITY;
    const int m = kvq_topk(score, n_pages, want, tmp, idx);
    int ns = 0;
    for (int j = 0; j < m && ns < cap; j++) {
        if (cand && idx[j] < cand_from && !cand[idx[j]]) continue; /* fewer candidates than pages wanted */
        const int t0 = idx[j] * P, t1 = t0 + P < n_vis ? t0 + P : n_vis;
        if (ns && out[ns - 1].t1 == t0) out[ns - 1].t1 = t1;
        else out[ns++] = (kvq_span){t0, t1};
    }
    if (buf != stack) free(buf);
    if (idx != istack) free(idx);
    return ns;
}

/* r channels for n_vis visible tokens: estimation costs about what the chosen tokens do. */
int kvq_hsa_channels(int head_dim, int page, long budget, int n_vis) {
    long r = (long)((double)head_dim * page * budget / (n_vis > 0 ? n_vis : 1) + 0.5);
    return (int)(r < 1 ? 1 : r > head_dim ? head_dim : r);
}

