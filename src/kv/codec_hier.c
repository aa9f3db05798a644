/* QuantSpec's hierarchical 4+4-bit KV codec (methods/quantspec.md).
 *
 * Keys per channel over blocks of G tokens (post-RoPE), values per token in
 * groups of G channels (or head_dim if smaller), each group with an fp16
 * minimum m and step s4 = (max - min) / 15:
 *   upper plane  U = clamp(round((x - m) / s4), 0, 15)     a valid 4-bit RTN code
 *   lower plane  L = c8 - 16 U, c8 = clamp(round((x - m8) / s8), 16U, 16U + 15)
 * with s8 = s4 / 16 and m8 = fp16(m - s4 / 2), so the two planes together are
 * an 8-bit code on a 16x finer grid: the target view reads m8 + s8 (16U + L),
 * the draft view reads m + s4 U. The planes are packed apart (KIVI's layout,
 * kvquant.h), so the draft view streams only U and its (m, s4): about half
 * the bytes. Attention runs on the codes in place (hier_kernels.c): the
 * draft view's kernels touch the upper plane only, the target view's combine
 * both planes in registers.
 *
 * The full-precision buffer holds the newest tokens, between G and 2G of
 * them verified plus any pending (speculative) ones. A block is quantized as
 * soon as its G tokens are verified, and its fp16 rows stay until no query
 * reads them: a query at position p reads blocks below F(p) = G floor(p/G) - G
 * (0 below 2G) from codes and everything after from fp16. That boundary
 * depends on the query's position alone, so a batched verify pass reads
 * exactly what token-by-token decoding reads, and speculative greedy output
 * equals plain greedy output token for token. Pending tokens are never
 * quantized; rollback is a length reset. Spec: hier[:g=128]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/cpu.h"
#include "../kernels/types.h"
#include "hier_kernels.h"
#include "kivi_kernels.h"
#include "kv.h"
#include "kv_simd.h"
#include "kvquant.h"

typedef struct hier_cfg { int16_t g; } hier_cfg;

typedef struct hstate {
    int G, vg, ng;
    int nq;                 /* tokens with codes: whole blocks of verified tokens */
    int w0;                 /* first token held in fp16 */
    /* A page holds P slots (whole blocks); per head its P/G blocks one after
     * the other, each in one run of bytes, what the draft view reads first:
     * U keys (G x hd codes in tiles), key (m, s4) [2][hd], U value rows [G][hd/2]
     * in quads, value (m, s4) [G][ng][2]; then L keys and L value rows. So
     * each view reads a block as one run of bytes (the draft view a prefix),
     * not as six separate runs. */
    kvq_pages pages;
    int P;
    size_t kblk, vrow;      /* bytes of one plane's key block / value row */
    size_t off_kms, off_vu, off_vms, off_kl, off_vl, blk_bytes, head_bytes;
    uint16_t *wk, *wv;      /* fp16 rows of tokens [w0, n): [head][wcap][hd] */
    int wcap;
    uint64_t wbytes;
    const kvq_hier_kernels *hk;
    const kvq_attn_kernels *ak;
    kvq_vec_dot_fn f16dot;
    kvq_from_float_fn to_f16;
    kvq_to_float_fn from_f16;
} hstate;

static int value_group(int G, int hd) {
    int vg = G < hd ? G : hd;
    return hd % vg ? hd : vg;
}

static kvq_status hier_configure(const kvq_kv_spec *s, const kvq_kv_geom *g, void *cfgs, char *err, size_t cap) {
    long G = 128;
    for (int i = 0; i < s->n_copt; i++) {
        if (!strcmp(s->copt[i].key, "g")) {
            if (!kvq_kv_opt_int(&s->copt[i], 1, "g", 8, 256, &G, err, cap)) return KVQ_ERR_ARG;
        } else {
            snprintf(err, cap, "hier: unknown option '%s' (g=)", s->copt[i].key);
            return KVQ_ERR_ARG;
        }
    }
    if (G % 8) {
        snprintf(err, cap, "hier: group g=%ld must be a multiple of 8", G);
        return KVQ_ERR_ARG;
    }
    if (g->head_dim % 8 || g->head_dim > 512) { /* value groups, min(G, head_dim) or head_dim, are then even */
        snprintf(err, cap, "hier: head_dim %d is not a multiple of 8 up to 512 (key tiles are 8 channels wide; integer sums bound the size)",
                 g->head_dim);
        return KVQ_ERR_ARG;
    }
    for (int l = 0; l < g->n_layer; l++) ((hier_cfg *)cfgs)[l].g = (int16_t)G;
    return KVQ_OK;
}

