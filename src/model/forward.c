/* The Llama-family forward pass (llama, mistral, qwen2): pre-norm blocks of
 * GQA attention with RoPE and a SwiGLU MLP. Attention itself is the KV
 * cache's job: the model only appends K/V and asks for outputs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/cpu.h"
#include "context.h"

static kvq_matw matw(const kvq_tensor *t) { return (kvq_matw){t->type, t->ne[0], t->ne[1], t->data, t->row_bytes}; }

static void add_bias(const kvq_tensor *b, int n, int rows, float *y) {
    if (b && b->data)
        for (int t = 0; t < n; t++) kvq_add(y + (size_t)t * rows, b->data, rows);
}

static void linear(struct kvq_ctx *c, const kvq_tensor *W, const kvq_tensor *b, const float *x, int n, float *y) {
    kvq_matw w = matw(W);
    kvq_matmul(&w, x, n, y, c->qbuf, c->n_threads);
    add_bias(b, n, (int)W->ne[1], y);
}

/* Products that share their input: one pass in decode (kvq_matmul_multi). */
static void linear_multi(struct kvq_ctx *c, const kvq_tensor *const *W, const kvq_tensor *const *b, int nw,
                         const float *x, int n, float *const *y) {
    kvq_matw w[KVQ_MATMUL_MAX];
    for (int i = 0; i < nw; i++) w[i] = matw(W[i]);
    kvq_matmul_multi(w, nw, x, n, y, c->qbuf, c->n_threads);
    for (int i = 0; i < nw; i++) add_bias(b ? b[i] : NULL, n, (int)W[i]->ne[1], y[i]);
}

/* Rotates rows of keys (or queries) at the given positions. */
static void rope_rows(const struct kvq_ctx *c, float *x, int n, const int32_t *pos, int32_t pos0, int n_heads,
                      float *cs) {
    const kvq_hparams *h = &c->m->hp;
    for (int t = 0; t < n; t++) {
        kvq_rope_cache(cs, pos ? pos[t] : pos0 + t, h->n_rot, h->rope_theta, h->rope_freq_scale, h->rope_freq_factors);
        kvq_rope_apply(x + (size_t)t * n_heads * h->head_dim, n_heads, h->head_dim, h->n_rot, h->rope_neox, cs);
    }
}

/* RoPE on the chunk's queries (and keys) at positions n_past.., with the
 * cos/sin tables kvq_forward computed once for all layers. */
static void rope_batch(struct kvq_ctx *c, int n, bool keys) {
    const kvq_hparams *h = &c->m->hp;
    const int nth = c->n_threads;
#pragma omp parallel for schedule(static) num_threads(nth) if (n >= 8)
    for (int t = 0; t < n; t++) {
        const float *cs = c->cs + (size_t)t * h->n_rot;
        kvq_rope_apply(c->q + (size_t)t * h->n_head * h->head_dim, h->n_head, h->head_dim, h->n_rot, h->rope_neox, cs);
        if (keys)
            kvq_rope_apply(c->k + (size_t)t * h->n_head_kv * h->head_dim, h->n_head_kv, h->head_dim, h->n_rot,
                           h->rope_neox, cs);
    }
}

/* For codecs that keep pre-RoPE keys (AQUA-KV) and rotate them on read. */
static void rope_keys_cb(const void *user, float *k, int n, const int32_t *pos, int n_heads) {
    const struct kvq_ctx *c = user;
    float cs[1024];
    rope_rows(c, k, n, pos, 0, n_heads, cs);
}

kvq_ctx_params kvq_ctx_default_params(void) {
    kvq_ctx_params p = {0};
    p.n_batch = 256;
    p.kv_spec = "f16";
    return p;
}

void kvq_ctx_free(kvq_ctx *c) {
    if (!c) return;
    kvq_kv_cache_free(c->kv);
    free(c->x); free(c->xb); free(c->q); free(c->k); free(c->v); free(c->att); free(c->hb); free(c->hb2);
    free(c->cs); free(c->qbuf);
    free(c);
}

