/* AQUA-KV codec (methods/aquakv.md): each layer's keys (before RoPE) and
 * values are predicted from the layer below's reconstructions with the
 * calibrated predictors (aqua_pred.h), and only the residual is stored, in
 * `bits` bits per value (HIGGS or uniform rows, resq.h); layer 0, which has
 * nothing below it, is stored at 4 bits.
 *
 * Slots: the first `sink` tokens stay fp16, then the compressed tokens, then
 * a full-precision window that is compressed W = 128 tokens at a time once
 * verified, layer by layer (layer l compresses a chunk right after layer
 * l-1 did, from l-1's reconstruction of it). Keys are stored before RoPE
 * with their positions, and rotated when read.
 *
 * Attention needs every token's reconstruction, and the predictor mixes all
 * channels of the layer below, so nothing can be folded into the query:
 *   mode=stream (default): each step, `prepare` rebuilds the layer's
 *     reconstructions of all compressed tokens from the layer below's (a
 *     ping-pong scratch shared by the layers: memory stays compressed,
 *     N * 3C^2 multiply-adds per layer per step);
 *   mode=cached: the reconstructions are kept (f32, rotated) from the
 *     moment a chunk is compressed: no per-step rebuild, but f32 memory (and,
 *     measured, 4-5x f16's decode time; docs/aquakv.md). Both modes read
 *     exactly the same values.
 * The practical use on a CPU is the cold tier: a session saved through this
 * codec is about 2 bits per value and restores into any hot codec.
 * Spec: aqua:pred=FILE|none[,bits=2|3|4][,q=higgs|uniform][,mode=stream|cached] */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/cpu.h"
#include "../core/fp16.h"
#include "../kernels/types.h"
#include "../quant/resq.h"
#include "aqua_pred.h"
#include "kv.h"
#include "kv_simd.h"

#define SINK 4
#define WIN 128
#define PAGE 256
#define MAX_C 4096  /* KV width n_head_kv * head_dim */
#define MAX_HD 256

typedef struct aqua_cfg {
    kvq_aqua_pred *pred; /* shared by the layers; NULL: no predictor (the ablation) */
    int8_t bits, kind, cached;
} aqua_cfg;

typedef struct ashared { /* the ping-pong of stream mode, owned by layer 0 */
    float *buf[2];       /* [cap][2C]: reconstructed k (pre-RoPE) then v, per token */
    size_t cap;
    float *rk;           /* [cap][C] the current layer's rotated keys */
} ashared;

typedef struct astate {
    int C, nc;              /* compressed tokens: slots [SINK, SINK + nc) */
    kvq_resq q;             /* this layer's residual quantizer (4 bits for layer 0) */
    size_t row;             /* bytes per compressed token: k row, v row, position */
    kvq_pages pages;
    uint16_t *fk, *fv;      /* fp16 pre-RoPE rows of the sinks and the window: [SINK + wcap][C] */
    int32_t *fpos;          /* their positions */
    int wcap;
    uint64_t fbytes;
    float *lk, *lv;         /* the last compressed chunk's reconstruction [WIN][C] (for the layer above) */
    int last;               /* its first slot (-1: none) */
    /* The last reconstruction a read produced (pre-RoPE): a conversion reads one range
     * of every layer in turn, and layer l's rebuild needs layer l-1's. Without it each
     * read rebuilds the whole chain below: L(L+1)/2 layer rebuilds per range, not L. */
    float *mk, *mv;
    int m_i0, m_n, m_cap;
    float *ck, *cv;         /* mode=cached: rotated k and v of every compressed token [cap][C] */
    size_t ccap;
    ashared *sh;
    kvq_to_float_fn from_f16;
    kvq_from_float_fn to_f16;
    const kvq_attn_kernels *ak;
} astate;

