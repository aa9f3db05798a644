/* Reference codecs: f32 and f16. Keys are stored in transposed tiles of
 * KVQ_KT slots ([tile][dim][slot]) and values row-major ([slot][dim]); a
 * page of PAGE slots holds, per head, its key tiles then its value rows, so
 * attention streams each head contiguously within a page and the query is
 * broadcast against whole tiles (kv_simd.h). */
#include <stdlib.h>
#include <string.h>
#include "../core/fp16.h"
#include "../kernels/types.h"
#include "kv.h"
#include "kv_simd.h"

typedef struct fstate {
    kvq_pages pages;
    int es;        /* bytes per element */
    size_t kbytes; /* bytes of one head's keys in a page (values follow) */
    const kvq_attn_kernels *kern;
} fstate;

/* Slots per page: a multiple of the key tile. */
#define PAGE 256

static int elem_size(const kvq_kv_layer *L) { return L->codec->name[1] == '3' ? 4 : 2; }

static uint64_t f_bytes_for(const kvq_kv_layer *L, int64_t n) {
    return 2ull * (uint64_t)n * (uint64_t)L->n_head_kv * (uint64_t)L->head_dim * (uint64_t)elem_size(L);
}

static kvq_status f_init(kvq_kv_layer *L) {
    fstate *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    L->state = s;
    s->es = elem_size(L);
    s->kern = kvq_attn_kernels_active();
    s->kbytes = (size_t)PAGE * (size_t)L->head_dim * (size_t)s->es;
    L->page = PAGE;
    L->page_bytes = 2 * s->kbytes * (size_t)L->n_head_kv;
    L->n = 0;
    return kvq_pages_init(&s->pages, PAGE, L->page_bytes, L->cap, &L->cache->mem);
}

static void f_destroy(kvq_kv_layer *L) {
    fstate *s = L->state;
    if (s) kvq_pages_free(&s->pages);
    free(s);
    L->state = NULL;
}

static kvq_status f_reserve(kvq_kv_layer *L, int n) { return kvq_pages_reserve(&((fstate *)L->state)->pages, n); }

/* Head h's keys in the page of slot t: transposed tiles [tile][dim][KVQ_KT]. */
static inline uint8_t *khead(const kvq_kv_layer *L, const fstate *s, int h, int t) {
    return kvq_page(&s->pages, t) + (size_t)h * 2 * s->kbytes;
}
/* element offset of key (slot t, dim d) within its head's page region */
static inline size_t koff(const kvq_kv_layer *L, int t, int d) {
    const int tl = t % PAGE;
    return ((size_t)(tl / KVQ_KT) * L->head_dim + d) * KVQ_KT + tl % KVQ_KT;
}
static inline uint8_t *vrow(const kvq_kv_layer *L, const fstate *s, int h, int t) {
    return khead(L, s, h, t) + s->kbytes + (size_t)(t % PAGE) * L->head_dim * s->es;
}

static inline float get(const fstate *s, const uint8_t *p) {
    if (s->es == 4) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    return kvq_f16_to_f32(h);
}

static void put_key(const kvq_kv_layer *L, fstate *s, int h, int t, const uint8_t *row) {
    uint8_t *kh = khead(L, s, h, t);
    for (int d = 0; d < L->head_dim; d++)
        memcpy(kh + koff(L, t, d) * s->es, row + (size_t)d * s->es, (size_t)s->es);
}

static kvq_status f_append(kvq_kv_layer *L, const float *k, const float *v, int n, const int32_t *pos) {
    (void)pos;
    fstate *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    const kvq_type_traits *tr = kvq_traits(s->es == 4 ? KVQ_TYPE_F32 : KVQ_TYPE_F16);
    uint8_t row[1024 * 4];
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++) {
            /* convert the key row once (SIMD), then scatter it down its tile column */
            tr->from_float(k + ((size_t)t * nkv + h) * hd, row, hd);
            put_key(L, s, h, L->n + t, row);
            tr->from_float(v + ((size_t)t * nkv + h) * hd, vrow(L, s, h, L->n + t), hd);
        }
    L->n += n;
    return KVQ_OK;
}