/* The fp16 window's start for n_final verified tokens: the flush point of a query at position n_final. */
static int flush_point(int nf, int G) { return nf >= 2 * G ? nf / G * G - G : 0; }

static uint64_t hier_bytes_for(const kvq_kv_layer *L, int64_t n) {
    const int G = ((const hier_cfg *)L->cfg)->g, hd = L->head_dim, vg = value_group(G, hd), ng = hd / vg;
    const hstate *st = L->state;
    const bool live = st && n == L->n;
    const uint64_t nq = live ? (uint64_t)st->nq : (uint64_t)(n / G * G),
                   w0 = live ? (uint64_t)st->w0 : (uint64_t)flush_point((int)n, G);
    const uint64_t keys = nq / G * ((uint64_t)hd * G + (uint64_t)hd * 4); /* two 4-bit planes + fp16 (m, s4) per channel */
    const uint64_t vals = nq * ((uint64_t)hd + (uint64_t)ng * 4);          /* two 4-bit planes + fp16 (m, s4) per group */
    const uint64_t window = ((uint64_t)n - w0) * (uint64_t)hd * 4;          /* fp16 K and V */
    return (uint64_t)L->n_head_kv * (keys + vals + window);
}

static kvq_status window_resize(kvq_kv_layer *L, hstate *s, int w, int keep) {
    const size_t H = (size_t)L->n_head_kv, hd = (size_t)L->head_dim;
    const uint64_t bytes = 2 * H * (uint64_t)w * hd * 2;
    kvq_status st = kvq_kv_mem_charge(&L->cache->mem, (int64_t)bytes - (int64_t)s->wbytes);
    if (st) return st;
    uint16_t *wk = calloc(H * (size_t)w * hd, 2), *wv = calloc(H * (size_t)w * hd, 2);
    if (!wk || !wv) {
        free(wk);
        free(wv);
        kvq_kv_mem_charge(&L->cache->mem, (int64_t)s->wbytes - (int64_t)bytes);
        return KVQ_ERR_NOMEM;
    }
    for (size_t h = 0; s->wk && h < H; h++) {
        memcpy(wk + h * (size_t)w * hd, s->wk + h * (size_t)s->wcap * hd, (size_t)keep * hd * 2);
        memcpy(wv + h * (size_t)w * hd, s->wv + h * (size_t)s->wcap * hd, (size_t)keep * hd * 2);
    }
    free(s->wk);
    free(s->wv);
    s->wk = wk;
    s->wv = wv;
    s->wcap = w;
    s->wbytes = bytes;
    return KVQ_OK;
}

static kvq_status hier_init(kvq_kv_layer *L) {
    hstate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    L->state = s;
    const int hd = L->head_dim;
    s->G = ((const hier_cfg *)L->cfg)->g;
    s->vg = value_group(s->G, hd);
    s->ng = hd / s->vg;
    s->kblk = (size_t)hd * (size_t)kvq_code_bytes(s->G, 4);
    s->vrow = (size_t)s->ng * (size_t)kvq_code_bytes(s->vg, 4);
    s->P = (256 + s->G - 1) / s->G * s->G;
    const size_t nb = (size_t)(s->P / s->G);
    s->off_kms = s->kblk;
    s->off_vu = s->off_kms + (size_t)hd * 2 * sizeof(kvq_f16);
    s->off_vms = s->off_vu + (size_t)s->G * s->vrow;
    s->off_kl = s->off_vms + (size_t)s->G * (size_t)s->ng * 2 * sizeof(kvq_f16);
    s->off_vl = s->off_kl + s->kblk;
    s->blk_bytes = s->off_vl + (size_t)s->G * s->vrow;
    s->head_bytes = nb * s->blk_bytes;
    L->page = s->P;
    L->page_bytes = s->head_bytes * (size_t)L->n_head_kv;
    const int isa = kvq_isa_active();
    s->hk = kvq_hier_kernels_isa(isa);
    s->ak = kvq_attn_kernels_isa(isa);
    s->f16dot = kvq_traits(KVQ_TYPE_F16)->vec_dot;
    s->to_f16 = kvq_traits(KVQ_TYPE_F16)->from_float;
    s->from_f16 = kvq_traits(KVQ_TYPE_F16)->to_float;
    L->n = 0;
    kvq_status st = kvq_pages_init(&s->pages, s->P, L->page_bytes, L->cap, &L->cache->mem);
    if (st) return st;
    /* 2G verified tokens at most, a prefill chunk or a verify pass on top */
    return window_resize(L, s, 2 * s->G + (L->n_batch > 1 ? L->n_batch : 1) + 8, 0);
}