static kvq_status aqua_configure(const kvq_kv_spec *s, const kvq_kv_geom *g, void *cfgs, char *err, size_t cap) {
    const char *pred = NULL, *q = NULL, *mode = NULL;
    long bits = 0;
    for (int i = 0; i < s->n_copt; i++) {
        const kvq_kv_opt *o = &s->copt[i];
        if (!strcmp(o->key, "pred") && o->val[0]) pred = o->val;
        else if (!strcmp(o->key, "q") && o->val[0]) q = o->val;
        else if (!strcmp(o->key, "mode") && o->val[0]) mode = o->val;
        else if (!strcmp(o->key, "bits")) { if (!kvq_kv_opt_int(o, 1, "bits", 2, 4, &bits, err, cap)) return KVQ_ERR_ARG; }
        else {
            snprintf(err, cap, "aqua: unknown option '%s' (pred=FILE|none, bits=, q=higgs|uniform, mode=stream|cached)", o->key);
            return KVQ_ERR_ARG;
        }
    }
    if (!pred) {
        snprintf(err, cap, "aqua: needs pred=FILE (from kvq calibrate aqua), or pred=none for no predictor");
        return KVQ_ERR_ARG;
    }
    if (q && strcmp(q, "higgs") && strcmp(q, "uniform")) {
        snprintf(err, cap, "aqua: q=%s is not higgs or uniform", q);
        return KVQ_ERR_ARG;
    }
    if (mode && strcmp(mode, "stream") && strcmp(mode, "cached")) {
        snprintf(err, cap, "aqua: mode=%s is not stream or cached", mode);
        return KVQ_ERR_ARG;
    }
    const int C = g->n_head_kv * g->head_dim;
    if (C > MAX_C || g->head_dim > MAX_HD) { /* the per-row and per-tile buffers below live on the stack */
        snprintf(err, cap, "aqua: a KV width of %d (%d KV heads of %d) is beyond the supported %d (heads of at most %d)",
                 C, g->n_head_kv, g->head_dim, MAX_C, MAX_HD);
        return KVQ_ERR_UNSUPPORTED;
    }
    kvq_aqua_pred *p = NULL;
    if (strcmp(pred, "none")) {
        p = calloc(1, sizeof *p);
        if (!p) return KVQ_ERR_NOMEM;
        kvq_status st = kvq_aqua_pred_load(pred, g->n_layer, C, g->fingerprint, p, NULL, err, cap);
        if (st) {
            free(p);
            return st;
        }
    }
    const int kind = q ? (!strcmp(q, "uniform") ? KVQ_RESQ_UNIFORM : KVQ_RESQ_HIGGS) : p ? p->kind : KVQ_RESQ_HIGGS;
    const int b = bits ? (int)bits : p ? p->bits : 2;
    kvq_resq test;
    if (kvq_resq_init(&test, kind, b, C)) {
        snprintf(err, cap, "aqua: a KV width of %d has no power-of-two group of 8 or more", C);
        if (p) { kvq_aqua_pred_free(p); free(p); }
        return KVQ_ERR_UNSUPPORTED;
    }
    for (int l = 0; l < g->n_layer; l++)
        ((aqua_cfg *)cfgs)[l] = (aqua_cfg){p, (int8_t)b, (int8_t)kind, (int8_t)(mode && !strcmp(mode, "cached"))};
    return KVQ_OK;
}

static void aqua_release(void *cfgs, int n_layer) {
    aqua_cfg *c = cfgs;
    if (n_layer > 0 && c[0].pred) {
        kvq_aqua_pred_free(c[0].pred);
        free(c[0].pred);
    }
}

static uint64_t aqua_aux_bytes(const void *cfgs, int n_layer) {
    const aqua_cfg *c = cfgs;
    return n_layer > 0 && c[0].pred ? c[0].pred->n_params * sizeof(float) : 0;
}

static size_t row_bytes(const kvq_kv_layer *L, const aqua_cfg *c) {
    const int C = L->n_head_kv * L->head_dim;
    kvq_resq q;
    kvq_resq_init(&q, c->kind, L->il == 0 ? 4 : c->bits, C);
    return 2 * q.row_bytes + sizeof(int32_t);
}

/* compressed tokens for n held (their window compressed once W verified tokens gather) */
static int64_t compressed_for(int64_t n) { return n > SINK ? (n - SINK) / WIN * WIN : 0; }

static uint64_t aqua_bytes_for(const kvq_kv_layer *L, int64_t n) {
    const aqua_cfg *c = L->cfg;
    const astate *s = L->state;
    const int64_t nc = s && n == L->n ? s->nc : compressed_for(n);
    const uint64_t C = (uint64_t)L->n_head_kv * L->head_dim;
    /* codes and scales of both rows, the position, and the fp16 sinks and window with theirs;
     * mode=cached also holds every compressed token's f32 reconstruction of k and v */
    return (uint64_t)nc * (row_bytes(L, c) + (c->cached ? C * 2 * sizeof(float) : 0)) + (uint64_t)(n - nc) * (C * 4 + 4);
}

