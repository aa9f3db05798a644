/* KIVI codec with per-layer bits (KVTuner): keys quantized per channel over
 * blocks of G tokens, values per token in groups of G channels, asymmetric
 * min/scale in fp16, the newest tokens kept in an fp16 window.
 *
 * The window holds between R and R+G-1 tokens once the cache has R+G; at each
 * commit (after the step's attention) the oldest G are quantized as one block
 * while it holds R+G or more, once, and never again. A prefill chunk thus
 * attends to its own tokens in fp16, and decode sees the same window as KIVI.
 * Attention runs on the packed codes (kivi_kernels.c), never on a dequantized
 * copy. Spec: kivi:k4v2[,g=32][,r=32] or kivi:layers=FILE (kvq text or
 * KVTuner YAML); a table entry k16v16 keeps that layer in fp16. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/cpu.h"
#include "../kernels/types.h"
#include "kivi_kernels.h"
#include "kv.h"
#include "kv_layers.h"
#include "kv_simd.h"
#include "kvquant.h"

typedef struct kivi_cfg { int8_t kb, vb; int16_t g, r; } kivi_cfg;

typedef struct kstate {
    int kb, vb, G, R, vg, ng;
    int nq;                 /* quantized tokens, a multiple of G */
    size_t kblk, vrow;      /* bytes of codes per key block / per value row */
    /* A page holds P slots (whole blocks and quads); per head: key blocks
     * [P/G][kblk], their (mins, scales) [P/G][2][hd], value rows [P][vrow]
     * in quads (kivi_kernels.h), their (min, scale) pairs [P][ng][2]. */
    kvq_pages pages;
    int P;
    size_t off_kms, off_vc, off_vms, head_bytes;
    uint16_t *wk, *wv;      /* window, [head][wcap][hd] fp16 */
    int wcap;
    uint64_t wbytes;        /* bytes of the window buffers (charged to the cache) */
    const kvq_kivi_kernels *kk;
    const kvq_attn_kernels *ak;
    kvq_vec_dot_fn f16dot;
    kvq_from_float_fn to_f16;
    kvq_to_float_fn from_f16;
} kstate;

static int value_group(int G, int hd) {
    int vg = G < hd ? G : hd;
    return hd % vg ? hd : vg;
}

static kvq_status kivi_configure(const kvq_kv_spec *s, const kvq_kv_geom *g, void *cfgs, char *err, size_t cap) {
    long kb = 4, vb = 4, G = 32, R = -1;
    const char *layers = NULL;
    for (int i = 0; i < s->n_copt; i++) {
        const kvq_kv_opt *o = &s->copt[i];
        long k, v;
        if (!o->val[0] && kvq_kv_bits_pair(o->key, &k, &v)) { kb = k; vb = v; }
        else if (!strcmp(o->key, "k") || !strcmp(o->key, "v") || !strcmp(o->key, "g") || !strcmp(o->key, "r")) {
            long *dst = o->key[0] == 'k' ? &kb : o->key[0] == 'v' ? &vb : o->key[0] == 'g' ? &G : &R;
            if (!kvq_kv_opt_int(o, 1, o->key, 0, 4096, dst, err, cap)) return KVQ_ERR_ARG;
        } else if (!strcmp(o->key, "layers") && o->val[0]) layers = o->val;
        else {
            snprintf(err, cap, "kivi: unknown option '%s' (kXvY, k=, v=, g=, r=, layers=FILE)", o->key);
            return KVQ_ERR_ARG;
        }
    }
    if (G < 4 || G > 256 || G % 4) {
        snprintf(err, cap, "kivi: group g=%ld must be a multiple of 4 in [4, 256]", G);
        return KVQ_ERR_ARG;
    }
    if (R < 0) R = G;
    if (kb > 16 || vb > 16) {
        snprintf(err, cap, "kivi: K%ld V%ld is not supported (bits 2, 4 or 8; k16v16 keeps a layer fp16)", kb, vb);
        return KVQ_ERR_ARG;
    }
    int8_t *k = calloc((size_t)g->n_layer, 1), *v = calloc((size_t)g->n_layer, 1);
    if (!k || !v) { free(k); free(v); return KVQ_ERR_NOMEM; }
    kvq_status st = KVQ_OK;
    if (layers) st = kvq_layer_bits_load(layers, g->n_layer, k, v, err, cap);
    else
        for (int l = 0; l < g->n_layer; l++) { k[l] = (int8_t)kb; v[l] = (int8_t)vb; }
    for (int l = 0; !st && l < g->n_layer; l++) {
        bool ok = (k[l] == 2 || k[l] == 4 || k[l] == 8) && (v[l] == 2 || v[l] == 4 || v[l] == 8);
        if (!ok && !(k[l] == 16 && v[l] == 16)) {
            snprintf(err, cap, "kivi: K%d V%d is not supported (bits 2, 4 or 8; k16v16 keeps a layer fp16)", k[l], v[l]);
            st = KVQ_ERR_ARG;
        }
    }
    int vg = value_group((int)G, g->head_dim);
    if (!st && (vg * 2) % 8) {
        snprintf(err, cap, "kivi: head_dim %d gives value groups of %d, too small to pack", g->head_dim, vg);
        st = KVQ_ERR_ARG;
    }
    for (int l = 0; !st && l < g->n_layer; l++)
        ((kivi_cfg *)cfgs)[l] = (kivi_cfg){k[l], v[l], (int16_t)G, (int16_t)R};
    free(k);
    free(v);
    return st;
}

