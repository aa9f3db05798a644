/* Reference codecs: f32 and f16. Keys are stored in transposed tiles of
 * KVQ_KT slots ([head][tile][dim][slot]) and values row-major
 * ([head][slot][dim]), so attention streams each head contiguously and the
 * query is broadcast against whole tiles (kv_simd.h). */
#include <stdlib.h>
#include <string.h>
#include "../core/fp16.h"
#include "../kernels/types.h"
#include "kv.h"
#include "kv_simd.h"

typedef struct fstate {
    uint8_t *k, *v;
    int es;        /* bytes per element */
    size_t tiles;  /* key tiles per head */
    const kvq_attn_kernels *kern;
} fstate;

static int elem_size(const kvq_kv_layer *L) { return L->codec->name[1] == '3' ? 4 : 2; }

static uint64_t f_bytes_for(const kvq_kv_layer *L, int64_t n) {
    return 2ull * (uint64_t)n * (uint64_t)L->n_head_kv * (uint64_t)L->head_dim * (uint64_t)elem_size(L);
}

static kvq_status f_init(kvq_kv_layer *L) {
    fstate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    L->state = s;
    s->es = elem_size(L);
    s->tiles = ((size_t)L->cap + KVQ_KT - 1) / KVQ_KT;
    s->kern = kvq_attn_kernels_active();
    const size_t per_head = s->tiles * KVQ_KT * (size_t)L->head_dim * (size_t)s->es;
    /* calloc: the unused slots of the last tile are read (and discarded) by full-tile kernels */
    s->k = calloc((size_t)L->n_head_kv, per_head);
    s->v = calloc((size_t)L->n_head_kv, per_head);
    if (!s->k || !s->v) return KVQ_ERR_NOMEM;
    L->n = 0;
    return KVQ_OK;
}

static void f_destroy(kvq_kv_layer *L) {
    fstate *s = L->state;
    if (s) { free(s->k); free(s->v); }
    free(s);
    L->state = NULL;
}

static inline size_t head_elems(const kvq_kv_layer *L, const fstate *s) {
    return s->tiles * KVQ_KT * (size_t)L->head_dim;
}
/* element index of key (slot t, dim d) of head h */
static inline size_t kidx(const kvq_kv_layer *L, const fstate *s, int h, int t, int d) {
    return (size_t)h * head_elems(L, s) + ((size_t)(t / KVQ_KT) * L->head_dim + d) * KVQ_KT + t % KVQ_KT;
}
static inline size_t vidx(const kvq_kv_layer *L, const fstate *s, int h, int t) {
    return (size_t)h * head_elems(L, s) + (size_t)t * L->head_dim;
}

static inline float get(const fstate *s, const uint8_t *base, size_t i) {
    return s->es == 4 ? ((const float *)base)[i] : kvq_f16_to_f32(((const uint16_t *)base)[i]);
}

static kvq_status f_append(kvq_kv_layer *L, const float *k, const float *v, int n) {
    fstate *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    const kvq_type_traits *tr = kvq_traits(s->es == 4 ? KVQ_TYPE_F32 : KVQ_TYPE_F16);
    uint8_t row[1024 * 4];
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++) {
            /* convert the key row once (SIMD), then scatter it down its tile column */
            tr->from_float(k + ((size_t)t * nkv + h) * hd, row, hd);
            for (int d = 0; d < hd; d++)
                memcpy(s->k + kidx(L, s, h, L->n + t, d) * s->es, row + (size_t)d * s->es, (size_t)s->es);
            tr->from_float(v + ((size_t)t * nkv + h) * hd, s->v + vidx(L, s, h, L->n + t) * s->es, hd);
        }
    L->n += n;
    return KVQ_OK;
}

static void f_qk(const kvq_kv_layer *L, int view, int h, int t0, int n, const float *q, int n_q, float *scores) {
    (void)view;
    const fstate *s = L->state;
    const int hd = L->head_dim;
    float tmp[KVQ_KT * 64];
    for (int tb = t0 / KVQ_KT * KVQ_KT; tb < t0 + n; tb += KVQ_KT) {
        const uint8_t *kt = s->k + kidx(L, s, h, tb, 0) * s->es;
        bool whole = tb >= t0 && tb + KVQ_KT <= t0 + n;
        for (int g0 = 0; g0 < n_q; g0 += 64) {
            int ng = n_q - g0 < 64 ? n_q - g0 : 64;
            float *dst = whole ? scores + (size_t)g0 * n + (tb - t0) : tmp;
            int lds = whole ? n : KVQ_KT;
            if (s->es == 4) s->kern->qk_tile_f32((const float *)kt, hd, q + (size_t)g0 * hd, ng, dst, lds);
            else s->kern->qk_tile_f16((const uint16_t *)kt, hd, q + (size_t)g0 * hd, ng, dst, lds);
            if (!whole) {
                int a = tb > t0 ? tb : t0, b = tb + KVQ_KT < t0 + n ? tb + KVQ_KT : t0 + n;
                for (int g = 0; g < ng; g++)
                    memcpy(scores + (size_t)(g0 + g) * n + (a - t0), tmp + g * KVQ_KT + (a - tb), (size_t)(b - a) * 4);
            }
        }
    }
}

