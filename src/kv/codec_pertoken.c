/* Per-token KV codecs: every token's K and V quantized on arrival, in groups
 * along head_dim, with no full-precision window.
 *  - pertoken:k4v2[,g=G][,rot]  KVTuner's per-token mode: asymmetric
 *    (min, scale) in fp16 per group of G channels (default: head_dim);
 *    pertoken:layers=FILE gives each layer its own pair (k16v16: fp16);
 *  - q8_0, q4_0[,rot]           llama.cpp's KV cache types: symmetric blocks
 *    of 32 along head_dim (fp16 d + codes, byte-identical to ggml's
 *    block_q8_0 / block_q4_0: 8.5 / 4.5 bits per value). Heads smaller than
 *    32, which llama.cpp cannot quantize, use one block per head.
 * `rot` stores K and V after a normalized Hadamard rotation of each head (what
 * llama.cpp adopted for q4_0): q.k = (Hq).(Hk) and the value sum is rotated
 * back, so outliers spread over the head before quantization. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../kernels/fwht.h"
#include "../kernels/types.h"
#include "../core/cpu.h"
#include "blk_kernels.h"
#include "kv.h"
#include "kv_layers.h"
#include "kvquant.h"

enum { PT_ASYM, PT_Q8_0, PT_Q4_0 };

#define PAGE 256
/* A row and a batch of queries live on the stack in the attention loop and
 * the quantizer: head_dim up to MAX_HD, queries in groups of QBUF floats. */
#define MAX_HD 1024
#define QBUF 4096
/* a q8_0 row at MAX_HD (the largest row a tile converts) */
#define ROW_MAX (MAX_HD / 32 * 34)

typedef struct pt_cfg { int8_t kind, kb, vb, rot; int16_t g; } pt_cfg;

typedef struct pt_state {
    pt_cfg c;
    int ng;          /* groups per head */
    size_t grp;      /* bytes per group (codes + fp16 metadata) for K / V */
    size_t kgrp, vgrp;
    /* a page of PAGE slots holds, per head, PAGE key rows then PAGE value rows
     * (ng groups each) */
    kvq_pages pages;
    size_t krow, vrow, head_bytes;
    kvq_vec_dot_fn dot;
    /* q8_0 / q4_0 in blocks of 32: ggml blocks, read in place by fused
     * kernels (blk_kernels.h: an int16 query against the codes for keys,
     * 16-bit integer weights for values). A Q8_0 query and int8 dots, as
     * llama.cpp uses, add more error than the q8_0 cache's own
     * (docs/kv-quantization.md); int16 adds far less. Keys and values are
     * the blocks' bytes in tiles of 8 tokens (blk_kernels.h), so that the
     * key dots need no horizontal sums and the value products no pairing
     * of rows. NULL for heads smaller than 32 (one block per head) and the
     * asymmetric groups, which stay rows. */
    const kvq_blk_kernels *bk;
} pt_state;

static size_t group_bytes(int kind, int g, int b) {
    if (kind == PT_ASYM && b == 16) return (size_t)g * 2;           /* a k16v16 layer: plain fp16 */
    if (kind == PT_ASYM) return (size_t)kvq_code_bytes(g, b) + 4; /* codes + fp16 min + fp16 scale */
    return (size_t)(kind == PT_Q8_0 ? g : g / 2) + 2;              /* fp16 d + codes */
}