static void hier_destroy(kvq_kv_layer *L) {
    hstate *s = L->state;
    if (s) {
        kvq_pages_free(&s->pages);
        free(s->wk);
        free(s->wv);
        kvq_kv_mem_charge(&L->cache->mem, -(int64_t)s->wbytes);
    }
    free(s);
    L->state = NULL;
}

static kvq_status hier_reserve(kvq_kv_layer *L, int n) {
    hstate *s = L->state;
    /* more unverified tokens than the window was sized for (a load sizes it from its header) */
    if (L->n > 0 && n - s->w0 > s->wcap) {
        kvq_status st = window_resize(L, s, n - s->w0 + 8, L->n - s->w0);
        if (st) return st;
    }
    return kvq_pages_reserve(&s->pages, n);
}

/* Block of token t of head h, and its parts. */
static inline uint8_t *hblock(const hstate *s, int h, int t) {
    return kvq_page(&s->pages, t) + (size_t)h * s->head_bytes + (size_t)((t % s->P) / s->G) * s->blk_bytes;
}
static inline uint8_t *kblock(const hstate *s, int h, int t, bool lower) {
    return hblock(s, h, t) + (lower ? s->off_kl : 0);
}
static inline kvq_f16 *kms(const hstate *s, int h, int t) { return (kvq_f16 *)(hblock(s, h, t) + s->off_kms); }
/* quad 0 of the block's value rows: token t is row t % G */
static inline uint8_t *vplane(const hstate *s, int h, int t, bool lower) {
    return hblock(s, h, t) + (lower ? s->off_vl : s->off_vu);
}
static inline kvq_f16 *vms(const hstate *s, int h, int t) {
    return (kvq_f16 *)(hblock(s, h, t) + s->off_vms) + (size_t)(t % s->G) * (size_t)s->ng * 2;
}
static inline uint16_t *wrow(const kvq_kv_layer *L, const hstate *s, uint16_t *w, int h, int t) {
    return w + ((size_t)h * s->wcap + (size_t)(t - s->w0)) * (size_t)L->head_dim;
}

/* Quantizes n values x[i*stride] into U and L codes (one per byte) and (m, s4). */
static void quant_group(const float *x, int stride, int n, uint8_t *u, uint8_t *l, kvq_f16 *m_out, kvq_f16 *s_out) {
    float lo_v = x[0], hi_v = x[0];
    for (int i = 1; i < n; i++) {
        const float v = x[(size_t)i * stride];
        lo_v = v < lo_v ? v : lo_v;
        hi_v = v > hi_v ? v : hi_v;
    }
    const float range = hi_v - lo_v > 1e-5f ? hi_v - lo_v : 1e-5f;
    kvq_f16 mh = kvq_f32_to_f16(lo_v), sh = kvq_f32_to_f16(range / 15.0f);
    if (kvq_f16_to_f32(sh) == 0) sh = 0x0001;
    kvq_f16 m8h, s8h;
    kvq_hier_target_ms(mh, sh, &m8h, &s8h);
    const float m = kvq_f16_to_f32(mh), s4 = kvq_f16_to_f32(sh), m8 = kvq_f16_to_f32(m8h), s8 = kvq_f16_to_f32(s8h);
    for (int i = 0; i < n; i++) {
        const float v = x[(size_t)i * stride];
        float cu = rintf((v - m) / s4);
        cu = cu < 0 ? 0 : cu > 15 ? 15 : cu;
        float c8 = rintf((v - m8) / s8);
        c8 = c8 < 16 * cu ? 16 * cu : c8 > 16 * cu + 15 ? 16 * cu + 15 : c8;
        u[i] = (uint8_t)cu;
        l[i] = (uint8_t)(c8 - 16 * cu);
    }
    *m_out = mh;
    *s_out = sh;
}