kvq_status kvq_ctx_new(const kvq_model *m, const kvq_ctx_params *p, kvq_ctx **out) {
    *out = NULL;
    kvq_logger lg = {p->log, p->log_user};
    if (m->vocab_only || !m->layers) return kvq_err(&lg, KVQ_ERR_ARG, "model was loaded without weights");
    const kvq_hparams *h = &m->hp;
    int n_ctx = p->n_ctx ? p->n_ctx : h->n_ctx_train;
    if (n_ctx < 1 || n_ctx > (1 << 24))
        return kvq_err(&lg, KVQ_ERR_ARG, "context size %d is out of range [1, 16777216]", p->n_ctx);
    if (p->n_batch < 1 || p->n_batch > 65536)
        return kvq_err(&lg, KVQ_ERR_ARG, "batch size %d is out of range [1, 65536]", p->n_batch);
    if (p->n_threads < 0 || p->n_threads > 1024)
        return kvq_err(&lg, KVQ_ERR_ARG, "thread count %d is out of range [0, 1024]", p->n_threads);
    struct kvq_ctx *c = calloc(1, sizeof *c);
    if (!c) return kvq_err(&lg, KVQ_ERR_NOMEM, "out of memory");
    c->m = m;
    c->lg = lg;
    c->n_ctx = n_ctx;
    c->n_batch = p->n_batch < n_ctx ? p->n_batch : n_ctx;
    c->n_threads = p->n_threads ? p->n_threads : kvq_n_cores();
    kvq_kv_geom g = {h->n_layer, h->n_head, h->n_head_kv, h->head_dim, n_ctx, c->n_batch};
    char err[256] = "";
    kvq_status st = kvq_kv_cache_new(&g, p->kv_spec, &c->lg, &c->kv, err, sizeof err);
    if (st) {
        kvq_err(&lg, st, "KV cache '%s': %s", p->kv_spec ? p->kv_spec : "f16", err[0] ? err : kvq_status_str(st));
        kvq_ctx_free(c);
        return st;
    }
    c->kv->rope = rope_keys_cb;
    c->kv->rope_user = c;
    const size_t B = (size_t)c->n_batch, E = (size_t)h->n_embd, Q = (size_t)h->n_head * h->head_dim,
                 KV = (size_t)h->n_head_kv * h->head_dim, F = (size_t)h->n_ff;
    c->x = malloc(B * E * sizeof(float));
    c->xb = malloc(B * (E > Q ? E : Q) * sizeof(float));
    c->q = malloc(B * Q * sizeof(float));
    c->k = malloc(B * KV * sizeof(float));
    c->v = malloc(B * KV * sizeof(float));
    c->att = malloc(B * Q * sizeof(float));
    c->hb = malloc(B * F * sizeof(float));
    c->hb2 = malloc(B * F * sizeof(float));
    c->cs = malloc(B * (size_t)h->n_rot * sizeof(float)); /* cos/sin per token of a batch */
    size_t qb = 0;
    const kvq_tensor *ws[] = {&m->output, &m->layers[0].wq, &m->layers[0].wo, &m->layers[0].w_down};
    for (int l = 0; l < h->n_layer; l++) {
        const kvq_layer_weights *w = &m->layers[l];
        const kvq_tensor *all[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        for (int i = 0; i < 7; i++) {
            size_t s = kvq_matmul_qbuf_size(all[i]->type, all[i]->ne[0], c->n_batch);
            if (s > qb) qb = s;
        }
    }
    for (int i = 0; i < 4; i++) {
        size_t s = kvq_matmul_qbuf_size(ws[i]->type, ws[i]->ne[0], c->n_batch);
        if (s > qb) qb = s;
    }
    c->qbuf = malloc(qb ? qb : 1);
    if (!c->x || !c->xb || !c->q || !c->k || !c->v || !c->att || !c->hb || !c->hb2 || !c->cs || !c->qbuf) {
        kvq_ctx_free(c);
        return kvq_err(&lg, KVQ_ERR_NOMEM, "out of memory for batch buffers (batch %d)", p->n_batch);
    }
    *out = c;
    return KVQ_OK;
}

kvq_status kvq_forward(struct kvq_ctx *c, const kvq_token *tok, int n, bool all_rows, float *logits) {
    const struct kvq_model *m = c->m;
    const kvq_hparams *h = &m->hp;
    const int E = h->n_embd, Q = h->n_head * h->head_dim, KV = h->n_head_kv * h->head_dim, F = h->n_ff;
    const kvq_type_traits *et = kvq_traits(m->tok_embd.type);
    const int nth = c->n_threads;
    /* element-wise work is split over tokens too, so prefill keeps both cores busy */
#define PAR_TOKENS _Pragma("omp parallel for schedule(static) num_threads(nth) if (n >= 8)")
    PAR_TOKENS
    for (int t = 0; t < n; t++)
        et->to_float((const uint8_t *)m->tok_embd.data + (size_t)tok[t] * m->tok_embd.row_bytes, c->x + (size_t)t * E, E);
    PAR_TOKENS
    for (int t = 0; t < n; t++) /* the same for every layer: once per pass */
        kvq_rope_cache(c->cs + (size_t)t * h->n_rot, c->n_past + t, h->n_rot, h->rope_theta, h->rope_freq_scale,
                       h->rope_freq_factors);
    const int slots0 = kvq_kv_n(c->kv);
    const float scale = 1.0f / sqrtf((float)h->head_dim);
    kvq_status st;
    for (int l = 0; l < h->n_layer; l++) {
        const kvq_layer_weights *w = &m->layers[l];
        PAR_TOKENS
        for (int t = 0; t < n; t++)
            kvq_rmsnorm(c->xb + (size_t)t * E, c->x + (size_t)t * E, w->attn_norm.data, E, h->norm_eps);
        {
            const kvq_tensor *W3[] = {&w->wq, &w->wk, &w->wv}, *B3[] = {&w->bq, &w->bk, &w->bv};
            float *Y3[] = {c->q, c->k, c->v};
            linear_multi(c, W3, B3, 3, c->xb, n, Y3);
        }
        rope_batch(c, n, !c->kv->codec->prerope);
        if ((st = kvq_kv_append(c->kv, l, c->k, c->v, n))) return st;
        kvq_kv_observe(c->kv, l, c->q, n);
        if ((st = kvq_kv_attend(c->kv, l, c->q, n, slots0 + 1, scale, KVQ_VIEW_FULL, c->att, c->n_threads))) return st;
        kvq_kv_commit(c->kv, l);
        if (c->tap) c->tap(c->tap_user, l, c->att, n, Q);
        linear(c, &w->wo, NULL, c->att, n, c->xb);
        PAR_TOKENS
        for (int t = 0; t < n; t++) {
            kvq_add(c->x + (size_t)t * E, c->xb + (size_t)t * E, E);
            kvq_rmsnorm(c->xb + (size_t)t * E, c->x + (size_t)t * E, w->ffn_norm.data, E, h->norm_eps);
        }
        {
            const kvq_tensor *W2[] = {&w->w_gate, &w->w_up};
            float *Y2[] = {c->hb, c->hb2};
            linear_multi(c, W2, NULL, 2, c->xb, n, Y2);
        }
        PAR_TOKENS
        for (int t = 0; t < n; t++) kvq_swiglu(c->hb + (size_t)t * F, c->hb2 + (size_t)t * F, F);
        linear(c, &w->w_down, NULL, c->hb, n, c->xb);
        PAR_TOKENS
        for (int t = 0; t < n; t++) kvq_add(c->x + (size_t)t * E, c->xb + (size_t)t * E, E);
    }
    c->n_past += n;
    if (!logits) return KVQ_OK;
    const int r0 = all_rows ? 0 : n - 1, nr = all_rows ? n : 1;
    PAR_TOKENS
    for (int t = r0; t < n; t++)
        kvq_rmsnorm(c->xb + (size_t)(t - r0) * E, c->x + (size_t)t * E, m->out_norm.data, E, h->norm_eps);
    linear(c, &m->output, NULL, c->xb, nr, logits);
    (void)KV;
#undef PAR_TOKENS
    return KVQ_OK;
}

kvq_status kvq_eval(kvq_ctx *c, const kvq_token *tokens, int n, bool all_logits, float *logits) {
    if (n <= 0 || !tokens) return kvq_err(&c->lg, KVQ_ERR_ARG, "nothing to evaluate (empty token list)");
    if (c->n_past + n > c->n_ctx)
        return kvq_err(&c->lg, KVQ_ERR_CONTEXT_FULL, "context overflow: %d cached + %d new tokens > context %d",
                       c->n_past, n, c->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->m->hp.n_vocab)
            return kvq_err(&c->lg, KVQ_ERR_ARG, "token id %d is outside the vocabulary (0..%d)", tokens[i],
                           c->m->hp.n_vocab - 1);
    const size_t V = (size_t)c->m->hp.n_vocab;
    for (int i = 0; i < n; i += c->n_batch) {
        int nb = n - i < c->n_batch ? n - i : c->n_batch;
        float *lg = NULL;
        if (logits && all_logits) lg = logits + (size_t)i * V;
        else if (logits && i + nb == n) lg = logits;
        kvq_status st = kvq_forward(c, tokens + i, nb, all_logits, lg);
        if (st) return st;
    }
    return KVQ_OK;
}

int32_t kvq_ctx_n_past(const kvq_ctx *c) { return c->n_past; }

void kvq_ctx_set_attn_tap(kvq_ctx *c, kvq_attn_tap_fn fn, void *user) {
    c->tap = fn;
    c->tap_user = user;
}
int32_t kvq_ctx_n_ctx(const kvq_ctx *c) { return c->n_ctx; }

kvq_status kvq_ctx_truncate(kvq_ctx *c, int32_t n) {
    if (n < 0 || n > c->n_past) return kvq_err(&c->lg, KVQ_ERR_ARG, "cannot truncate to %d (have %d)", n, c->n_past);
    /* slots can be fewer than positions after eviction: drop the newest ones */
    int32_t drop = c->n_past - n, slots = kvq_kv_n(c->kv);
    kvq_status st = kvq_kv_truncate(c->kv, slots - drop > 0 ? slots - drop : 0);
    if (st == KVQ_OK) c->n_past = n;
    return st;
}

static void fill_report(const kvq_kv_geom *g, const kvq_kv_spec *spec, uint64_t reserved, kvq_kv_report *r) {
    kvq_kv_spec_format(spec, r->spec, sizeof r->spec);
    r->bytes_reserved = reserved;
    r->bytes_per_token = (double)reserved / g->n_ctx;
    r->bits_per_value = r->bytes_per_token * 8.0 / (2.0 * g->n_layer * g->n_head_kv * g->head_dim);
}

kvq_status kvq_ctx_kv_report(const kvq_ctx *c, kvq_kv_report *r) {
    memset(r, 0, sizeof *r);
    uint64_t res = 0;
    for (int il = 0; il < c->kv->g.n_layer; il++) res += c->kv->codec->bytes_for(&c->kv->layers[il], c->n_ctx);
    fill_report(&c->kv->g, &c->kv->spec, res, r);
    r->bytes_used = kvq_kv_bytes_used(c->kv);
    r->n_tokens = kvq_kv_n(c->kv);
    return KVQ_OK;
}

kvq_status kvq_kv_describe(const kvq_model *m, const char *spec, int n_ctx, kvq_kv_report *r, char *err,
                           size_t err_cap) {
    memset(r, 0, sizeof *r);
    const kvq_hparams *h = &m->hp;
    if (n_ctx <= 0) n_ctx = h->n_ctx_train;
    kvq_kv_geom g = {h->n_layer, h->n_head, h->n_head_kv, h->head_dim, n_ctx, 0};
    kvq_kv_spec s;
    uint64_t bytes;
    kvq_status st = kvq_kv_spec_parse(spec, &s, err, err_cap);
    if (!st) st = kvq_kv_bytes_for(&g, spec, n_ctx, &bytes, err, err_cap);
    if (st) return st;
    fill_report(&g, &s, bytes, r);
    return KVQ_OK;
}

kvq_status kvq_ctx_fill_random(kvq_ctx *c, int32_t n, uint64_t seed) {
    if (n < 0 || c->n_past + n > c->n_ctx)
        return kvq_err(&c->lg, KVQ_ERR_CONTEXT_FULL, "cannot fill %d tokens: %d cached of %d", n, c->n_past, c->n_ctx);
    const kvq_hparams *h = &c->m->hp;
    const int KV = h->n_head_kv * h->head_dim, chunk = 256;
    float *k = malloc((size_t)chunk * KV * sizeof(float)), *v = malloc((size_t)chunk * KV * sizeof(float));
    if (!k || !v) { free(k); free(v); return KVQ_ERR_NOMEM; }
    uint64_t s = seed | 1;
    kvq_status st = KVQ_OK;
    for (int32_t done = 0; done < n && !st; done += chunk) {
        int m = n - done < chunk ? n - done : chunk;
        for (int l = 0; l < h->n_layer && !st; l++) {
            for (size_t i = 0; i < (size_t)m * KV; i++) {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                k[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 4.0f;
                v[i] = ((float)((s >> 16) & 0xffffff) / 16777216.0f - 0.5f) * 4.0f;
            }
            st = kvq_kv_append(c->kv, l, k, v, m);
            kvq_kv_commit(c->kv, l);
        }
        if (!st) c->n_past += m;
    }
    free(k);
    free(v);
    return st;
}