static kvq_status pt_configure(const kvq_kv_spec *s, const kvq_kv_geom *g, void *cfgs, char *err, size_t cap) {
    pt_cfg c = {PT_ASYM, 4, 4, 0, 0};
    if (!strcmp(s->codec, "q8_0")) { c.kind = PT_Q8_0; c.kb = c.vb = 8; }
    if (!strcmp(s->codec, "q4_0")) { c.kind = PT_Q4_0; c.kb = c.vb = 4; }
    long G = 0;
    const char *layers = NULL;
    for (int i = 0; i < s->n_copt; i++) {
        const kvq_kv_opt *o = &s->copt[i];
        long k, v;
        if (!strcmp(o->key, "rot") && !o->val[0]) c.rot = 1;
        else if (c.kind == PT_ASYM && !o->val[0] && kvq_kv_bits_pair(o->key, &k, &v)) {
            if (k > 16 || v > 16) {
                snprintf(err, cap, "pertoken: %s asks for more than 16 bits", o->key);
                return KVQ_ERR_ARG;
            }
            c.kb = (int8_t)k;
            c.vb = (int8_t)v;
        } else if (c.kind == PT_ASYM && !strcmp(o->key, "g")) {
            if (!kvq_kv_opt_int(o, 1, "g", 4, 1024, &G, err, cap)) return KVQ_ERR_ARG;
        } else if (c.kind == PT_ASYM && !strcmp(o->key, "layers") && o->val[0]) {
            layers = o->val;
        } else {
            snprintf(err, cap, "%s: unknown option '%s'%s", s->codec, o->key,
                     c.kind == PT_ASYM ? " (kXvY, g=, rot, layers=FILE)" : " (rot)");
            return KVQ_ERR_ARG;
        }
    }
    const int hd = g->head_dim;
    if (hd > MAX_HD) {
        snprintf(err, cap, "%s: head_dim %d is above the %d this codec supports", s->codec, hd, MAX_HD);
        return KVQ_ERR_UNSUPPORTED;
    }
    if (c.kind == PT_ASYM) {
        if ((c.kb != 2 && c.kb != 4 && c.kb != 8) || (c.vb != 2 && c.vb != 4 && c.vb != 8)) {
            snprintf(err, cap, "pertoken: K%d V%d is not supported (bits 2, 4 or 8)", c.kb, c.vb);
            return KVQ_ERR_ARG;
        }
        c.g = (int16_t)(G ? G : hd);
        if (hd % c.g || (c.g * 2) % 8) {
            snprintf(err, cap, "pertoken: group %d must divide head_dim %d (and hold whole bytes)", c.g, hd);
            return KVQ_ERR_ARG;
        }
    } else {
        c.g = (int16_t)(hd % 32 == 0 ? 32 : hd); /* llama.cpp's block, or one block per small head */
        if (c.g % 2) {
            snprintf(err, cap, "%s: head_dim %d is odd", s->codec, hd);
            return KVQ_ERR_ARG;
        }
    }
    if (c.rot && (hd & (hd - 1))) {
        snprintf(err, cap, "%s: rot needs a power-of-two head_dim (got %d)", s->codec, hd);
        return KVQ_ERR_ARG;
    }
    for (int l = 0; l < g->n_layer; l++) ((pt_cfg *)cfgs)[l] = c;
    if (layers) { /* per-layer pairs (KVTuner's per-token mode); k16v16 keeps a layer fp16 */
        int8_t *kb = calloc((size_t)g->n_layer, 1), *vb = calloc((size_t)g->n_layer, 1);
        kvq_status st = kb && vb ? kvq_layer_bits_load(layers, g->n_layer, kb, vb, err, cap) : KVQ_ERR_NOMEM;
        for (int l = 0; !st && l < g->n_layer; l++) {
            ((pt_cfg *)cfgs)[l].kb = kb[l];
            ((pt_cfg *)cfgs)[l].vb = vb[l];
        }
        free(kb);
        free(vb);
        return st;
    }
    return KVQ_OK;
}

static uint64_t pt_bytes_for(const kvq_kv_layer *L, int64_t n) {
    const pt_cfg *c = L->cfg;
    const int ng = L->head_dim / c->g;
    return (uint64_t)n * (uint64_t)L->n_head_kv * (uint64_t)ng *
           (group_bytes(c->kind, c->g, c->kb) + group_bytes(c->kind, c->g, c->vb));
}

static kvq_status pt_init(kvq_kv_layer *L) {
    pt_state *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    L->state = s;
    s->c = *(const pt_cfg *)L->cfg;
    s->ng = L->head_dim / s->c.g;
    s->kgrp = group_bytes(s->c.kind, s->c.g, s->c.kb);
    s->vgrp = group_bytes(s->c.kind, s->c.g, s->c.vb);
    s->krow = (size_t)s->ng * s->kgrp;
    s->vrow = (size_t)s->ng * s->vgrp;
    s->head_bytes = (size_t)PAGE * (s->krow + s->vrow);
    L->page = PAGE;
    L->page_bytes = s->head_bytes * (size_t)L->n_head_kv;
    s->dot = kvq_traits(KVQ_TYPE_F32)->vec_dot;
    if (s->c.g == 32 && s->c.kind != PT_ASYM) s->bk = kvq_blk_kernels_isa(kvq_isa_active());
    L->n = 0;
    return kvq_pages_init(&s->pages, PAGE, L->page_bytes, L->cap, &L->cache->mem);
}

static void pt_destroy(kvq_kv_layer *L) {
    pt_state *s = L->state;
    if (s) kvq_pages_free(&s->pages);
    free(s);
    L->state = NULL;
}

static kvq_status pt_reserve(kvq_kv_layer *L, int n) { return kvq_pages_reserve(&((pt_state *)L->state)->pages, n); }