/* Quantizes the block at slot nq from its fp16 rows (which stay). */
static void quantize_block(kvq_kv_layer *L, hstate *s) {
    const int hd = L->head_dim, G = s->G, gb = kvq_code_bytes(s->vg, 4);
    float *k = malloc((size_t)G * hd * sizeof(float)), *v = malloc((size_t)G * hd * sizeof(float));
    if (!k || !v) { free(k); free(v); return; } /* the block stays fp16; the next commit retries */
    for (int h = 0; h < L->n_head_kv; h++) {
        for (int i = 0; i < G; i++) {
            s->from_f16(wrow(L, s, s->wk, h, s->nq + i), k + (size_t)i * hd, hd);
            s->from_f16(wrow(L, s, s->wv, h, s->nq + i), v + (size_t)i * hd, hd);
        }
        uint8_t *ku = kblock(s, h, s->nq, false), *kl = kblock(s, h, s->nq, true);
        kvq_f16 *ms = kms(s, h, s->nq);
        for (int d = 0; d < hd; d++) {
            uint8_t u[256], l[256];
            quant_group(k + d, hd, G, u, l, &ms[d], &ms[hd + d]);
            for (int i = 0; i < G; i++) {
                kvq_hier_kput(ku, hd, i, d, u[i]);
                kvq_hier_kput(kl, hd, i, d, l[i]);
            }
        }
        for (int i = 0; i < G; i++) {
            const int t = s->nq + i;
            uint8_t uc[1024], lc[1024], ur[512], lr[512];
            kvq_f16 *vm = vms(s, h, t);
            for (int gr = 0; gr < s->ng; gr++) {
                quant_group(v + (size_t)i * hd + gr * s->vg, 1, s->vg, uc, lc, &vm[2 * gr], &vm[2 * gr + 1]);
                kvq_pack_codes(uc, s->vg, 4, ur + (size_t)gr * gb);
                kvq_pack_codes(lc, s->vg, 4, lr + (size_t)gr * gb);
            }
            kvq_vrow_put(vplane(s, h, t, false), t % G, (int)s->vrow, ur);
            kvq_vrow_put(vplane(s, h, t, true), t % G, (int)s->vrow, lr);
        }
    }
    s->nq += G;
    free(k);
    free(v);
}

static kvq_status hier_append(kvq_kv_layer *L, const float *k, const float *v, int n, const int32_t *pos) {
    (void)pos;
    hstate *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    if (L->n + n - s->w0 > s->wcap) return KVQ_ERR_NOMEM; /* reserve sizes the window */
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++) {
            s->to_f16(k + ((size_t)t * nkv + h) * hd, wrow(L, s, s->wk, h, L->n + t), hd);
            s->to_f16(v + ((size_t)t * nkv + h) * hd, wrow(L, s, s->wv, h, L->n + t), hd);
        }
    L->n += n;
    return KVQ_OK;
}

/* Blocks of verified tokens get codes; fp16 rows no query will read again go. */
static void hier_commit(kvq_kv_layer *L, int nf) {
    hstate *s = L->state;
    if (nf > L->n) nf = L->n;
    while (s->nq + s->G <= nf / s->G * s->G) {
        const int before = s->nq;
        quantize_block(L, s);
        if (s->nq == before) return;
    }
    const int w0 = flush_point(nf, s->G) < s->nq ? flush_point(nf, s->G) : s->nq;
    if (w0 > s->w0) {
        const int keep = L->n - w0, d = w0 - s->w0, hd = L->head_dim;
        for (int h = 0; h < L->n_head_kv; h++) {
            uint16_t *k = s->wk + (size_t)h * s->wcap * hd, *v = s->wv + (size_t)h * s->wcap * hd;
            memmove(k, k + (size_t)d * hd, (size_t)keep * hd * 2);
            memmove(v, v + (size_t)d * hd, (size_t)keep * hd * 2);
        }
        s->w0 = w0;
    }
}

/* Where a query that sees vis slots switches from codes to fp16. */
static inline int boundary(const hstate *s, int vis) {
    int b = flush_point(vis - 1, s->G);
    if (b > s->nq) b = s->nq;
    if (b < s->w0) b = s->w0;
    return b;
}

static int hier_read_bound(const kvq_kv_layer *L, int vis) { return boundary(L->state, vis); }