static void shape(const kvq_kv_layer *L, int *kb, int *vb, int *G, int *R, int *vg, int *ng) {
    const kivi_cfg *c = L->cfg;
    *kb = c->kb; *vb = c->vb; *G = c->g; *R = c->r;
    *vg = value_group(c->g, L->head_dim);
    *ng = L->head_dim / *vg;
}

/* kb == 16 marks a layer kept in fp16: its window never flushes. */
static int64_t quantized_for(int64_t n, int kb, int G, int R) {
    return kb != 16 && n >= R + G ? (n - R) / G * G : 0;
}

static uint64_t kivi_bytes_for(const kvq_kv_layer *L, int64_t n) {
    int kb, vb, G, R, vg, ng;
    shape(L, &kb, &vb, &G, &R, &vg, &ng);
    const kstate *st = L->state;
    /* the live count when asked about the cache's own contents (a prefill chunk
     * waiting for its commit is still fp16), the steady state otherwise */
    const uint64_t hd = (uint64_t)L->head_dim,
                   nq = st && n == L->n ? (uint64_t)st->nq : (uint64_t)quantized_for(n, kb, G, R);
    uint64_t keys = nq / G * (hd * (uint64_t)G * kb / 8 + hd * 4);   /* codes + fp16 (min, scale) per channel */
    uint64_t vals = nq * (hd * vb / 8 + (uint64_t)ng * 4);           /* codes + fp16 (min, scale) per group */
    uint64_t window = ((uint64_t)n - nq) * hd * 2 * 2;                /* fp16 K and V */
    return (uint64_t)L->n_head_kv * (keys + vals + window);
}

/* Sizes the fp16 window for w tokens per head, keeping its first `keep`
 * rows; the bytes are charged to the cache. */