/* In-place normalized Walsh-Hadamard transform (its own inverse). */
static void hadamard(float *x, int n) {
    kvq_fwht(x, n);
    const float s = 1.0f / sqrtf((float)n);
    for (int i = 0; i < n; i++) x[i] *= s;
}

static void quant_group(int kind, const float *x, int g, int b, uint8_t *out) {
    if (kind == PT_ASYM && b == 16) {
        for (int i = 0; i < g; i++) {
            kvq_f16 h = kvq_f32_to_f16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        return;
    }
    if (kind == PT_ASYM) {
        kvq_f16 mn, sc;
        kvq_quant_group(x, 1, g, b, out + 4, &mn, &sc);
        memcpy(out, &mn, 2);
        memcpy(out + 2, &sc, 2);
        return;
    }
    float amax = 0, mx = 0;
    for (int i = 0; i < g; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); mx = x[i]; }
    /* ggml's reference quantizers: q8_0 d = amax/127, q4_0 d = max/-8 */
    float d = kind == PT_Q8_0 ? amax / 127.0f : mx / -8.0f, id = d ? 1.0f / d : 0.0f;
    kvq_f16 dh = kvq_f32_to_f16(d);
    memcpy(out, &dh, 2);
    if (kind == PT_Q8_0) {
        for (int i = 0; i < g; i++) {
            const float c = rintf(x[i] * id); /* NaN (corrupt input) becomes 0, never an undefined cast */
            out[2 + i] = (uint8_t)(int8_t)(c >= -127 ? (c <= 127 ? c : 127) : (c < 0 ? -127 : 0));
        }
    } else {
        memset(out + 2, 0, (size_t)g / 2);
        for (int i = 0; i < g; i++) {
            const float c = x[i] * id + 8.5f;
            const int q = c >= 0 ? (c < 15 ? (int)c : 15) : 0; /* NaN gives 0 */
            out[2 + i % (g / 2)] |= (uint8_t)(q << (4 * (i / (g / 2))));
        }
    }
}

static void dequant_group(int kind, const uint8_t *p, int g, int b, float *y) {
    if (kind == PT_ASYM && b == 16) {
        for (int i = 0; i < g; i++) {
            kvq_f16 h;
            memcpy(&h, p + 2 * i, 2);
            y[i] = kvq_f16_to_f32(h);
        }
        return;
    }
    if (kind == PT_ASYM) {
        kvq_f16 mn, sc;
        memcpy(&mn, p, 2);
        memcpy(&sc, p + 2, 2);
        float m = kvq_f16_to_f32(mn), s = kvq_f16_to_f32(sc);
        for (int i = 0; i < g; i++) y[i] = m + s * (float)kvq_code_at(p + 4, g, b, i);
        return;
    }
    kvq_f16 dh;
    memcpy(&dh, p, 2);
    float d = kvq_f16_to_f32(dh);
    if (kind == PT_Q8_0)
        for (int i = 0; i < g; i++) y[i] = d * (float)(int8_t)p[2 + i];
    else
        for (int i = 0; i < g; i++) y[i] = d * (float)(((p[2 + i % (g / 2)] >> (4 * (i / (g / 2)))) & 15) - 8);
}

static inline uint8_t *kslot(const pt_state *s, int h, int t) {
    return kvq_page(&s->pages, t) + (size_t)h * s->head_bytes + (size_t)(t % PAGE) * s->krow;
}
static inline uint8_t *vslot(const pt_state *s, int h, int t) {
    return kvq_page(&s->pages, t) + (size_t)h * s->head_bytes + (size_t)PAGE * s->krow + (size_t)(t % PAGE) * s->vrow;
}

/* a head's key or value tiles in the page of slot t (blk_kernels.h), when
 * tiled: the same region as its PAGE rows */
static inline uint8_t *tiles(const pt_state *s, int h, int t, bool value) {
    return kvq_page(&s->pages, t) + (size_t)h * s->head_bytes + (value ? (size_t)PAGE * s->krow : 0);
}
static inline uint8_t *slot(const pt_state *s, int h, int t, bool value) {
    return value ? vslot(s, h, t) : kslot(s, h, t);
}

/* token t's key or value as a ggml block row (or a group row) in and out of
 * its slot; a tiled one goes through buf (ROW_MAX bytes) */