static kvq_status fbuf_resize(kvq_kv_layer *L, astate *s, int w) {
    const int C = s->C, keep = L->n - s->nc;
    const uint64_t bytes = (uint64_t)(SINK + w) * ((uint64_t)C * 4 + 4);
    kvq_status st = kvq_kv_mem_charge(&L->cache->mem, (int64_t)bytes - (int64_t)s->fbytes);
    if (st) return st;
    uint16_t *fk = calloc((size_t)(SINK + w) * C, 2), *fv = calloc((size_t)(SINK + w) * C, 2);
    int32_t *fp = calloc((size_t)(SINK + w), 4);
    if (!fk || !fv || !fp) {
        free(fk); free(fv); free(fp);
        kvq_kv_mem_charge(&L->cache->mem, (int64_t)s->fbytes - (int64_t)bytes);
        return KVQ_ERR_NOMEM;
    }
    if (s->fk) {
        memcpy(fk, s->fk, (size_t)(keep > 0 ? keep : 0) * C * 2);
        memcpy(fv, s->fv, (size_t)(keep > 0 ? keep : 0) * C * 2);
        memcpy(fp, s->fpos, (size_t)(keep > 0 ? keep : 0) * 4);
    }
    free(s->fk); free(s->fv); free(s->fpos);
    s->fk = fk; s->fv = fv; s->fpos = fp;
    s->wcap = w;
    s->fbytes = bytes;
    return KVQ_OK;
}

static kvq_status aqua_init(kvq_kv_layer *L) {
    astate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    L->state = s;
    const aqua_cfg *c = L->cfg;
    s->C = L->n_head_kv * L->head_dim;
    s->last = -1;
    kvq_status st = kvq_resq_init(&s->q, c->kind, L->il == 0 ? 4 : c->bits, s->C);
    if (st) return st;
    s->row = row_bytes(L, c);
    s->from_f16 = kvq_traits(KVQ_TYPE_F16)->to_float;
    s->to_f16 = kvq_traits(KVQ_TYPE_F16)->from_float;
    s->ak = kvq_attn_kernels_active();
    s->lk = malloc((size_t)WIN * s->C * sizeof(float));
    s->lv = malloc((size_t)WIN * s->C * sizeof(float));
    if (!s->lk || !s->lv) return KVQ_ERR_NOMEM;
    if (L->il == 0) {
        s->sh = calloc(1, sizeof *s->sh);
        if (!s->sh) return KVQ_ERR_NOMEM;
    } else {
        s->sh = ((astate *)L->prev->state)->sh;
    }
    L->page = PAGE;
    L->page_bytes = (size_t)PAGE * s->row;
    L->n = 0;
    if ((st = kvq_pages_init(&s->pages, PAGE, L->page_bytes, L->cap, &L->cache->mem))) return st;
    return fbuf_resize(L, s, 2 * WIN + (L->n_batch > 1 ? L->n_batch : 1));
}

static void aqua_destroy(kvq_kv_layer *L) {
    astate *s = L->state;
    if (s) {
        kvq_pages_free(&s->pages);
        free(s->fk); free(s->fv); free(s->fpos); free(s->lk); free(s->lv); free(s->ck); free(s->cv);
        free(s->mk); free(s->mv);
        kvq_kv_mem_charge(&L->cache->mem, -(int64_t)s->fbytes);
        if (L->il == 0 && s->sh) {
            free(s->sh->buf[0]); free(s->sh->buf[1]); free(s->sh->rk);
            free(s->sh);
        }
    }
    free(s);
    L->state = NULL;
}

/* Compressed slot i (0-based past the sinks) of this layer: k row, v row, position. */
static inline uint8_t *crow(const astate *s, int i) {
    const int t = SINK + i;
    return kvq_page(&s->pages, t) + (size_t)(t % PAGE) * s->row;
}
/* The position stored with compressed slot i. */
static inline int32_t cpos(const astate *s, int i) {
    int32_t p;
    memcpy(&p, crow(s, i) + 2 * s->q.row_bytes, 4);
    return p;
}
/* fp16 row of slot t (a sink or a window token) */
static inline int frow(const astate *s, int t) { return t < SINK ? t : t - s->nc; }

static kvq_status aqua_reserve(kvq_kv_layer *L, int n) {
    astate *s = L->state;
    if (L->n > 0 && n - s->nc - SINK > s->wcap) {
        kvq_status st = fbuf_resize(L, s, n - s->nc - SINK + 8);
        if (st) return st;
    }
    return kvq_pages_reserve(&s->pages, n);
}

static kvq_status aqua_append(kvq_kv_layer *L, const float *k, const float *v, int n, const int32_t *pos) {
    astate *s = L->state;
    const int C = s->C;
    if (L->n + n - s->nc - SINK > s->wcap && L->n + n > SINK) return KVQ_ERR_NOMEM;
    for (int t = 0; t < n; t++) {
        const int slot = L->n + t, r = frow(s, slot);
        s->to_f16(k + (size_t)t * C, s->fk + (size_t)r * C, C);
        s->to_f16(v + (size_t)t * C, s->fv + (size_t)r * C, C);
        s->fpos[r] = pos ? pos[t] : slot;
    }
    L->n += n;
    return KVQ_OK;
}

