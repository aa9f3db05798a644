/* Attention driver shared by every codec: streams the cache once per step in
 * tiles, with an online softmax (flash-decoding): no score matrix over the
 * whole context is ever formed. Work is split over (block of queries, KV
 * head, chunk of slots) so both cores stay busy at depth even with few KV
 * heads; partial results are merged with their running maxima.
 *
 * Consecutive query positions of a step (a verify pass, a prompt chunk) share
 * each tile they all see: one read of the tile serves them all, so a verify
 * pass of gamma + 1 tokens reads the cache once, not gamma + 1 times. Each
 * query still goes through exactly the tiles, in the order, and with the
 * per-query arithmetic that it would meet alone (kernels compute a query's
 * result independently of the other queries of the call, a codec tells when
 * two visibilities read a tile differently, and chunk bounds are fixed), so a
 * batched pass computes bit for bit what token-by-token decoding computes. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kv.h"
#include "../core/cpu.h"
#include "kv_simd.h"

/* Slots per codec call. 256 (a pertoken page) rather than 128: each call
 * pays per query for rounding the query and the weights and for a softmax
 * step, and at 32K on Llama-3.2-1B (4 alternated rounds) attention took
 * q4_0 58 ms instead of 77, q8_0 73 instead of 80, hier 78-86 instead of
 * 90-99, f16 and KIVI the same within noise. */
#define TILE 256
#define CHUNK 1024 /* fewest slots per chunk */
#define QB 16      /* query positions per item at most */

/* An item: the rep query heads of KV head h for the queries [qi, qi + nq)
 * over the spans sp[s0..s1) (one chunk of a dense range, or all the pages a
 * policy chose for one query). blk groups the items whose partial results
 * merge (same queries' block, same head); off is where its nq * rep partial
 * (max, sum) pairs and outputs sit. */
typedef struct item { int32_t qi, nq, blk, h, s0, s1; size_t off; } item;

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

/* The read bound a codec reports for a query that sees vis slots, clamped to
 * the tile [t0, t1): two queries with the same value read the tile alike. */
static inline int tile_key(const kvq_kv_layer *L, int vis, int t0, int t1) {
    if (!L->codec->read_bound) return 0;
    const int b = L->codec->read_bound(L, vis);
    return b < t0 ? t0 : b > t1 ? t1 : b;
}

/* One item: partial softmax statistics (m, l) and unnormalized outputs for
 * the rep query heads of KV head h of each of its queries over its spans, in
 * tiles that never cross a page. Queries see vis0 + j slots (ascending in j);
 * a tile goes to each run of queries that see all of it and read it alike
 * in one call, and to a query whose range ends inside it on its own. */