static void row_put(const pt_state *s, int h, int t, bool value, const uint8_t *row) {
    if (s->bk) kvq_blk_put(tiles(s, h, t, value), t % PAGE, (int)(s->ng * s->c.g), s->c.kind == PT_Q8_0, value, row);
    else memcpy(slot(s, h, t, value), row, value ? s->vrow : s->krow);
}
static const uint8_t *row_get(const pt_state *s, int h, int t, bool value, uint8_t *buf) {
    if (!s->bk) return slot(s, h, t, value);
    kvq_blk_get(tiles(s, h, t, value), t % PAGE, (int)(s->ng * s->c.g), s->c.kind == PT_Q8_0, value, buf);
    return buf;
}

static void row_quant(const kvq_kv_layer *L, const pt_state *s, const float *x, int b, uint8_t *dst, size_t grp) {
    float tmp[MAX_HD];
    memcpy(tmp, x, (size_t)L->head_dim * sizeof(float));
    if (s->c.rot) hadamard(tmp, L->head_dim);
    for (int gr = 0; gr < s->ng; gr++) quant_group(s->c.kind, tmp + gr * s->c.g, s->c.g, b, dst + gr * grp);
}

/* Dequantized row in the stored (possibly rotated) basis. */
static void row_dequant(const kvq_kv_layer *L, const pt_state *s, const uint8_t *src, int b, size_t grp, float *y) {
    for (int gr = 0; gr < s->ng; gr++) dequant_group(s->c.kind, src + gr * grp, s->c.g, b, y + gr * s->c.g);
    (void)L;
}

static kvq_status pt_append(kvq_kv_layer *L, const float *k, const float *v, int n, const int32_t *pos) {
    (void)pos;
    pt_state *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    uint8_t rb[ROW_MAX];
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++)
            for (int val = 0; val < 2; val++) {
                const float *x = (val ? v : k) + ((size_t)t * nkv + h) * hd;
                const int bits = val ? s->c.vb : s->c.kb;
                const size_t grp = val ? s->vgrp : s->kgrp;
                if (s->bk) { /* through a row: the tile holds it in pieces */
                    row_quant(L, s, x, bits, rb, grp);
                    row_put(s, h, L->n + t, val, rb);
                } else {
                    row_quant(L, s, x, bits, slot(s, h, L->n + t, val), grp);
                }
            }
    L->n += n;
    return KVQ_OK;
}

/* Queries go through in groups that fit a stack buffer of QBUF floats (the
 * attention driver batches query positions, so n_q can reach 16 x the GQA
 * group): no allocation in the attention loop, nothing to fail. */
static void pt_qk(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *q, int n_q, float *scores) {
    (void)view;
    (void)vis;
    const pt_state *s = L->state;
    const int hd = L->head_dim, per = QBUF / hd;
    float qr[QBUF], kr[MAX_HD];
    for (int g0 = 0; g0 < n_q; g0 += per) {
        const int m = n_q - g0 < per ? n_q - g0 : per;
        const float *qq = q + (size_t)g0 * hd;
        if (s->c.rot) {
            memcpy(qr, qq, (size_t)m * hd * sizeof(float));
            for (int g = 0; g < m; g++) hadamard(qr + g * hd, hd);
            qq = qr;
        }
        float *sc = scores + (size_t)g0 * n;
        if (s->bk) s->bk->qk(tiles(s, h, t0, false), t0 % PAGE, n, hd, s->c.kind == PT_Q8_0, qq, m, sc, n);
        for (int i = 0; i < n && !s->bk; i++) {
            row_dequant(L, s, kslot(s, h, t0 + i), s->c.kb, s->kgrp, kr);
            for (int g = 0; g < m; g++) sc[(size_t)g * n + i] = s->dot(kr, qq + (size_t)g * hd, hd);
        }
    }
}

static void pt_av(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *w, int n_q, float *out) {
    (void)view;
    (void)vis;
    const pt_state *s = L->state;
    const int hd = L->head_dim, per = QBUF / hd;
    float vr[MAX_HD], acc[QBUF];
    for (int g0 = 0; g0 < n_q; g0 += per) {
        const int m = n_q - g0 < per ? n_q - g0 : per;
        const float *wg = w + (size_t)g0 * n;
        float *og = out + (size_t)g0 * hd, *o = s->c.rot ? acc : og;
        if (s->c.rot) memset(acc, 0, (size_t)m * hd * sizeof(float));
        if (s->bk) s->bk->av(tiles(s, h, t0, true), t0 % PAGE, n, hd, s->c.kind == PT_Q8_0, wg, n, m, o);
        for (int i = 0; i < n && !s->bk; i++) {
            row_dequant(L, s, vslot(s, h, t0 + i), s->c.vb, s->vgrp, vr);
            for (int g = 0; g < m; g++) {
                const float wi = wg[(size_t)g * n + i];
                for (int d = 0; d < hd; d++) o[g * hd + d] += wi * vr[d];
            }
        }
        if (s->c.rot)
            for (int g = 0; g < m; g++) {
                hadamard(acc + g * hd, hd);
                for (int d = 0; d < hd; d++) og[g * hd + d] += acc[g * hd + d];
            }
    }
}