/* p = W x + bias for an [out] x [in] row-major W, in tiles of one chunk (WIN
 * rows) by PRED_COLS outputs, shared out between the threads. A BLAS may round
 * an element differently with the product's shape, so every prediction of a
 * token is made in the one shape its tile has: callers pass whole chunks, and
 * a token's reconstruction is the same bits whichever path (compression, a
 * read of any range, stream mode, a conversion) computes it. */
#define PRED_COLS 128
static void mat_rows(const float *W, const float *bias, int out, int in, const float *x, int n, float *y) {
    kvq_blas_serial();
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, bias, (size_t)out * sizeof(float));
    const int nb = (n + WIN - 1) / WIN, nt = (out + PRED_COLS - 1) / PRED_COLS;
#pragma omp parallel for schedule(static) if (nb * nt > 1 && (int64_t)n * out * in >= KVQ_FORK_MIN_WORK)
    for (int t = 0; t < nb * nt; t++) {
        const int i = t / nt * WIN, c0 = t % nt * PRED_COLS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n - i < WIN ? n - i : WIN,
                    out - c0 < PRED_COLS ? out - c0 : PRED_COLS, in, 1.0f, x + (size_t)i * in, in, W + (size_t)c0 * in,
                    in, 1.0f, y + (size_t)i * out + c0, out);
    }
}

/* Predictions for n tokens of this layer from the layer below's reconstructions.
 * pk, pv [n][C]; kprev, vprev [n][C]; khat [n][C] (this layer's keys, for p_v). Layer 0
 * and pred=none predict zero. */
static void predict_k(const kvq_kv_layer *L, const float *kprev, int n, float *pk) {
    const aqua_cfg *c = L->cfg;
    const int C = L->n_head_kv * L->head_dim;
    if (L->il == 0 || !c->pred) memset(pk, 0, (size_t)n * C * sizeof(float));
    else mat_rows(c->pred->A[L->il], c->pred->a[L->il], C, C, kprev, n, pk);
}
static void predict_v(const kvq_kv_layer *L, const float *khat, const float *vprev, int n, float *pv, float *tmp) {
    const aqua_cfg *c = L->cfg;
    const int C = L->n_head_kv * L->head_dim;
    if (L->il == 0 || !c->pred) {
        memset(pv, 0, (size_t)n * C * sizeof(float));
        return;
    }
    for (int i = 0; i < n; i++) {
        memcpy(tmp + (size_t)i * 2 * C, khat + (size_t)i * C, (size_t)C * sizeof(float));
        memcpy(tmp + (size_t)i * 2 * C + C, vprev + (size_t)i * C, (size_t)C * sizeof(float));
    }
    mat_rows(c->pred->B[L->il], c->pred->b[L->il], C, 2 * C, tmp, n, pv);
}

/* Compressed slots [i0, i0 + n) of this layer (pre-RoPE): the predictions from the
 * layer below's reconstructions kp, vp [n][C] plus the stored residuals. tmp: [n][2C]. */
static void rebuild(const kvq_kv_layer *L, const float *kp, const float *vp, int i0, int n, float *k, float *v,
                    float *tmp) {
    const astate *s = L->state;
    const int C = s->C;
    float r[MAX_C];
    predict_k(L, kp, n, k);
#pragma omp parallel for schedule(static) private(r) if ((int64_t)n * C >= 65536)
    for (int i = 0; i < n; i++) {
        kvq_resq_dequant(&s->q, crow(s, i0 + i), r);
        for (int j = 0; j < C; j++) k[(size_t)i * C + j] += r[j];
    }
    predict_v(L, k, vp, n, v, tmp);
#pragma omp parallel for schedule(static) private(r) if ((int64_t)n * C >= 65536)
    for (int i = 0; i < n; i++) {
        kvq_resq_dequant(&s->q, crow(s, i0 + i) + s->q.row_bytes, r);
        for (int j = 0; j < C; j++) v[(size_t)i * C + j] += r[j];
    }
}

static kvq_status recon(const kvq_kv_layer *L, int i0, int n, float *k, float *v);

/* The inputs of layer L's predictors for compressed slots [i0, i0 + n): the
 * layer below's reconstruction (pre-RoPE), taken from what it last compressed
 * or was last read for when that matches, rebuilt otherwise (then *own: the
 * caller frees *kp and *vp). NULL for layer 0 and pred=none. */
