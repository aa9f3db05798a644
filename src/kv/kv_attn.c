/* Attention driver shared by every codec: streams the cache once per step in
 * tiles, with an online softmax (flash-decoding): no score matrix over the
 * whole context is ever formed. Work is split over (query, KV head, chunk of
 * slots) so both cores stay busy at depth even with few KV heads; partial
 * results are merged with their running maxima. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "kv.h"
#include "kv_simd.h"

#define TILE 128
#define CHUNK 1024

typedef struct item { int32_t qi, h, t0, t1; } item;

static float *scratch(kvq_kv_cache *c, size_t n) {
    if (n > c->scratch_cap) {
        float *p = realloc(c->scratch, n * sizeof(float));
        if (!p) return NULL;
        c->scratch = p;
        c->scratch_cap = n;
    }
    return c->scratch;
}

/* One item: partial softmax statistics (m, l) and unnormalized output for
 * the rep query heads of KV head h over slots [t0, t1). */
static void run_item(const kvq_kv_layer *L, const kvq_attn_kernels *K, const item *it, const float *q, int rep,
                     float scale, int view, float *ml, float *acc, float *s) {
    const int hd = L->head_dim;
    for (int g = 0; g < rep; g++) { ml[2 * g] = -INFINITY; ml[2 * g + 1] = 0; }
    memset(acc, 0, (size_t)rep * (size_t)hd * sizeof(float));
    const int P = L->page;
    for (int t0 = it->t0, n; t0 < it->t1; t0 += n) {
        n = it->t1 - t0 < TILE ? it->t1 - t0 : TILE;
        const int pe = (t0 / P + 1) * P; /* codecs read within one page */
        if (t0 + n > pe) n = pe - t0;
        L->codec->qk(L, view, it->h, t0, n, q, rep, s);
        for (int g = 0; g < rep; g++) {
            float corr = K->softmax_step(s + (size_t)g * n, n, scale, &ml[2 * g], &ml[2 * g + 1]);
            if (corr != 1.0f) {
                float *ag = acc + (size_t)g * hd;
                for (int d = 0; d < hd; d++) ag[d] *= corr;
            }
        }
        L->codec->av(L, view, it->h, t0, n, s, rep, acc);
    }
}

kvq_status kvq_kv_attend(kvq_kv_cache *c, int il, const float *q, int n_q, int n_vis0, float scale, int view,
                         float *out, int n_threads) {
    const kvq_kv_layer *L = &c->layers[il];
    const int nkv = c->g.n_head_kv, hd = c->g.head_dim, nh = c->g.n_head, rep = nh / nkv;
    if (n_vis0 + n_q - 1 > L->n || n_vis0 < 1) return kvq_err(c->lg, KVQ_ERR_INTERNAL, "attention past the cache");
    const int max_spans = c->policy->max_spans > 0 ? c->policy->max_spans : 1;
    if (n_threads < 1) n_threads = 1;

    /* The spans each (query, head) reads: the policy chooses them in
     * parallel over heads (selection can cost as much as a short attention). */
    const int n_sel = n_q * nkv;
    kvq_span *sp = NULL;
    int *ns = NULL;
    if (c->policy->select) {
        sp = malloc((size_t)n_sel * (size_t)max_spans * sizeof *sp);
        ns = malloc((size_t)n_sel * sizeof *ns);
        if (!sp || !ns) { free(sp); free(ns); return KVQ_ERR_NOMEM; }
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (n_sel > 1 && n_vis0 >= 1024)
        for (int i = 0; i < n_sel; i++) {
            const int qi = i / nkv, h = i % nkv;
            ns[i] = c->policy->select(c, il, h, q + ((size_t)qi * nh + (size_t)h * rep) * hd, rep, n_vis0 + qi,
                                      sp + (size_t)i * max_spans, max_spans);
        }
    }
    /* cut into chunks */
    size_t n_items = 0, cap_items = (size_t)n_sel * 4 + 16;
    item *items = malloc(cap_items * sizeof *items);
    if (!items) { free(sp); free(ns); return KVQ_ERR_NOMEM; }
    /* chunk length: enough items to keep every thread busy, long enough to amortize */
    int total_vis = n_vis0 + n_q - 1;
    int chunk = n_q * nkv >= 2 * n_threads ? 1 << 30 : CHUNK;
    if (chunk == CHUNK && total_vis / (2 * n_threads) > CHUNK) chunk = total_vis / (2 * n_threads) / TILE * TILE;
    for (int qi = 0; qi < n_q; qi++) {
        int vis = n_vis0 + qi;
        for (int h = 0; h < nkv; h++) {
            const int i = qi * nkv + h;
            kvq_span all = {0, vis};
            const kvq_span *s = sp ? sp + (size_t)i * max_spans : &all;
            int n_s = sp ? ns[i] : 1;
            if (n_s < 0) { s = &all; n_s = 1; }
            for (int k = 0; k < n_s; k++)
                /* a policy's span never reaches past what the query may see */
                for (int t0 = s[k].t0 > 0 ? s[k].t0 : 0, e = s[k].t1 < vis ? s[k].t1 : vis; t0 < e; t0 += chunk) {
                    if (n_items == cap_items) {
                        cap_items *= 2;
                        item *ni = realloc(items, cap_items * sizeof *ni);
                        if (!ni) { free(items); free(sp); free(ns); return KVQ_ERR_NOMEM; }
                        items = ni;
                    }
                    int t1 = e - t0 > chunk ? t0 + chunk : e;
                    items[n_items++] = (item){qi, h, t0, t1};
                }
        }
    }
    free(sp);
    free(ns);
    const size_t per_item = (size_t)rep * (2 + (size_t)hd);
    const size_t per_thread = (size_t)rep * TILE;
    float *buf = scratch(c, n_items * per_item + (size_t)n_threads * per_thread);
    if (!buf) { free(items); return KVQ_ERR_NOMEM; }
    float *tiles = buf + n_items * per_item;
    const kvq_attn_kernels *kern = kvq_attn_kernels_active();

#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (n_items > 1)
    for (size_t k = 0; k < n_items; k++) {
        const item *it = &items[k];
        float *ml = buf + k * per_item, *acc = ml + 2 * rep;
        const float *qg = q + ((size_t)it->qi * nh + (size_t)it->h * rep) * hd;
        run_item(L, kern, it, qg, rep, scale, view, ml, acc, tiles + (size_t)omp_get_thread_num() * per_thread);
    }

    /* merge consecutive items of the same (query, head) */
    memset(out, 0, (size_t)n_q * (size_t)nh * (size_t)hd * sizeof(float));
    for (size_t k = 0; k < n_items;) {
        size_t e = k;
        while (e < n_items && items[e].qi == items[k].qi && items[e].h == items[k].h) e++;
        for (int g = 0; g < rep; g++) {
            float M = -INFINITY, l = 0;
            for (size_t j = k; j < e; j++) M = fmaxf(M, buf[j * per_item + 2 * g]);
            float *o = out + ((size_t)items[k].qi * nh + (size_t)items[k].h * rep + g) * hd;
            for (size_t j = k; j < e; j++) {
                const float *ml = buf + j * per_item;
                if (ml[2 * g] == -INFINITY) continue;
                float w = expf(ml[2 * g] - M);
                l += w * ml[2 * g + 1];
                const float *acc = ml + 2 * rep + (size_t)g * hd;
                for (int d = 0; d < hd; d++) o[d] += w * acc[d];
            }
            if (l > 0)
                for (int d = 0; d < hd; d++) o[d] /= l;
        }
        k = e;
    }
    free(items);
    return KVQ_OK;
}