static void hier_qk(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *q, int n_q,
                    float *scores) {
    const hstate *s = L->state;
    const int G = s->G, hd = L->head_dim, b = boundary(s, vis), qend = t0 + n < b ? t0 + n : b;
    const bool draft = view == KVQ_VIEW_DRAFT;
    float tmp[64 * 256];
    for (int b0 = t0 / G * G; b0 < qend; b0 += G) {
        const bool whole = b0 >= t0 && b0 + G <= t0 + n;
        const uint8_t *up = kblock(s, h, b0, false), *lo = draft ? NULL : kblock(s, h, b0, true);
        const kvq_f16 *ms = kms(s, h, b0);
        for (int g0 = 0; g0 < n_q; g0 += 64) {
            const int ng = n_q - g0 < 64 ? n_q - g0 : 64;
            float *dst = whole ? scores + (size_t)g0 * n + (b0 - t0) : tmp;
            s->hk->qk(up, lo, ms, G, hd, q + (size_t)g0 * hd, ng, dst, whole ? n : G);
            if (!whole) {
                const int a = b0 > t0 ? b0 : t0, e = b0 + G < qend ? b0 + G : qend;
                for (int g = 0; g < ng; g++)
                    memcpy(scores + (size_t)(g0 + g) * n + (a - t0), tmp + (size_t)g * G + (a - b0),
                           (size_t)(e - a) * sizeof(float));
            }
        }
    }
    for (int t = t0 > b ? t0 : b; t < t0 + n; t++) {
        const uint16_t *kr = wrow(L, s, s->wk, h, t);
        for (int g = 0; g < n_q; g++) scores[(size_t)g * n + (t - t0)] = s->f16dot(kr, q + (size_t)g * hd, hd);
    }
}

static void hier_av(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *w, int n_q,
                    float *out) {
    const hstate *s = L->state;
    const int hd = L->head_dim, b = boundary(s, vis), qend = t0 + n < b ? t0 + n : b;
    for (int a = t0, e; a < qend; a = e) { /* block by block: each holds its value rows */
        e = (a / s->G + 1) * s->G < qend ? (a / s->G + 1) * s->G : qend;
        s->hk->av(vplane(s, h, a, false), view == KVQ_VIEW_DRAFT ? NULL : vplane(s, h, a, true), a % s->G,
                  vms(s, h, a), e - a, hd, s->vg, w + (a - t0), n, n_q, out);
    }
    const int w0 = t0 > b ? t0 : b;
    if (w0 < t0 + n) s->ak->av_f16(wrow(L, s, s->wv, h, w0), t0 + n - w0, hd, w + (w0 - t0), n, n_q, out);
}

/* Token t of head h, as a query after every slot reads it (codes below w0) in a view. */
static void token_at(const kvq_kv_layer *L, const hstate *s, int view, int h, int t, float *k, float *v) {
    const int hd = L->head_dim, G = s->G;
    if (t >= s->w0) {
        if (k) s->from_f16(wrow(L, s, s->wk, h, t), k, hd);
        if (v) s->from_f16(wrow(L, s, s->wv, h, t), v, hd);
        return;
    }
    const int gb = kvq_code_bytes(s->vg, 4);
    const bool draft = view == KVQ_VIEW_DRAFT;
    if (k) {
        const uint8_t *u = kblock(s, h, t, false), *l = kblock(s, h, t, true);
        const kvq_f16 *ms = kms(s, h, t);
        for (int d = 0; d < hd; d++) {
            const int cu = kvq_hier_kcode(u, hd, t % G, d), cl = kvq_hier_kcode(l, hd, t % G, d);
            float mn, sc;
            kvq_hier_view_ms(!draft, ms[d], ms[hd + d], &mn, &sc);
            k[d] = mn + sc * (float)(draft ? cu : 16 * cu + cl);
        }
    }
    if (v) {
        uint8_t ur[512], lr[512];
        kvq_vrow_get(vplane(s, h, t, false), t % G, (int)s->vrow, ur);
        kvq_vrow_get(vplane(s, h, t, true), t % G, (int)s->vrow, lr);
        const kvq_f16 *vm = vms(s, h, t);
        for (int d = 0; d < hd; d++) {
            const int gr = d / s->vg, cu = kvq_code_at(ur + (size_t)gr * gb, s->vg, 4, d % s->vg),
                      cl = kvq_code_at(lr + (size_t)gr * gb, s->vg, 4, d % s->vg);
            float mn, sc;
            kvq_hier_view_ms(!draft, vm[2 * gr], vm[2 * gr + 1], &mn, &sc);
            v[d] = mn + sc * (float)(draft ? cu : 16 * cu + cl);
        }
    }
}

static void hier_read(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v) {
    const hstate *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++)
            token_at(L, s, view, h, t0 + t, k ? k + ((size_t)t * nkv + h) * hd : NULL,
                     v ? v + ((size_t)t * nkv + h) * hd : NULL);
}