static kvq_status below(const kvq_kv_layer *L, int i0, int n, const float **kp, const float **vp, bool *own) {
    *kp = *vp = NULL;
    *own = false;
    if (L->il == 0 || !((const aqua_cfg *)L->cfg)->pred) return KVQ_OK;
    const astate *ps = L->prev->state;
    if (ps->last == i0 && n <= WIN) {
        *kp = ps->lk;
        *vp = ps->lv;
        return KVQ_OK;
    }
    if (ps->m_n >= n && ps->m_i0 == i0) {
        *kp = ps->mk;
        *vp = ps->mv;
        return KVQ_OK;
    }
    float *k = malloc((size_t)n * ps->C * sizeof(float)), *v = malloc((size_t)n * ps->C * sizeof(float));
    kvq_status st = k && v ? recon(L->prev, i0, n, k, v) : KVQ_ERR_NOMEM;
    if (st) {
        free(k);
        free(v);
        return st;
    }
    *kp = k;
    *vp = v;
    *own = true;
    return KVQ_OK;
}

/* The layer's reconstruction of compressed slots [i0, i0 + n) (indices past the
 * sinks; whole chunks) into k, v [n][C] (pre-RoPE). */
static kvq_status recon(const kvq_kv_layer *L, int i0, int n, float *k, float *v) {
    const astate *s = L->state;
    const float *kp, *vp;
    bool own;
    float *tmp = malloc((size_t)n * 2 * s->C * sizeof(float));
    kvq_status st = tmp ? below(L, i0, n, &kp, &vp, &own) : KVQ_ERR_NOMEM;
    if (!st) rebuild(L, kp, vp, i0, n, k, v, tmp);
    if (!st && own) {
        free((float *)kp);
        free((float *)vp);
    }
    free(tmp);
    return st;
}

/* Rotated keys of n tokens (pre-RoPE rows k) at positions pos into out (may alias k). */
static void rotate(const kvq_kv_layer *L, const float *k, const int32_t *pos, int n, float *out) {
    const kvq_kv_cache *c = L->cache;
    if (out != k) memcpy(out, k, (size_t)n * L->n_head_kv * L->head_dim * sizeof(float));
    if (c->rope) c->rope(c->rope_user, out, n, pos, L->n_head_kv);
}

/* Compresses the chunk of slots [SINK + nc, SINK + nc + WIN) from its fp16 rows. */
static kvq_status compress_chunk(kvq_kv_layer *L, astate *s) {
    const aqua_cfg *c = L->cfg;
    const int C = s->C, i0 = s->nc;
    float *k = malloc((size_t)WIN * C * sizeof(float)), *v = malloc((size_t)WIN * C * sizeof(float));
    float *pk = malloc((size_t)WIN * C * sizeof(float)), *pv = malloc((size_t)WIN * C * sizeof(float));
    float *tmp = malloc((size_t)WIN * 2 * C * sizeof(float));
    int32_t pos[WIN];
    kvq_status st = k && v && pk && pv && tmp ? KVQ_OK : KVQ_ERR_NOMEM;
    const float *kp = NULL, *vp = NULL;
    bool own = false;
    if (!st) st = below(L, i0, WIN, &kp, &vp, &own);
    if (!st) {
        for (int i = 0; i < WIN; i++) {
            const int r = frow(s, SINK + i0 + i);
            s->from_f16(s->fk + (size_t)r * C, k + (size_t)i * C, C);
            s->from_f16(s->fv + (size_t)r * C, v + (size_t)i * C, C);
            pos[i] = s->fpos[r];
        }
        predict_k(L, kp, WIN, pk);
        /* tokens are quantized independently; a wide layer (Llama-3.2-1B: 512 values a token
         * at 2 bits is 128 searches over 256 grid points) is worth the threads */
#pragma omp parallel for schedule(static) if (C >= 256)
        for (int i = 0; i < WIN; i++) {
            float rr[MAX_C];
            uint8_t *row = crow(s, i0 + i);
            for (int j = 0; j < C; j++) rr[j] = k[(size_t)i * C + j] - pk[(size_t)i * C + j];
            kvq_resq_quant(&s->q, rr, row);
            kvq_resq_dequant(&s->q, row, rr);
            for (int j = 0; j < C; j++) s->lk[(size_t)i * C + j] = pk[(size_t)i * C + j] + rr[j];
        }
        predict_v(L, s->lk, vp, WIN, pv, tmp);
#pragma omp parallel for schedule(static) if (C >= 256)
        for (int i = 0; i < WIN; i++) {
            float rr[MAX_C];
            uint8_t *row = crow(s, i0 + i);
            for (int j = 0; j < C; j++) rr[j] = v[(size_t)i * C + j] - pv[(size_t)i * C + j];
            kvq_resq_quant(&s->q, rr, row + s->q.row_bytes);
            kvq_resq_dequant(&s->q, row + s->q.row_bytes, rr);
            for (int j = 0; j < C; j++) s->lv[(size_t)i * C + j] = pv[(size_t)i * C + j] + rr[j];
            memcpy(row + 2 * s->q.row_bytes, &pos[i], 4);
        }
        s->last = i0;
        if (c->cached) { /* keep the reconstruction, rotated */
            if ((size_t)(i0 + WIN) > s->ccap) {
                size_t cap = s->ccap ? s->ccap * 2 : 1024;
                while (cap < (size_t)(i0 + WIN)) cap *= 2;
                float *nk = realloc(s->ck, cap * C * sizeof(float)), *nv = nk ? realloc(s->cv, cap * C * sizeof(float)) : NULL;
                if (nk) s->ck = nk;
                if (nv) s->cv = nv;
                if (!nk || !nv) st = KVQ_ERR_NOMEM;
                else {
                    kvq_kv_mem_charge(&L->cache->mem, (int64_t)((cap - s->ccap) * C * 2 * sizeof(float)));
                    s->ccap = cap;
                }
            }
            if (!st) {
                rotate(L, s->lk, pos, WIN, s->ck + (size_t)i0 * C);
                memcpy(s->cv + (size_t)i0 * C, s->lv, (size_t)WIN * C * sizeof(float));
            }
        }
    }
    if (!st) {
        /* the window's later rows move down over the compressed chunk */
        const int rest = L->n - SINK - i0 - WIN;
        memmove(s->fk + (size_t)SINK * C, s->fk + (size_t)(SINK + WIN) * C, (size_t)rest * C * 2);
        memmove(s->fv + (size_t)SINK * C, s->fv + (size_t)(SINK + WIN) * C, (size_t)rest * C * 2);
        memmove(s->fpos + SINK, s->fpos + SINK + WIN, (size_t)rest * 4);
        s->nc += WIN;
    }
    if (own) {
        free((float *)kp);
        free((float *)vp);
    }
    free(k); free(v); free(pk); free(pv); free(tmp);
    return st;
}