static void f_qk(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *q, int n_q, float *scores) {
    (void)view;
    (void)vis;
    const fstate *s = L->state;
    const int hd = L->head_dim;
    const uint8_t *kh = khead(L, s, h, t0);
    float tmp[KVQ_KT * 64];
    for (int tb = t0 / KVQ_KT * KVQ_KT; tb < t0 + n; tb += KVQ_KT) {
        const uint8_t *kt = kh + koff(L, tb, 0) * s->es;
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

static void f_av(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *w, int n_q, float *out) {
    (void)view;
    (void)vis;
    const fstate *s = L->state;
    const uint8_t *v = vrow(L, s, h, t0);
    if (s->es == 4) s->kern->av_f32((const float *)v, n, L->head_dim, w, n, n_q, out);
    else s->kern->av_f16((const uint16_t *)v, n, L->head_dim, w, n, n_q, out);
}

static void f_read(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v) {
    (void)view;
    const fstate *s = L->state;
    const int hd = L->head_dim, nkv = L->n_head_kv;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nkv; h++) {
            const uint8_t *kh = khead(L, s, h, t0 + t), *vr = vrow(L, s, h, t0 + t);
            for (int d = 0; d < hd; d++) {
                if (k) k[((size_t)t * nkv + h) * hd + d] = get(s, kh + koff(L, t0 + t, d) * s->es);
                if (v) v[((size_t)t * nkv + h) * hd + d] = get(s, vr + (size_t)d * s->es);
            }
        }
}

static void f_truncate(kvq_kv_layer *L, int n) {
    fstate *s = L->state;
    if (n < L->n) L->n = n;
    kvq_pages_release(&s->pages, L->n);
}

/* Exact: kept slots move down in place (dst <= src), then the emptied pages go. */
static kvq_status f_compact(kvq_kv_layer *L, const int32_t *keep, int n_keep) {
    fstate *s = L->state;
    const int hd = L->head_dim;
    uint8_t row[1024 * 4];
    for (int h = 0; h < L->n_head_kv; h++)
        for (int j = 0; j < n_keep; j++) {
            int32_t src = keep[(size_t)h * n_keep + j];
            if (src == j) continue;
            const uint8_t *kh = khead(L, s, h, src);
            for (int d = 0; d < hd; d++) memcpy(row + (size_t)d * s->es, kh + koff(L, src, d) * s->es, (size_t)s->es);
            put_key(L, s, h, j, row);
            memcpy(vrow(L, s, h, j), vrow(L, s, h, src), (size_t)hd * s->es);
        }
    L->n = n_keep;
    kvq_pages_release(&s->pages, n_keep);
    return KVQ_OK;
}

/* Per head and page: the key tiles that hold slots (the last one whole) and the value rows. */
static kvq_status f_io(const kvq_kv_layer *L, FILE *f, bool wr) {
    const fstate *s = L->state;
    for (int p0 = 0; p0 < L->n; p0 += PAGE) {
        const int m = L->n - p0 < PAGE ? L->n - p0 : PAGE;
        const size_t kb = (size_t)(m + KVQ_KT - 1) / KVQ_KT * KVQ_KT * L->head_dim * s->es,
                     vb = (size_t)m * L->head_dim * s->es;
        for (int h = 0; h < L->n_head_kv; h++) {
            uint8_t *kh = khead(L, s, h, p0), *vr = vrow(L, s, h, p0);
            if (wr ? fwrite(kh, 1, kb, f) != kb || fwrite(vr, 1, vb, f) != vb
                   : fread(kh, 1, kb, f) != kb || fread(vr, 1, vb, f) != vb)
                return wr ? KVQ_ERR_IO : KVQ_ERR_FORMAT;
        }
    }
    return KVQ_OK;
}

static int f_grain(const kvq_kv_layer *L) { return KVQ_KT; }

static kvq_status f_save(const kvq_kv_layer *L, FILE *f) { return f_io(L, f, true); }
static kvq_status f_load(kvq_kv_layer *L, FILE *f) { return f_io(L, f, false); }

#define FLOAT_CODEC(NAME)                                                                                     \
    {.name = NAME, .bytes_for = f_bytes_for, .init = f_init, .destroy = f_destroy, .reserve = f_reserve,     \
     .append = f_append, .qk = f_qk, .av = f_av, .read = f_read, .truncate = f_truncate, .compact = f_compact, .grain = f_grain, .save = f_save,   \
     .load = f_load}

const kvq_codec kvq_codec_f32 = FLOAT_CODEC("f32");
const kvq_codec kvq_codec_f16 = FLOAT_CODEC("f16");
