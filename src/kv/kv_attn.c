/* Attention driver shared by every codec: streams the cache once per step in
 * tiles, with an online softmax (flash-decoding): no score matrix over the
 * whole context is ever formed. Work is split over (query, KV head, chunk of
 * slots) so both cores stay busy at depth even with few KV heads; partial
 * results are merged with their running maxima. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kv.h"
#include "../core/cpu.h"
#include "kv_simd.h"

#define TILE 128
#define CHUNK 1024

/* An item: the rep query heads of KV head h for query qi, over the spans
 * sp[s0..s1) (one chunk of a dense range, or all the pages a policy chose). */
typedef struct item { int32_t qi, h, s0, s1; } item;

static float *scratch(kvq_kv_cache *c, size_t n) {
    if (n > c->scratch_cap) {
        float *p = realloc(c->scratch, n * sizeof(float));
        if (!p) return NULL;
        c->scratch = p;
        c->scratch_cap = n;
    }
    return c->scratch;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One item: partial softmax statistics (m, l) and unnormalized output for
 * the rep query heads of KV head h over its spans, in tiles that never cross
 * a page. */
static void run_item(const kvq_kv_layer *L, const kvq_attn_kernels *K, const item *it, const kvq_span *sp,
                     const float *q, int rep, float scale, int view, int vis, float *ml, float *acc, float *s) {
    const int hd = L->head_dim, P = L->page;
    for (int g = 0; g < rep; g++) { ml[2 * g] = -INFINITY; ml[2 * g + 1] = 0; }
    memset(acc, 0, (size_t)rep * (size_t)hd * sizeof(float));
    for (int k = it->s0; k < it->s1; k++)
        for (int t0 = sp[k].t0, n; t0 < sp[k].t1; t0 += n) {
            n = sp[k].t1 - t0 < TILE ? sp[k].t1 - t0 : TILE;
            const int pe = (t0 / P + 1) * P; /* codecs read within one page */
            if (t0 + n > pe) n = pe - t0;
            L->codec->qk(L, view, vis, it->h, t0, n, q, rep, s);
            for (int g = 0; g < rep; g++) {
                float corr = K->softmax_step(s + (size_t)g * n, n, scale, &ml[2 * g], &ml[2 * g + 1]);
                if (corr != 1.0f) {
                    float *ag = acc + (size_t)g * hd;
                    for (int d = 0; d < hd; d++) ag[d] *= corr;
                }
            }
            L->codec->av(L, view, vis, it->h, t0, n, s, rep, acc);
        }
}

typedef struct plan { item *items; kvq_span *sp; size_t n_items, cap_items, n_sp, cap_sp, slots; } plan;

static bool plan_span(plan *p, kvq_span s) {
    if (p->n_sp == p->cap_sp) {
        size_t cap = p->cap_sp ? 2 * p->cap_sp : 256;
        kvq_span *n = realloc(p->sp, cap * sizeof *n);
        if (!n) return false;
        p->sp = n;
        p->cap_sp = cap;
    }
    p->sp[p->n_sp++] = s;
    p->slots += (size_t)(s.t1 - s.t0);
    return true;
}

static bool plan_item(plan *p, int qi, int h, size_t s0) {
    if (p->n_items == p->cap_items) {
        size_t cap = p->cap_items ? 2 * p->cap_items : 64;
        item *n = realloc(p->items, cap * sizeof *n);
        if (!n) return false;
        p->items = n;
        p->cap_items = cap;
    }
    p->items[p->n_items++] = (item){qi, h, (int32_t)s0, (int32_t)p->n_sp};
    return true;
}

/* What each (query, KV head) reads. A dense range is cut into chunks, each
 * its own item, so both cores share a long context; a policy's choice of
 * pages is one item (its spans are short and many). Policies choose in
 * parallel over heads, a batch of queries at a time so the spans they may
 * return stay bounded in memory. */
static kvq_status make_plan(kvq_kv_cache *c, int il, const float *q, int n_q, int n_vis0, int n_threads, plan *p) {
    const int nkv = c->g.n_head_kv, hd = c->g.head_dim, nh = c->g.n_head, rep = nh / nkv, max_spans = c->max_spans;
    /* A query's range is cut the same way whatever else is in the batch, so a
     * batched verify pass computes exactly what token-by-token decoding does:
     * chunks only when the KV heads alone cannot keep the threads busy. */
    const bool split = nkv < 2 * n_threads;
    const int batch = c->policy->select ? (int)(((size_t)1 << 18) / ((size_t)nkv * max_spans) + 1) : n_q;
    kvq_span *sel = NULL;
    int *ns = NULL;
    if (c->policy->select) {
        const int b = batch < n_q ? batch : n_q;
        sel = malloc((size_t)b * nkv * max_spans * sizeof *sel);
        ns = malloc((size_t)b * nkv * sizeof *ns);
        if (!sel || !ns) { free(sel); free(ns); return KVQ_ERR_NOMEM; }
    }
    kvq_status st = KVQ_OK;
    for (int q0 = 0; q0 < n_q && !st; q0 += batch) {
        const int nb = n_q - q0 < batch ? n_q - q0 : batch, n_sel = nb * nkv;
        if (sel) {
            const uint64_t t = now_ns();
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (n_sel > 1 && n_vis0 >= 1024)
            for (int i = 0; i < n_sel; i++) {
                const int qi = q0 + i / nkv, h = i % nkv;
                ns[i] = c->policy->select(c, il, h, q + ((size_t)qi * nh + (size_t)h * rep) * hd, rep, n_vis0 + qi,
                                          sel + (size_t)i * max_spans, max_spans);
            }
            c->stats.select_ns += now_ns() - t;
        }
        for (int i = 0; i < n_sel && !st; i++) {
            const int qi = q0 + i / nkv, h = i % nkv, vis = n_vis0 + qi;
            int n_s = sel ? ns[i] : -1;
            if (n_s < 0) { /* all: chunks */
                int chunk = 1 << 30;
                if (split) chunk = vis / (2 * n_threads) > CHUNK ? vis / (2 * n_threads) / TILE * TILE : CHUNK;
                for (int t0 = 0; t0 < vis && !st; t0 += chunk) {
                    const size_t s0 = p->n_sp;
                    if (!plan_span(p, (kvq_span){t0, vis - t0 > chunk ? t0 + chunk : vis}) || !plan_item(p, qi, h, s0))
                        st = KVQ_ERR_NOMEM;
                }
                continue;
            }
            const size_t s0 = p->n_sp;
            for (int k = 0; k < n_s && !st; k++) {
                /* a policy's span never reaches past what the query may see */
                const kvq_span s = sel[(size_t)i * max_spans + k];
                const int t0 = s.t0 > 0 ? s.t0 : 0, t1 = s.t1 < vis ? s.t1 : vis;
                if (t0 < t1 && !plan_span(p, (kvq_span){t0, t1})) st = KVQ_ERR_NOMEM;
            }
            if (!st && p->n_sp > s0 && !plan_item(p, qi, h, s0)) st = KVQ_ERR_NOMEM;
        }
    }
    free(sel);
    free(ns);
    return st;
}

kvq_status kvq_kv_attend(kvq_kv_cache *c, int il, const float *q, int n_q, int n_vis0, float scale, int view,
                         float *out, int n_threads) {
    const kvq_kv_layer *L = &c->layers[il];
    const int nkv = c->g.n_head_kv, hd = c->g.head_dim, nh = c->g.n_head, rep = nh / nkv;
    if (n_vis0 + n_q - 1 > L->n || n_vis0 < 1) return kvq_err(c->lg, KVQ_ERR_INTERNAL, "attention past the cache");
    if (n_threads < 1) n_threads = 1;
    const uint64_t t_start = now_ns();
    plan p = {0};
    kvq_status st = make_plan(c, il, q, n_q, n_vis0, n_threads, &p);
    if (st) { free(p.items); free(p.sp); return st; }
    const size_t n_items = p.n_items;
    const item *items = p.items;
    const size_t per_item = (size_t)rep * (2 + (size_t)hd);
    const size_t per_thread = (size_t)rep * TILE;
    float *buf = scratch(c, n_items * per_item + (size_t)n_threads * per_thread);
    if (!buf) { free(p.items); free(p.sp); return KVQ_ERR_NOMEM; }
    float *tiles = buf + n_items * per_item;
    const kvq_attn_kernels *kern = kvq_attn_kernels_active();

    /* a fork and join costs microseconds, and a whole time slice when another
     * process holds a core: short contexts (a few thousand multiply-adds per
     * head) are cheaper on one thread */
    const bool fork = n_items > 1 && p.slots * (size_t)rep * (size_t)hd * 2 >= KVQ_FORK_MIN_WORK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (fork)
    for (size_t k = 0; k < n_items; k++) {
        const item *it = &items[k];
        float *ml = buf + k * per_item, *acc = ml + 2 * rep;
        const float *qg = q + ((size_t)it->qi * nh + (size_t)it->h * rep) * hd;
        run_item(L, kern, it, p.sp, qg, rep, scale, view, n_vis0 + it->qi, ml, acc,
                 tiles + (size_t)omp_get_thread_num() * per_thread);
    }

    /* merge consecutive items of the same (query, head); a query with no span reads nothing */
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
    free(p.items);
    free(p.sp);
    c->stats.attn_ns += now_ns() - t_start;
    c->stats.n_attn++;
    return KVQ_OK;
}