static void aqua_commit(kvq_kv_layer *L, int n_final) {
    astate *s = L->state;
    if (n_final > L->n) n_final = L->n;
    while (n_final - SINK - s->nc >= WIN)
        if (compress_chunk(L, s)) break; /* out of memory: the window keeps the tokens */
}

/* Stream mode: this step's reconstruction of every compressed token, into the
 * shared scratch (the layer below left its own in the other half). */
static kvq_status aqua_prepare(kvq_kv_layer *L, const kvq_kv_step *st) {
    (void)st;
    astate *s = L->state;
    const aqua_cfg *c = L->cfg;
    if (c->cached || !s->nc) return KVQ_OK;
    ashared *sh = s->sh;
    const int C = s->C, n = s->nc;
    if ((size_t)n > sh->cap) {
        size_t cap = sh->cap ? sh->cap * 2 : 1024;
        while (cap < (size_t)n) cap *= 2;
        float *b0 = realloc(sh->buf[0], cap * 2 * C * sizeof(float));
        if (b0) sh->buf[0] = b0;
        float *b1 = realloc(sh->buf[1], cap * 2 * C * sizeof(float));
        if (b1) sh->buf[1] = b1;
        float *rk = realloc(sh->rk, cap * C * sizeof(float));
        if (rk) sh->rk = rk;
        if (!b0 || !b1 || !rk) return KVQ_ERR_NOMEM;
        sh->cap = cap;
    }
    float *me = sh->buf[L->il % 2];
    const float *below = L->il ? sh->buf[(L->il - 1) % 2] : NULL;
    float *k = me, *v = me + (size_t)sh->cap * C, *tmp = malloc((size_t)n * 2 * C * sizeof(float));
    if (!tmp) return KVQ_ERR_NOMEM;
    rebuild(L, below, below ? below + (size_t)sh->cap * C : NULL, 0, n, k, v, tmp);
    free(tmp);
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    if (!pos) return KVQ_ERR_NOMEM;
    for (int i = 0; i < n; i++) pos[i] = cpos(s, i);
    rotate(L, k, pos, n, sh->rk);
    free(pos);
    return KVQ_OK;
}