static void pt_read(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v) {
    (void)view;
    const pt_state *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    uint8_t rb[ROW_MAX];
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++) {
            float *kd = k ? k + ((size_t)t * nkv + h) * hd : NULL, *vd = v ? v + ((size_t)t * nkv + h) * hd : NULL;
            if (kd) {
                row_dequant(L, s, row_get(s, h, t0 + t, false, rb), s->c.kb, s->kgrp, kd);
                if (s->c.rot) hadamard(kd, hd);
            }
            if (vd) {
                row_dequant(L, s, row_get(s, h, t0 + t, true, rb), s->c.vb, s->vgrp, vd);
                if (s->c.rot) hadamard(vd, hd);
            }
        }
}

static void pt_truncate(kvq_kv_layer *L, int n) {
    pt_state *s = L->state;
    if (n < L->n) L->n = n;
    kvq_pages_release(&s->pages, L->n);
}

/* Exact: rows move down in place (dst <= src; a tiled one goes through a
 * row buffer, and its tile's other lanes are untouched). */
static kvq_status pt_compact(kvq_kv_layer *L, const int32_t *keep, int n_keep) {
    pt_state *s = L->state;
    uint8_t rb[ROW_MAX];
    for (int h = 0; h < L->n_head_kv; h++)
        for (int j = 0; j < n_keep; j++) {
            int32_t src = keep[(size_t)h * n_keep + j];
            if (src == j) continue;
            for (int val = 0; val < 2; val++) row_put(s, h, j, val, row_get(s, h, src, val, rb));
        }
    L->n = n_keep;
    kvq_pages_release(&s->pages, n_keep);
    return KVQ_OK;
}

/* Session files hold ggml block rows, whatever the memory layout: per page
 * and head, its key rows then its value rows. */
static kvq_status pt_io(const kvq_kv_layer *L, FILE *f, bool wr) {
    const pt_state *s = L->state;
    uint8_t *rows = s->bk ? malloc((size_t)PAGE * (s->krow > s->vrow ? s->krow : s->vrow)) : NULL;
    if (s->bk && !rows) return KVQ_ERR_NOMEM;
    kvq_status st = KVQ_OK;
    for (int p0 = 0; p0 < L->n && !st; p0 += PAGE) {
        const size_t m = (size_t)(L->n - p0 < PAGE ? L->n - p0 : PAGE);
        for (int h = 0; h < L->n_head_kv; h++)
            for (int val = 0; val < 2 && !st; val++) {
                const size_t rs = val ? s->vrow : s->krow;
                uint8_t *p = rows ? rows : slot(s, h, p0, val);
                if (rows && wr)
                    for (size_t i = 0; i < m; i++) row_get(s, h, p0 + (int)i, val, rows + i * rs);
                if (wr ? fwrite(p, rs, m, f) != m : fread(p, rs, m, f) != m) st = wr ? KVQ_ERR_IO : KVQ_ERR_FORMAT;
                if (rows && !wr && !st)
                    for (size_t i = 0; i < m; i++) row_put(s, h, p0 + (int)i, val, rows + i * rs);
            }
    }
    free(rows);
    return st;
}

static kvq_status pt_save(const kvq_kv_layer *L, FILE *f) { return pt_io(L, f, true); }
static kvq_status pt_load(kvq_kv_layer *L, FILE *f) { return pt_io(L, f, false); }

#define PT_CODEC(NAME)                                                                                         \
    {.name = NAME, .cfg_size = sizeof(pt_cfg), .configure = pt_configure, .bytes_for = pt_bytes_for,           \
     .init = pt_init, .destroy = pt_destroy, .reserve = pt_reserve, .append = pt_append, .qk = pt_qk, .av = pt_av, .read = pt_read,    \
     .truncate = pt_truncate, .compact = pt_compact, .save = pt_save, .load = pt_load}

const kvq_codec kvq_codec_pertoken = PT_CODEC("pertoken");
const kvq_codec kvq_codec_q8_0 = PT_CODEC("q8_0");
const kvq_codec kvq_codec_q4_0 = PT_CODEC("q4_0");