static kvq_status window_resize(kvq_kv_layer *L, kstate *s, int w, int keep) {
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

static kvq_status kivi_init(kvq_kv_layer *L) {
    kstate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    L->state = s;
    shape(L, &s->kb, &s->vb, &s->G, &s->R, &s->vg, &s->ng);
    const size_t hd = (size_t)L->head_dim;
    s->kblk = s->kb == 16 ? 0 : hd * (size_t)kvq_code_bytes(s->G, s->kb);
    s->vrow = s->kb == 16 ? 0 : (size_t)s->ng * (size_t)kvq_code_bytes(s->vg, s->vb);
    /* whole blocks (and so whole quads of 4) per page, about 256 slots */
    s->P = (256 + s->G - 1) / s->G * s->G;
    const size_t nb = (size_t)(s->P / s->G);
    s->off_kms = nb * s->kblk;
    s->off_vc = s->off_kms + nb * hd * 2 * sizeof(kvq_f16);
    s->off_vms = s->off_vc + (size_t)s->P * s->vrow;
    s->head_bytes = s->off_vms + (size_t)s->P * (size_t)s->ng * 2 * sizeof(kvq_f16);
    L->page = s->P;
    L->page_bytes = s->kb == 16 ? 0 : s->head_bytes * (size_t)L->n_head_kv;
    const int isa = kvq_isa_active();
    s->kk = kvq_kivi_kernels_isa(isa);
    s->ak = kvq_attn_kernels_isa(isa);
    s->f16dot = kvq_traits(KVQ_TYPE_F16)->vec_dot;
    s->to_f16 = kvq_traits(KVQ_TYPE_F16)->from_float;
    s->from_f16 = kvq_traits(KVQ_TYPE_F16)->to_float;
    L->n = 0;
    kvq_status st = kvq_pages_init(&s->pages, s->P, L->page_bytes, s->kb == 16 ? 0 : L->cap, &L->cache->mem);
    if (st) return st;
    /* room for a whole prefill chunk on top of a full window: it is quantized
     * at commit. An fp16 layer (k16v16) is all window, grown as tokens come. */
    int w = s->kb == 16 ? 0 : s->R + s->G + (L->n_batch > 1 ? L->n_batch : 0);
    if (w > L->cap + s->G) w = L->cap + s->G;
    return window_resize(L, s, w, 0);
}

static void kivi_destroy(kvq_kv_layer *L) {
    kstate *s = L->state;
    if (s) {
        kvq_pages_free(&s->pages);
        free(s->wk);
        free(s->wv);
        kvq_kv_mem_charge(&L->cache->mem, -(int64_t)s->wbytes);
    }
    free(s);
    L->state = NULL;
}

static kvq_status kivi_reserve(kvq_kv_layer *L, int n) {
    kstate *s = L->state;
    if (s->kb == 16) {
        if (n <= s->wcap) return KVQ_OK;
        int w = (n + 255) / 256 * 256;
        return window_resize(L, s, w < L->cap + 1 ? w : L->cap + 1, L->n);
    }
    return kvq_pages_reserve(&s->pages, n);
}

/* Head h's region of the page that holds slot t. */
static inline uint8_t *hpage(const kstate *s, int h, int t) {
    return kvq_page(&s->pages, t) + (size_t)h * s->head_bytes;
}
static inline uint8_t *kblock(const kstate *s, int h, int t) {
    return hpage(s, h, t) + (size_t)((t % s->P) / s->G) * s->kblk;
}
static inline kvq_f16 *kmsb(const kvq_kv_layer *L, const kstate *s, int h, int t) {
    return (kvq_f16 *)(hpage(s, h, t) + s->off_kms) + (size_t)((t % s->P) / s->G) * (size_t)L->head_dim * 2;
}
/* the value codes of the page holding t: quad 0 of the page (kvq_vrow_byte with t % P) */
static inline uint8_t *vpage(const kstate *s, int h, int t) { return hpage(s, h, t) + s->off_vc; }
static inline kvq_f16 *vmsp(const kstate *s, int h, int t) {
    return (kvq_f16 *)(hpage(s, h, t) + s->off_vms) + (size_t)(t % s->P) * (size_t)s->ng * 2;
}
static inline uint16_t *wrow(const kvq_kv_layer *L, const kstate *s, uint16_t *w, int h, int r) {
    return w + ((size_t)h * s->wcap + (size_t)r) * (size_t)L->head_dim;
}

/* Quantizes the oldest G window tokens of every head as the block at slot nq. */
static void flush(kvq_kv_layer *L, kstate *s) {
    const int hd = L->head_dim, G = s->G;
    float *k = malloc((size_t)G * hd * sizeof(float)), *v = malloc((size_t)G * hd * sizeof(float));
    if (!k || !v) { free(k); free(v); return; } /* keep the window; next append retries */
    const int cb = kvq_code_bytes(G, s->kb), gb = kvq_code_bytes(s->vg, s->vb);
    for (int h = 0; h < L->n_head_kv; h++) {
        for (int i = 0; i < G; i++) {
            s->from_f16(wrow(L, s, s->wk, h, i), k + (size_t)i * hd, hd);
            s->from_f16(wrow(L, s, s->wv, h, i), v + (size_t)i * hd, hd);
        }
        uint8_t *kc = kblock(s, h, s->nq);
        kvq_f16 *ms = kmsb(L, s, h, s->nq);
        for (int d = 0; d < hd; d++) kvq_quant_group(k + d, hd, G, s->kb, kc + (size_t)d * cb, &ms[d], &ms[hd + d]);
        for (int i = 0; i < G; i++) {
            uint8_t vr[1024];
            const int t = s->nq + i;
            kvq_f16 *vm = vmsp(s, h, t);
            for (int gr = 0; gr < s->ng; gr++)
                kvq_quant_group(v + (size_t)i * hd + gr * s->vg, 1, s->vg, s->vb, vr + (size_t)gr * gb, &vm[2 * gr],
                                &vm[2 * gr + 1]);
            kvq_vrow_put(vpage(s, h, t), t % s->P, (int)s->vrow, vr);
        }
        int rest = L->n - s->nq - G;
        memmove(wrow(L, s, s->wk, h, 0), wrow(L, s, s->wk, h, G), (size_t)rest * hd * 2);
        memmove(wrow(L, s, s->wv, h, 0), wrow(L, s, s->wv, h, G), (size_t)rest * hd * 2);
    }
    s->nq += G;
    free(k);
    free(v);
}

static kvq_status kivi_append(kvq_kv_layer *L, const float *k, const float *v, int n, const int32_t *pos) {
    (void)pos;
    kstate *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    for (int t = 0; t < n; t++) {
        int r = L->n - s->nq;
        if (r >= s->wcap && s->kb != 16) { /* chunk larger than declared: quantize early */
            flush(L, s);
            r = L->n - s->nq;
        }
        if (r >= s->wcap) return KVQ_ERR_NOMEM; /* a flush could not allocate */
        for (int h = 0; h < nkv; h++) {
            s->to_f16(k + ((size_t)t * nkv + h) * hd, wrow(L, s, s->wk, h, r), hd);
            s->to_f16(v + ((size_t)t * nkv + h) * hd, wrow(L, s, s->wv, h, r), hd);
        }
        L->n++;
    }
    return KVQ_OK;
}

/* Quantizes the oldest window block while the verified tokens fill R + G:
 * pending (speculative) tokens are never flushed. */
static void kivi_commit(kvq_kv_layer *L, int n_final) {
    kstate *s = L->state;
    if (n_final > L->n) n_final = L->n;
    while (s->kb != 16 && n_final - s->nq >= s->R + s->G) {
        int before = s->nq;
        flush(L, s);
        if (s->nq == before) break; /* out of memory: keep the window */
    }
}

static void kivi_qk(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *q, int n_q, float *scores) {
    (void)view;
    (void)vis;
    const kstate *s = L->state;
    const int G = s->G, hd = L->head_dim, qend = t0 + n < s->nq ? t0 + n : s->nq;
    float tmp[64 * 256];
    for (int b0 = t0 / G * G; b0 < qend; b0 += G) {
        const bool whole = b0 >= t0 && b0 + G <= t0 + n;
        for (int g0 = 0; g0 < n_q; g0 += 64) {
            int ng = n_q - g0 < 64 ? n_q - g0 : 64;
            float *dst = whole ? scores + (size_t)g0 * n + (b0 - t0) : tmp;
            s->kk->qk_block(kblock(s, h, b0), kmsb(L, s, h, b0), G, hd, s->kb, q + (size_t)g0 * hd, ng, dst,
                            whole ? n : G);
            if (!whole) {
                int a = b0 > t0 ? b0 : t0, e = b0 + G < qend ? b0 + G : qend;
                for (int g = 0; g < ng; g++)
                    memcpy(scores + (size_t)(g0 + g) * n + (a - t0), tmp + (size_t)g * G + (a - b0),
                           (size_t)(e - a) * sizeof(float));
            }
        }
    }
    for (int t = t0 > s->nq ? t0 : s->nq; t < t0 + n; t++) {
        const uint16_t *kr = wrow(L, s, s->wk, h, t - s->nq);
        for (int g = 0; g < n_q; g++) scores[(size_t)g * n + (t - t0)] = s->f16dot(kr, q + (size_t)g * hd, hd);
    }
}

static void kivi_av(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *w, int n_q, float *out) {
    (void)view;
    (void)vis;
    const kstate *s = L->state;
    const int hd = L->head_dim, qend = t0 + n < s->nq ? t0 + n : s->nq;
    if (qend > t0)
        s->kk->av_rows(vpage(s, h, t0), t0 % s->P, vmsp(s, h, t0), qend - t0, hd, s->vb, s->vg, w, n, n_q, out);
    int w0 = t0 > s->nq ? t0 : s->nq;
    if (w0 < t0 + n)
        s->ak->av_f16(wrow(L, s, s->wv, h, w0 - s->nq), t0 + n - w0, hd, w + (w0 - t0), n, n_q, out);
}

/* Dequantized token t of head h into k[hd], v[hd]. */
static void token_at(const kvq_kv_layer *L, const kstate *s, int h, int t, float *k, float *v) {
    const int hd = L->head_dim, G = s->G;
    if (t >= s->nq) {
        for (int d = 0; d < hd; d++) {
            if (k) k[d] = kvq_f16_to_f32(wrow(L, s, s->wk, h, t - s->nq)[d]);
            if (v) v[d] = kvq_f16_to_f32(wrow(L, s, s->wv, h, t - s->nq)[d]);
        }
        return;
    }
    const int cb = kvq_code_bytes(G, s->kb), gb = kvq_code_bytes(s->vg, s->vb);
    const uint8_t *kc = kblock(s, h, t);
    uint8_t vr[1024];
    kvq_vrow_get(vpage(s, h, t), t % s->P, (int)s->vrow, vr);
    const kvq_f16 *ms = kmsb(L, s, h, t), *vm = vmsp(s, h, t);
    for (int d = 0; d < hd; d++) {
        if (k) k[d] = kvq_f16_to_f32(ms[d]) + kvq_f16_to_f32(ms[hd + d]) * kvq_code_at(kc + (size_t)d * cb, G, s->kb, t % G);
        if (v) {
            int gr = d / s->vg;
            v[d] = kvq_f16_to_f32(vm[2 * gr]) + kvq_f16_to_f32(vm[2 * gr + 1]) * kvq_code_at(vr + (size_t)gr * gb, s->vg, s->vb, d % s->vg);
        }
    }
}

static void kivi_read(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v) {
    (void)view;
    const kstate *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++)
            token_at(L, s, h, t0 + t, k ? k + ((size_t)t * nkv + h) * hd : NULL, v ? v + ((size_t)t * nkv + h) * hd : NULL);
}