/* Rotated key rows and value rows of head h for slots [t0, t0+n) into kr, vr [n][hd] (f32). */
static void gather(const kvq_kv_layer *L, int h, int t0, int n, float *kr, float *vr) {
    const astate *s = L->state;
    const aqua_cfg *c = L->cfg;
    const int C = s->C, hd = L->head_dim;
    for (int i = 0; i < n; i++) {
        const int t = t0 + i;
        if (t >= SINK && t < SINK + s->nc) {
            const int ci = t - SINK;
            const float *ks = c->cached ? s->ck + (size_t)ci * C : s->sh->rk + (size_t)ci * C;
            const float *vs = c->cached ? s->cv + (size_t)ci * C : s->sh->buf[L->il % 2] + (size_t)s->sh->cap * C + (size_t)ci * C;
            if (kr) memcpy(kr + (size_t)i * hd, ks + (size_t)h * hd, (size_t)hd * sizeof(float));
            if (vr) memcpy(vr + (size_t)i * hd, vs + (size_t)h * hd, (size_t)hd * sizeof(float));
        } else {
            const int r = frow(s, t);
            float full[MAX_C];
            if (kr) {
                s->from_f16(s->fk + (size_t)r * C, full, C);
                L->cache->rope(L->cache->rope_user, full, 1, &s->fpos[r], L->n_head_kv);
                memcpy(kr + (size_t)i * hd, full + (size_t)h * hd, (size_t)hd * sizeof(float));
            }
            if (vr) s->from_f16(s->fv + (size_t)r * C + (size_t)h * hd, vr + (size_t)i * hd, hd);
        }
    }
}

static void aqua_qk(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *q, int n_q,
                    float *scores) {
    (void)view; (void)vis;
    const int hd = L->head_dim;
    float kr[128 * MAX_HD];
    for (int c0 = 0; c0 < n; c0 += 128) {
        const int m = n - c0 < 128 ? n - c0 : 128;
        gather(L, h, t0 + c0, m, kr, NULL);
        for (int g = 0; g < n_q; g++)
            for (int i = 0; i < m; i++) {
                float d = 0;
                for (int e = 0; e < hd; e++) d += q[(size_t)g * hd + e] * kr[(size_t)i * hd + e];
                scores[(size_t)g * n + c0 + i] = d;
            }
    }
}

static void aqua_av(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *w, int n_q,
                    float *out) {
    (void)view; (void)vis;
    const astate *s = L->state;
    float vr[128 * MAX_HD];
    for (int c0 = 0; c0 < n; c0 += 128) {
        const int m = n - c0 < 128 ? n - c0 : 128;
        gather(L, h, t0 + c0, m, NULL, vr);
        s->ak->av_f32(vr, m, L->head_dim, w + c0, n, n_q, out);
    }
}

/* Keeps a read's reconstruction for the layer above's next read (none if out of memory). */
static void memo(astate *s, int i0, int n, const float *k, const float *v) {
    const size_t C = (size_t)s->C;
    s->m_n = 0;
    if (n > s->m_cap) {
        float *nk = realloc(s->mk, (size_t)n * C * sizeof(float));
        if (nk) s->mk = nk;
        float *nv = nk ? realloc(s->mv, (size_t)n * C * sizeof(float)) : NULL;
        if (nv) s->mv = nv;
        if (!nk || !nv) return;
        s->m_cap = n;
    }
    memcpy(s->mk, k, (size_t)n * C * sizeof(float));
    memcpy(s->mv, v, (size_t)n * C * sizeof(float));
    s->m_i0 = i0;
    s->m_n = n;
}

/* Dense reconstruction, keys rotated (the codec convention), from codes
 * independently of any scratch: conversions and tests read through it. */
static void aqua_read(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v) {
    (void)view;
    astate *s = L->state;
    const int C = s->C;
    for (int t = t0; t < t0 + n;) {
        float *ko = k ? k + (size_t)(t - t0) * C : NULL, *vo = v ? v + (size_t)(t - t0) * C : NULL;
        if (t >= SINK && t < SINK + s->nc) {
            const int ci = t - SINK, m = SINK + s->nc - t < t0 + n - t ? SINK + s->nc - t : t0 + n - t;
            /* reconstructed by whole chunks (see mat_rows) */
            const int a0 = ci / WIN * WIN, a1 = (ci + m + WIN - 1) / WIN * WIN, na = a1 - a0;
            float *kk = malloc((size_t)na * C * sizeof(float)), *vv = malloc((size_t)na * C * sizeof(float));
            int32_t *pos = malloc((size_t)m * sizeof *pos);
            if (!kk || !vv || !pos || recon(L, a0, na, kk, vv)) { free(kk); free(vv); free(pos); return; }
            memo(s, a0, na, kk, vv);
            float *ks = kk + (size_t)(ci - a0) * C, *vs = vv + (size_t)(ci - a0) * C;
            for (int i = 0; i < m; i++) pos[i] = cpos(s, ci + i);
            rotate(L, ks, pos, m, ks);
            if (ko) memcpy(ko, ks, (size_t)m * C * sizeof(float));
            if (vo) memcpy(vo, vs, (size_t)m * C * sizeof(float));
            free(kk); free(vv); free(pos);
            t += m;
        } else {
            const int r = frow(s, t);
            if (ko) {
                s->from_f16(s->fk + (size_t)r * C, ko, C);
                L->cache->rope(L->cache->rope_user, ko, 1, &s->fpos[r], L->n_head_kv);
            }
            if (vo) s->from_f16(s->fv + (size_t)r * C, vo, C);
            t++;
        }
    }
}