static void f_av(const kvq_kv_layer *L, int view, int h, int t0, int n, const float *w, int n_q, float *out) {
    (void)view;
    const fstate *s = L->state;
    const uint8_t *v = s->v + vidx(L, s, h, t0) * s->es;
    if (s->es == 4) s->kern->av_f32((const float *)v, n, L->head_dim, w, n, n_q, out);
    else s->kern->av_f16((const uint16_t *)v, n, L->head_dim, w, n, n_q, out);
}

static void f_read(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v) {
    (void)view;
    const fstate *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++)
            for (int d = 0; d < hd; d++) {
                if (k) k[((size_t)t * nkv + h) * hd + d] = get(s, s->k, kidx(L, s, h, t0 + t, d));
                if (v) v[((size_t)t * nkv + h) * hd + d] = get(s, s->v, vidx(L, s, h, t0 + t) + d);
            }
}

static void f_truncate(kvq_kv_layer *L, int n) { if (n < L->n) L->n = n; }

static kvq_status f_compact(kvq_kv_layer *L, const int32_t *keep, int n_keep) {
    fstate *s = L->state;
    const int hd = L->head_dim;
    for (int h = 0; h < L->n_head_kv; h++)
        for (int j = 0; j < n_keep; j++) {
            int32_t src = keep[(size_t)h * n_keep + j];
            if (src < j || src >= L->n || (j && src <= keep[(size_t)h * n_keep + j - 1])) return KVQ_ERR_ARG;
            for (int d = 0; d < hd; d++)
                memcpy(s->k + kidx(L, s, h, j, d) * s->es, s->k + kidx(L, s, h, src, d) * s->es, (size_t)s->es);
            memmove(s->v + vidx(L, s, h, j) * s->es, s->v + vidx(L, s, h, src) * s->es, (size_t)hd * s->es);
        }
    L->n = n_keep;
    return KVQ_OK;
}

/* Saves whole key tiles (the last one partly filled) and n value rows per head. */
static kvq_status f_save(const kvq_kv_layer *L, FILE *f) {
    const fstate *s = L->state;
    size_t kb = ((size_t)L->n + KVQ_KT - 1) / KVQ_KT * KVQ_KT * L->head_dim * s->es, vb = (size_t)L->n * L->head_dim * s->es;
    for (int h = 0; h < L->n_head_kv; h++)
        if (fwrite(s->k + kidx(L, s, h, 0, 0) * s->es, 1, kb, f) != kb ||
            fwrite(s->v + vidx(L, s, h, 0) * s->es, 1, vb, f) != vb)
            return KVQ_ERR_IO;
    return KVQ_OK;
}

static kvq_status f_load(kvq_kv_layer *L, FILE *f) {
    fstate *s = L->state;
    size_t kb = ((size_t)L->n + KVQ_KT - 1) / KVQ_KT * KVQ_KT * L->head_dim * s->es, vb = (size_t)L->n * L->head_dim * s->es;
    for (int h = 0; h < L->n_head_kv; h++)
        if (fread(s->k + kidx(L, s, h, 0, 0) * s->es, 1, kb, f) != kb ||
            fread(s->v + vidx(L, s, h, 0) * s->es, 1, vb, f) != vb)
            return KVQ_ERR_FORMAT;
    return KVQ_OK;
}

#define FLOAT_CODEC(NAME)                                                                                     \
    {.name = NAME, .bytes_for = f_bytes_for, .init = f_init, .destroy = f_destroy, .append = f_append,       \
     .qk = f_qk, .av = f_av, .read = f_read, .truncate = f_truncate, .compact = f_compact, .save = f_save,   \
     .load = f_load}

const kvq_codec kvq_codec_f32 = FLOAT_CODEC("f32");
const kvq_codec kvq_codec_f16 = FLOAT_CODEC("f16");