static void run_item(const kvq_kv_layer *L, const kvq_attn_kernels *K, const item *it, const kvq_span *sp,
                     const float *q, int nh, int rep, float scale, int view, int vis0, float *ml, float *acc,
                     float *qbuf, float *s) {
    const int hd = L->head_dim, P = L->page, nq = it->nq, nqh = nq * rep;
    for (int j = 0; j < nq; j++)
        memcpy(qbuf + (size_t)j * rep * hd, q + ((size_t)(it->qi + j) * nh + (size_t)it->h * rep) * hd,
               (size_t)rep * hd * sizeof(float));
    for (int g = 0; g < nqh; g++) { ml[2 * g] = -INFINITY; ml[2 * g + 1] = 0; }
    memset(acc, 0, (size_t)nqh * (size_t)hd * sizeof(float));
    for (int k = it->s0; k < it->s1; k++)
        for (int t0 = sp[k].t0, n; t0 < sp[k].t1; t0 += n) {
            n = sp[k].t1 - t0 < TILE ? sp[k].t1 - t0 : TILE;
            const int pe = (t0 / P + 1) * P; /* codecs read within one page */
            if (t0 + n > pe) n = pe - t0;
            int j = 0;
            while (j < nq && vis0 + j <= t0) j++;
            while (j < nq) {
                const int vj = vis0 + j, nj = vj - t0 < n ? vj - t0 : n, key = tile_key(L, vj, t0, t0 + nj);
                int r = j + 1;
                while (r < nq && (vis0 + r - t0 < n ? vis0 + r - t0 : n) == nj &&
                       tile_key(L, vis0 + r, t0, t0 + nj) == key)
                    r++;
                const int g0 = j * rep, ng = (r - j) * rep;
                L->codec->qk(L, view, vj, it->h, t0, nj, qbuf + (size_t)g0 * hd, ng, s);
                for (int g = 0; g < ng; g++) {
                    float *m = ml + 2 * (size_t)(g0 + g);
                    const float corr = K->softmax_step(s + (size_t)g * nj, nj, scale, &m[0], &m[1]);
                    if (corr != 1.0f) {
                        float *ag = acc + (size_t)(g0 + g) * hd;
                        for (int d = 0; d < hd; d++) ag[d] *= corr;
                    }
                }
                L->codec->av(L, view, vj, it->h, t0, nj, s, ng, acc + (size_t)g0 * hd);
                j = r;
            }
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

static bool plan_item(plan *p, int qi, int nq, int blk, int h, size_t s0) {
    if (p->n_items == p->cap_items) {
        size_t cap = p->cap_items ? 2 * p->cap_items : 64;
        item *n = realloc(p->items, cap * sizeof *n);
        if (!n) return false;
        p->items = n;
        p->cap_items = cap;
    }
    p->items[p->n_items++] = (item){qi, nq, blk, h, (int32_t)s0, (int32_t)p->n_sp, 0};
    return true;
}

/* What each (query, KV head) reads. A dense range is cut into chunks at
 * fixed bounds, each its own item, so both cores share a long context
 * whatever the query's position; without a policy, the chunks of up to QB
 * consecutive queries are shared items. A policy's choice of pages is one
 * item per query (its spans are short and many, and differ per query).
 * Policies choose in parallel over heads, a batch of queries at a time so the
 * spans they may return stay bounded in memory. */
static kvq_status make_plan(kvq_kv_cache *c, int il, const float *q, int n_q, int n_vis0, int n_threads, plan *p) {
    const int nkv = c->g.n_head_kv, hd = c->g.head_dim, nh = c->g.n_head, rep = nh / nkv, max_spans = c->max_spans;
    /* chunks when the KV heads alone cannot keep the threads busy; their size
     * follows the layer's capacity, not the query's position, so every query
     * of a batch is cut the same way (and the partial results of a long
     * prompt at depth stay few) */
    int chunk = 1 << 30;
    if (nkv < 2 * n_threads) {
        chunk = c->layers[il].cap / (2 * n_threads) / TILE * TILE;
        if (chunk < CHUNK) chunk = CHUNK;
    }
    kvq_status st = KVQ_OK;
    if (!c->policy->select) {
        for (int qb = 0; qb < n_q && !st; qb += QB) {
            const int qe = n_q - qb < QB ? n_q : qb + QB, vmax = n_vis0 + qe - 1;
            for (int h = 0; h < nkv && !st; h++)
                for (int t0 = 0; t0 < vmax && !st; t0 += chunk) {
                    /* the block's queries that see slot t0 */
                    const int qa = t0 - n_vis0 + 1 > qb ? t0 - n_vis0 + 1 : qb;
                    const size_t s0 = p->n_sp;
                    if (!plan_span(p, (kvq_span){t0, vmax - t0 > chunk ? t0 + chunk : vmax}) ||
                        !plan_item(p, qa, qe - qa, qb, h, s0))
                        st = KVQ_ERR_NOMEM;
                }
        }
        return st;
    }
    const int batch = (int)(((size_t)1 << 18) / ((size_t)nkv * max_spans) + 1);
    const int b = batch < n_q ? batch : n_q;
    kvq_span *sel = malloc((size_t)b * nkv * max_spans * sizeof *sel);
    int *ns = malloc((size_t)b * nkv * sizeof *ns);
    if (!sel || !ns) { free(sel); free(ns); return KVQ_ERR_NOMEM; }
    for (int q0 = 0; q0 < n_q && !st; q0 += batch) {
        const int nb = n_q - q0 < batch ? n_q - q0 : batch, n_sel = nb * nkv;
        const uint64_t t = now_ns();
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (n_sel > 1 && n_vis0 >= 1024)
        for (int i = 0; i < n_sel; i++) {
            const int qi = q0 + i / nkv, h = i % nkv;
            ns[i] = c->policy->select(c, il, h, q + ((size_t)qi * nh + (size_t)h * rep) * hd, rep, n_vis0 + qi,
                                      sel + (size_t)i * max_spans, max_spans);
        }
        c->stats.select_ns += now_ns() - t;
        for (int i = 0; i < n_sel && !st; i++) {
            const int qi = q0 + i / nkv, h = i % nkv, vis = n_vis0 + qi, n_s = ns[i];
            if (n_s < 0) { /* all: chunks */
                for (int t0 = 0; t0 < vis && !st; t0 += chunk) {
                    const size_t s0 = p->n_sp;
                    if (!plan_span(p, (kvq_span){t0, vis - t0 > chunk ? t0 + chunk : vis}) ||
                        !plan_item(p, qi, 1, qi, h, s0))
                        st = KVQ_ERR_NOMEM;
                }
                continue;
            }
            const size_t s0 = p->n_sp;
            for (int k = 0; k < n_s && !st; k++) {
                /* a policy's span never reaches past what the query may see */
                const kvq_span sk = sel[(size_t)i * max_spans + k];
                const int t0 = sk.t0 > 0 ? sk.t0 : 0, t1 = sk.t1 < vis ? sk.t1 : vis;
                if (t0 < t1 && !plan_span(p, (kvq_span){t0, t1})) st = KVQ_ERR_NOMEM;
            }
            if (!st && p->n_sp > s0 && !plan_item(p, qi, 1, qi, h, s0)) st = KVQ_ERR_NOMEM;
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
    item *items = p.items;
    size_t total = 0;
    for (size_t k = 0; k < n_items; k++) {
        items[k].off = total;
        total += (size_t)items[k].nq * rep * (2 + (size_t)hd);
    }
    const size_t per_thread = (size_t)QB * rep * ((size_t)hd + TILE);
    float *buf = scratch(c, total + (size_t)n_threads * per_thread);
    if (!buf) { free(p.items); free(p.sp); return KVQ_ERR_NOMEM; }
    float *tiles = buf + total;
    const kvq_attn_kernels *kern = kvq_attn_kernels_active();

    /* a fork and join costs microseconds, and a whole time slice when another
     * process holds a core: short contexts (a few thousand multiply-adds per
     * head) are cheaper on one thread */
    const bool fork = n_items > 1 && p.slots * (size_t)rep * (size_t)hd * 2 >= KVQ_FORK_MIN_WORK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads) if (fork)
    for (size_t k = 0; k < n_items; k++) {
        const item *it = &items[k];
        float *ml = buf + it->off, *acc = ml + 2 * (size_t)it->nq * rep;
        float *qbuf = tiles + (size_t)omp_get_thread_num() * per_thread;
        run_item(L, kern, it, p.sp, q, nh, rep, scale, view, n_vis0 + it->qi, ml, acc, qbuf,
                 qbuf + (size_t)QB * rep * hd);
    }

    /* merge, per query, the consecutive items of its block and head in chunk
     * order; a query with no span reads nothing */
    memset(out, 0, (size_t)n_q * (size_t)nh * (size_t)hd * sizeof(float));
    for (size_t k = 0; k < n_items;) {
        size_t e = k;
        int qend = 0;
        while (e < n_items && items[e].blk == items[k].blk && items[e].h == items[k].h) {
            if (items[e].qi + items[e].nq > qend) qend = items[e].qi + items[e].nq;
            e++;
        }
        for (int qi = items[k].blk; qi < qend; qi++)
            for (int g = 0; g < rep; g++) {
                float M = -INFINITY, l = 0;
                for (size_t j = k; j < e; j++)
                    if (qi >= items[j].qi && qi < items[j].qi + items[j].nq)
                        M = fmaxf(M, buf[items[j].off + 2 * ((size_t)(qi - items[j].qi) * rep + g)]);
                float *o = out + ((size_t)qi * nh + (size_t)items[k].h * rep + g) * hd;
                for (size_t j = k; j < e; j++) {
                    if (qi < items[j].qi || qi >= items[j].qi + items[j].nq) continue;
                    const size_t gi = (size_t)(qi - items[j].qi) * rep + g;
                    const float *ml = buf + items[j].off;
                    if (ml[2 * gi] == -INFINITY) continue;
                    const float w = expf(ml[2 * gi] - M);
                    l += w * ml[2 * gi + 1];
                    const float *acc = ml + 2 * (size_t)items[j].nq * rep + gi * hd;
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