/* Rollback of pending tokens is a length reset. Deeper, tokens return to
 * fp16 from their 8-bit codes (lossy, as KIVI's). */
static void hier_truncate(kvq_kv_layer *L, int n) {
    hstate *s = L->state;
    if (n < L->n) {
        if (n < s->w0) {
            const int w0 = n / s->G * s->G, hd = L->head_dim;
            float k[1024], v[1024];
            for (int h = 0; h < L->n_head_kv; h++)
                for (int t = w0; t < n; t++) { /* restored at their rows relative to the new start */
                    token_at(L, s, KVQ_VIEW_FULL, h, t, k, v);
                    s->to_f16(k, s->wk + ((size_t)h * s->wcap + (size_t)(t - w0)) * hd, hd);
                    s->to_f16(v, s->wv + ((size_t)h * s->wcap + (size_t)(t - w0)) * hd, hd);
                }
            s->w0 = w0;
        }
        if (s->nq > n / s->G * s->G) s->nq = n / s->G * s->G;
        if (s->nq < s->w0) s->w0 = s->nq; /* cannot happen: w0 <= nq is kept */
        L->n = n;
    }
    kvq_pages_release(&s->pages, L->n);
}

static int hier_grain(const kvq_kv_layer *L) { return ((const hier_cfg *)L->cfg)->g; }

/* Per head: the blocks with codes a page at a time, then the fp16 rows [w0, n). */
static kvq_status hier_io(const kvq_kv_layer *L, FILE *f, bool wr) {
    const hstate *s = L->state;
    const size_t hd = (size_t)L->head_dim, w = (size_t)(L->n - s->w0);
    for (int h = 0; h < L->n_head_kv; h++) {
        for (int p0 = 0; p0 < s->nq; p0 += s->P) { /* a page's blocks with codes, in one run */
            const size_t nb = (size_t)((s->nq - p0 < s->P ? s->nq - p0 : s->P) / s->G), bytes = nb * s->blk_bytes;
            uint8_t *hp = hblock(s, h, p0);
            if (wr ? fwrite(hp, 1, bytes, f) != bytes : fread(hp, 1, bytes, f) != bytes)
                return wr ? KVQ_ERR_IO : KVQ_ERR_FORMAT;
        }
        uint16_t *wk = s->wk + (size_t)h * s->wcap * hd, *wv = s->wv + (size_t)h * s->wcap * hd;
        if (wr ? fwrite(wk, hd * 2, w, f) != w || fwrite(wv, hd * 2, w, f) != w
               : fread(wk, hd * 2, w, f) != w || fread(wv, hd * 2, w, f) != w)
            return wr ? KVQ_ERR_IO : KVQ_ERR_FORMAT;
    }
    return KVQ_OK;
}

static kvq_status hier_save(const kvq_kv_layer *L, FILE *f) {
    const hstate *s = L->state;
    const int32_t hdr[2] = {s->nq, s->w0};
    if (fwrite(hdr, 4, 2, f) != 2) return KVQ_ERR_IO;
    return hier_io(L, f, true);
}

static kvq_status hier_load(kvq_kv_layer *L, FILE *f) {
    hstate *s = L->state;
    int32_t hdr[2];
    if (fread(hdr, 4, 2, f) != 2 || hdr[0] < 0 || hdr[0] % s->G || hdr[0] > L->n || hdr[1] < 0 || hdr[1] > hdr[0] ||
        hdr[1] % s->G || L->n - hdr[1] > 4 * s->G + L->n_batch + 64) {
        L->n = 0;
        return KVQ_ERR_FORMAT;
    }
    if (L->n - hdr[1] > s->wcap && window_resize(L, s, L->n - hdr[1] + 8, 0)) {
        L->n = 0;
        return KVQ_ERR_NOMEM;
    }
    s->nq = hdr[0];
    s->w0 = hdr[1];
    kvq_status st = hier_io(L, f, false);
    if (st) { s->nq = s->w0 = 0; L->n = 0; }
    return st;
}

const kvq_codec kvq_codec_hier = {
    .name = "hier", .has_draft_view = true, .cfg_size = sizeof(hier_cfg), .configure = hier_configure,
    .bytes_for = hier_bytes_for, .init = hier_init, .destroy = hier_destroy, .reserve = hier_reserve,
    .append = hier_append, .commit = hier_commit, .qk = hier_qk, .av = hier_av, .read_bound = hier_read_bound, .read = hier_read,
    .truncate = hier_truncate, .grain = hier_grain, .save = hier_save, .load = hier_load,
};
