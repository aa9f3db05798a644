/* Reference codecs: f32 and f16, stored head-major ([head][slot][dim]) so
 * that attention streams each head's keys and values contiguously. */
#include <stdlib.h>
#include <string.h>
#include "../kernels/types.h"
#include "kv.h"

typedef struct fstate { uint8_t *k, *v; } fstate;

static int elem_size(const kvq_kv_layer *L) { return L->codec->name[1] == '3' ? 4 : 2; }
static kvq_type elem_type(const kvq_kv_layer *L) { return elem_size(L) == 4 ? KVQ_TYPE_F32 : KVQ_TYPE_F16; }

static uint64_t f_bytes_for(const kvq_kv_layer *L, int64_t n) {
    return 2ull * (uint64_t)n * (uint64_t)L->n_head_kv * (uint64_t)L->head_dim * (uint64_t)elem_size(L);
}

static kvq_status f_init(kvq_kv_layer *L) {
    fstate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    size_t half = (size_t)(f_bytes_for(L, L->cap) / 2);
    s->k = malloc(half);
    s->v = malloc(half);
    L->state = s;
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

static inline uint8_t *row(const kvq_kv_layer *L, uint8_t *base, int h, int t) {
    return base + ((size_t)h * (size_t)L->cap + (size_t)t) * (size_t)L->head_dim * (size_t)elem_size(L);
}

static kvq_status f_append(kvq_kv_layer *L, const float *k, const float *v, int n) {
    fstate *s = L->state;
    const kvq_type_traits *tr = kvq_traits(elem_type(L));
    const int hd = L->head_dim, nkv = L->n_head_kv;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++) {
            tr->from_float(k + ((size_t)t * nkv + h) * hd, row(L, s->k, h, L->n + t), hd);
            tr->from_float(v + ((size_t)t * nkv + h) * hd, row(L, s->v, h, L->n + t), hd);
        }
    L->n += n;
    return KVQ_OK;
}

static void f_qk(const kvq_kv_layer *L, int view, int h, int t0, int n, const float *q, int n_q, float *scores) {
    (void)view;
    fstate *s = L->state;
    const kvq_vec_dot_fn dot = kvq_traits(elem_type(L))->vec_dot;
    const int hd = L->head_dim;
    const size_t rs = (size_t)hd * (size_t)elem_size(L);
    const uint8_t *k = row(L, s->k, h, t0);
    for (int i = 0; i < n; i++, k += rs)
        for (int g = 0; g < n_q; g++) scores[(size_t)g * n + i] = dot(k, q + (size_t)g * hd, hd);
}

static void f_av(const kvq_kv_layer *L, int view, int h, int t0, int n, const float *w, int n_q, float *out) {
    (void)view;
    fstate *s = L->state;
    const int hd = L->head_dim;
    float tmp[1024];
    const kvq_to_float_fn conv = kvq_traits(elem_type(L))->to_float;
    for (int i = 0; i < n; i++) {
        const float *vr;
        if (elem_size(L) == 4) vr = (const float *)row(L, s->v, h, t0 + i);
        else { conv(row(L, s->v, h, t0 + i), tmp, hd); vr = tmp; }
        for (int g = 0; g < n_q; g++) {
            const float wi = w[(size_t)g * n + i];
            float *o = out + (size_t)g * hd;
            for (int d = 0; d < hd; d++) o[d] += wi * vr[d];
        }
    }
}

static void f_read(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v) {
    (void)view;
    fstate *s = L->state;
    const kvq_to_float_fn conv = kvq_traits(elem_type(L))->to_float;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++) {
            if (k) conv(row(L, s->k, h, t0 + t), k + ((size_t)t * nkv + h) * hd, hd);
            if (v) conv(row(L, s->v, h, t0 + t), v + ((size_t)t * nkv + h) * hd, hd);
        }
}

static void f_truncate(kvq_kv_layer *L, int n) { if (n < L->n) L->n = n; }

static kvq_status f_compact(kvq_kv_layer *L, const int32_t *keep, int n_keep) {
    fstate *s = L->state;
    const size_t rs = (size_t)L->head_dim * (size_t)elem_size(L);
    for (int h = 0; h < L->n_head_kv; h++)
        for (int j = 0; j < n_keep; j++) {
            int32_t src = keep[(size_t)h * n_keep + j];
            if (src < j || src >= L->n) return KVQ_ERR_ARG; /* ascending and in range */
            memmove(row(L, s->k, h, j), row(L, s->k, h, src), rs);
            memmove(row(L, s->v, h, j), row(L, s->v, h, src), rs);
        }
    L->n = n_keep;
    return KVQ_OK;
}

static kvq_status f_save(const kvq_kv_layer *L, FILE *f) {
    fstate *s = L->state;
    const size_t rs = (size_t)L->head_dim * (size_t)elem_size(L) * (size_t)L->n;
    for (int h = 0; h < L->n_head_kv; h++)
        if (fwrite(row(L, s->k, h, 0), 1, rs, f) != rs || fwrite(row(L, s->v, h, 0), 1, rs, f) != rs) return KVQ_ERR_IO;
    return KVQ_OK;
}

static kvq_status f_load(kvq_kv_layer *L, FILE *f) {
    fstate *s = L->state;
    const size_t rs = (size_t)L->head_dim * (size_t)elem_size(L) * (size_t)L->n;
    for (int h = 0; h < L->n_head_kv; h++)
        if (fread(row(L, s->k, h, 0), 1, rs, f) != rs || fread(row(L, s->v, h, 0), 1, rs, f) != rs) return KVQ_ERR_FORMAT;
    return KVQ_OK;
}

#define FLOAT_CODEC(NAME)                                                                                     \
    {.name = NAME, .bytes_for = f_bytes_for, .init = f_init, .destroy = f_destroy, .append = f_append,       \
     .qk = f_qk, .av = f_av, .read = f_read, .truncate = f_truncate, .compact = f_compact, .save = f_save,   \
     .load = f_load}

const kvq_codec kvq_codec_f32 = FLOAT_CODEC("f32");
const kvq_codec kvq_codec_f16 = FLOAT_CODEC("f16");