static void aqua_truncate(kvq_kv_layer *L, int n) {
    astate *s = L->state;
    if (n < L->n) {
        if (n < SINK + s->nc) { /* into the compressed tokens: they return to fp16 from their reconstruction */
            const int C = s->C, keep_c = n > SINK ? (n - SINK) / WIN * WIN : 0, m = n - SINK - keep_c;
            if (m > 0) { /* the whole chunk is rebuilt (see mat_rows), its first m tokens kept */
                float *kk = malloc((size_t)WIN * C * sizeof(float)), *vv = malloc((size_t)WIN * C * sizeof(float));
                if (kk && vv && !recon(L, keep_c, WIN, kk, vv))
                    for (int i = 0; i < m; i++) {
                        s->to_f16(kk + (size_t)i * C, s->fk + (size_t)(SINK + i) * C, C);
                        s->to_f16(vv + (size_t)i * C, s->fv + (size_t)(SINK + i) * C, C);
                        s->fpos[SINK + i] = cpos(s, keep_c + i);
                    }
                free(kk);
                free(vv);
            }
            s->nc = keep_c;
            s->last = -1;
            s->m_n = 0;
        }
        L->n = n;
    }
    kvq_pages_release(&s->pages, L->n);
}

static kvq_status aqua_io(const kvq_kv_layer *L, FILE *f, bool wr) {
    const astate *s = L->state;
    const size_t C = (size_t)s->C, nf = (size_t)(L->n - s->nc);
    for (int i = 0; i < s->nc;) {
        const int t = SINK + i, m = PAGE - t % PAGE < s->nc - i ? PAGE - t % PAGE : s->nc - i;
        uint8_t *p = crow(s, i);
        if (wr ? fwrite(p, s->row, (size_t)m, f) != (size_t)m : fread(p, s->row, (size_t)m, f) != (size_t)m)
            return wr ? KVQ_ERR_IO : KVQ_ERR_FORMAT;
        i += m;
    }
    if (wr ? fwrite(s->fk, C * 2, nf, f) != nf || fwrite(s->fv, C * 2, nf, f) != nf || fwrite(s->fpos, 4, nf, f) != nf
           : fread(s->fk, C * 2, nf, f) != nf || fread(s->fv, C * 2, nf, f) != nf || fread(s->fpos, 4, nf, f) != nf)
        return wr ? KVQ_ERR_IO : KVQ_ERR_FORMAT;
    return KVQ_OK;
}

static kvq_status aqua_save(const kvq_kv_layer *L, FILE *f) {
    const astate *s = L->state;
    const int32_t nc = s->nc;
    if (fwrite(&nc, 4, 1, f) != 1) return KVQ_ERR_IO;
    return aqua_io(L, f, true);
}

static kvq_status aqua_load(kvq_kv_layer *L, FILE *f) {
    astate *s = L->state;
    if (((const aqua_cfg *)L->cfg)->cached) { /* its kept reconstructions are not in the file */
        L->n = 0;
        return kvq_err(L->cache->lg, KVQ_ERR_UNSUPPORTED,
                       "aqua mode=cached cannot be restored from a file (its kept reconstructions are not "
                       "stored): save the session with --session-kv aqua:pred=...,mode=stream, or use mode=stream");
    }
    int32_t nc;
    if (fread(&nc, 4, 1, f) != 1 || nc < 0 || nc % WIN || nc > L->n - SINK || L->n - nc > SINK + 2 * WIN + L->n_batch + 64) {
        L->n = 0;
        return KVQ_ERR_FORMAT;
    }
    if (L->n - nc - SINK > s->wcap && fbuf_resize(L, s, L->n - nc - SINK + 8)) {
        L->n = 0;
        return KVQ_ERR_NOMEM;
    }
    s->nc = nc;
    s->last = -1;
    s->m_n = 0;
    kvq_status st = aqua_io(L, f, false);
    if (st) { s->nc = 0; L->n = 0; }
    return st;
}

const kvq_codec kvq_codec_aqua = {
    .name = "aqua", .prerope = true, .cfg_size = sizeof(aqua_cfg), .configure = aqua_configure,
    .release = aqua_release, .aux_bytes = aqua_aux_bytes, .bytes_for = aqua_bytes_for, .init = aqua_init, .destroy = aqua_destroy,
    .reserve = aqua_reserve, .append = aqua_append, .prepare = aqua_prepare, .commit = aqua_commit, .qk = aqua_qk,
    .av = aqua_av, .read = aqua_read, .truncate = aqua_truncate, .save = aqua_save, .load = aqua_load,
};