/* Rolling back into quantized blocks restores those tokens to the window from
 * their codes (lossy: they were quantized), so later appends stay consistent. */
static void kivi_truncate(kvq_kv_layer *L, int n) {
    kstate *s = L->state;
    if (n < L->n && n >= s->nq) L->n = n;
    else if (n < L->n) {
        const int nq2 = n / s->G * s->G, hd = L->head_dim;
        float k[1024], v[1024];
        for (int h = 0; h < L->n_head_kv; h++)
            for (int t = nq2; t < n; t++) {
                token_at(L, s, h, t, k, v);
                s->to_f16(k, wrow(L, s, s->wk, h, t - nq2), hd);
                s->to_f16(v, wrow(L, s, s->wv, h, t - nq2), hd);
            }
        s->nq = nq2;
        L->n = n;
    }
    if (s->kb != 16) kvq_pages_release(&s->pages, L->n);
}

/* Eviction regroups tokens, and keys are quantized per channel over blocks of
 * G tokens: a block of kept tokens that were not one block before needs new
 * (min, scale) pairs. The layer is rebuilt from its dequantized tokens:
 * values (per token) re-encode to the same codes, a key block that stays
 * whole and aligned re-encodes to itself, and regrouped key blocks are
 * requantized once (docs/ARCHITECTURE.md gives the error this adds). The
 * newest kept tokens return to the fp16 window as KIVI keeps them. */
static kvq_status kivi_compact(kvq_kv_layer *L, const int32_t *keep, int n_keep) {
    kstate *s = L->state;
    const int nkv = L->n_head_kv, hd = L->head_dim, row = nkv * hd;
    float *k = malloc((size_t)n_keep * row * sizeof(float) + 1), *v = malloc((size_t)n_keep * row * sizeof(float) + 1);
    if (!k || !v) { free(k); free(v); return KVQ_ERR_NOMEM; }
    for (int h = 0; h < nkv; h++)
        for (int j = 0; j < n_keep; j++)
            token_at(L, s, h, keep[(size_t)h * n_keep + j], k + (size_t)j * row + (size_t)h * hd,
                     v + (size_t)j * row + (size_t)h * hd);
    s->nq = 0;
    L->n = 0;
    kvq_status st = kivi_reserve(L, n_keep);
    for (int t0 = 0; !st && t0 < n_keep; t0 += s->G) {
        /* a block at a time, so the window never overflows */
        int m = n_keep - t0 < s->G ? n_keep - t0 : s->G;
        st = kivi_append(L, k + (size_t)t0 * row, v + (size_t)t0 * row, m, NULL);
        kivi_commit(L, L->n);
    }
    if (s->kb != 16) kvq_pages_release(&s->pages, L->n);
    free(k);
    free(v);
    return st;
}

/* Per head: the quantized region a page at a time (key blocks, their
 * (min, scale), value rows, their pairs), then the fp16 window rows. */
static kvq_status kivi_io(const kvq_kv_layer *L, FILE *f, bool wr) {
    const kstate *s = L->state;
    const size_t hd = (size_t)L->head_dim, w = (size_t)(L->n - s->nq);
    for (int h = 0; h < L->n_head_kv; h++) {
        for (int p0 = 0; p0 < s->nq; p0 += s->P) {
            const int m = s->nq - p0 < s->P ? s->nq - p0 : s->P; /* whole blocks, and quads */
            const size_t nb = (size_t)(m / s->G), nv = (size_t)(m + 3) / 4 * 4;
            uint8_t *hp = hpage(s, h, p0);
            const struct { void *p; size_t n; } part[] = {
                {hp, nb * s->kblk}, {hp + s->off_kms, nb * hd * 4}, {hp + s->off_vc, nv * s->vrow},
                {hp + s->off_vms, (size_t)m * s->ng * 4}};
            for (int i = 0; i < 4; i++)
                if (wr ? fwrite(part[i].p, 1, part[i].n, f) != part[i].n : fread(part[i].p, 1, part[i].n, f) != part[i].n)
                    return wr ? KVQ_ERR_IO : KVQ_ERR_FORMAT;
        }
        uint16_t *wk = wrow(L, s, s->wk, h, 0), *wv = wrow(L, s, s->wv, h, 0);
        if (wr ? fwrite(wk, hd * 2, w, f) != w || fwrite(wv, hd * 2, w, f) != w
               : fread(wk, hd * 2, w, f) != w || fread(wv, hd * 2, w, f) != w)
            return wr ? KVQ_ERR_IO : KVQ_ERR_FORMAT;
    }
    return KVQ_OK;
}

static int kivi_grain(const kvq_kv_layer *L) { return ((const kivi_cfg *)L->cfg)->g; }

static kvq_status kivi_save(const kvq_kv_layer *L, FILE *f) {
    const kstate *s = L->state;
    int32_t nq = s->nq;
    if (fwrite(&nq, 4, 1, f) != 1) return KVQ_ERR_IO;
    return kivi_io(L, f, true);
}

static kvq_status kivi_load(kvq_kv_layer *L, FILE *f) {
    kstate *s = L->state;
    int32_t nq;
    if (fread(&nq, 4, 1, f) != 1 || nq < 0 || nq > L->n || nq % s->G || L->n - nq > s->wcap ||
        (s->kb == 16 && nq)) {
        L->n = 0;
        return KVQ_ERR_FORMAT;
    }
    s->nq = nq;
    kvq_status st = kivi_io(L, f, false);
    if (st) { s->nq = 0; L->n = 0; }
    return st;
}

const kvq_codec kvq_codec_kivi = {
    .name = "kivi", .cfg_size = sizeof(kivi_cfg), .configure = kivi_configure, .bytes_for = kivi_bytes_for,
    .init = kivi_init, .destroy = kivi_destroy, .reserve = kivi_reserve, .append = kivi_append,
    .commit = kivi_commit, .qk = kivi_qk, .av = kivi_av, .read = kivi_read, .truncate = kivi_truncate,
    .compact = kivi_compact, .grain = kivi_grain, .save = kivi_save, .load = kivi_load,
};
