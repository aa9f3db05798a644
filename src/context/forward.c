/* The Llama-family forward pass (llama, mistral, qwen2): pre-norm blocks of
 * GQA attention with RoPE and a SwiGLU MLP, on the weight set the pass asks
 * for. Attention is the KV cache's job: each layer hands its Q/K/V to the
 * step protocol (kv.h) and gets the attention output back; this file knows
 * no KV method.
 *
 * A pass runs the rows of one or more contexts at once (continuous
 * batching): the linear products see all rows, so the weights are read once
 * per step however many sequences decode; RoPE and attention run per
 * context, each on its own cache. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/cpu.h"
#include "context.h"

static void add_bias(const kvq_tensor *b, int n, int rows, float *y) {
    if (b && b->data)
        for (int t = 0; t < n; t++) kvq_add(y + (size_t)t * rows, b->data, rows);
}

static void linear(kvq_work *wk, int nth, const kvq_tensor *W, const kvq_tensor *b, const float *x, int n, float *y) {
    kvq_matw w = kvq_tensor_matw(W);
    kvq_matmul(&w, x, n, y, wk->qbuf, nth);
    add_bias(b, n, (int)W->ne[1], y);
}

/* Products that share their input: one pass in decode (kvq_matmul_multi). */
static void linear_multi(kvq_work *wk, int nth, const kvq_tensor *const *W, const kvq_tensor *const *b, int nw,
                         const float *x, int n, float *const *y) {
    kvq_matw w[KVQ_MATMUL_MAX];
    for (int i = 0; i < nw; i++) w[i] = kvq_tensor_matw(W[i]);
    kvq_matmul_multi(w, nw, x, n, y, wk->qbuf, nth);
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

/* For codecs that keep pre-RoPE keys (AQUA-KV) and rotate them on read. */
void kvq_ctx_rope_keys(const void *user, float *k, int n, const int32_t *pos, int n_heads) {
    const struct kvq_ctx *c = user;
    float cs[1024];
    rope_rows(c, k, n, pos, 0, n_heads, cs);
}

static kvq_step_mode step_mode(const kvq_eval_opts *o, int n) {
    if (o->speculative) return o->view == KVQ_VIEW_DRAFT ? KVQ_STEP_DRAFT : KVQ_STEP_VERIFY;
    return n > 1 || o->prompt_end ? KVQ_STEP_PROMPT : KVQ_STEP_DECODE;
}

/* An item's rows in the pass: [r0, r0 + n). */
typedef struct rows { int32_t r0, n; } rows;

kvq_status kvq_forward(kvq_work *wk, int nth, kvq_fwd_item *it, int n_items) {
    const struct kvq_model *m = it[0].c->m;
    const kvq_hparams *h = &m->hp;
    const int E = h->n_embd, F = h->n_ff, Q = h->n_head * h->head_dim, KV = h->n_head_kv * h->head_dim;
    const int set = it[0].o.weight_set;
    const kvq_tensor *embd = kvq_model_set_tok_embd(m, set);
    const kvq_type_traits *et = kvq_traits(embd->type);
    const kvq_layer_weights *layers = kvq_model_set_layers(m, set);
    const kvq_tensor *output = kvq_model_set_output(m, set);
    kvq_status first = KVQ_OK;
    int R = 0;
    rows rw[n_items];
    for (int i = 0; i < n_items; i++) {
        struct kvq_ctx *c = it[i].c;
        rw[i] = (rows){R, it[i].n};
        for (int t = 0; t < it[i].n; t++) wk->pos[R + t] = c->n_past + t;
        kvq_kv_step step = {.n = it[i].n, .pos = wk->pos + R, .mode = step_mode(&it[i].o, it[i].n), .view = it[i].o.view};
        it[i].st = kvq_kv_step_begin(c->kv, &step);
        if (it[i].st && !first) first = it[i].st;
        R += it[i].n;
    }
    /* element-wise work is split over rows too, so prefill keeps both cores busy */
#define PAR_ROWS _Pragma("omp parallel for schedule(static) num_threads(nth) if (R >= 8)")
    {
        int r = 0;
        for (int i = 0; i < n_items; i++)
            for (int t = 0; t < it[i].n; t++, r++) {
                const uint8_t *row = (const uint8_t *)embd->data + (size_t)it[i].tok[t] * embd->row_bytes;
                et->to_float(row, wk->x + (size_t)r * E, E);
            }
    }
    PAR_ROWS
    for (int r = 0; r < R; r++) /* the same for every layer: once per pass */
        kvq_rope_cache(wk->cs + (size_t)r * h->n_rot, wk->pos[r], h->n_rot, h->rope_theta, h->rope_freq_scale,
                       h->rope_freq_factors);
    const float scale = 1.0f / sqrtf((float)h->head_dim);
    for (int l = 0; l < h->n_layer; l++) {
        const kvq_layer_weights *w = &layers[l];
        PAR_ROWS
        for (int r = 0; r < R; r++)
            kvq_rmsnorm(wk->xb + (size_t)r * E, wk->x + (size_t)r * E, w->attn_norm.data, E, h->norm_eps);
        for (int i = 0; i < n_items; i++)
            if (it[i].c->lin_tap)
                it[i].c->lin_tap(it[i].c->lin_tap_user, l, KVQ_LIN_QKV, wk->xb + (size_t)rw[i].r0 * E, rw[i].n, E);
        {
            const kvq_tensor *W3[] = {&w->wq, &w->wk, &w->wv}, *B3[] = {&w->bq, &w->bk, &w->bv};
            float *Y3[] = {wk->q, wk->k, wk->v};
            linear_multi(wk, nth, W3, B3, 3, wk->xb, R, Y3);
        }
        for (int i = 0; i < n_items; i++) {
            struct kvq_ctx *c = it[i].c;
            float *q = wk->q + (size_t)rw[i].r0 * Q, *k = wk->k + (size_t)rw[i].r0 * KV, *v = wk->v + (size_t)rw[i].r0 * KV;
            float *att = wk->att + (size_t)rw[i].r0 * Q;
            const int n = rw[i].n;
            if (it[i].st) { /* rows of a failed item still pass through the products: keep them finite */
                memset(att, 0, (size_t)n * Q * sizeof(float));
                continue;
            }
            if (c->kv_tap) c->kv_tap(c->kv_tap_user, l, k, v, n, KV);
            const bool keys = !c->kv->codec->prerope;
#pragma omp parallel for schedule(static) num_threads(nth) if (n >= 8)
            for (int t = 0; t < n; t++) {
                const float *cs = wk->cs + (size_t)(rw[i].r0 + t) * h->n_rot;
                kvq_rope_apply(q + (size_t)t * Q, h->n_head, h->head_dim, h->n_rot, h->rope_neox, cs);
                if (keys) kvq_rope_apply(k + (size_t)t * KV, h->n_head_kv, h->head_dim, h->n_rot, h->rope_neox, cs);
            }
            if ((it[i].st = kvq_kv_step_layer(c->kv, l, q, k, v, scale, att, nth))) {
                kvq_kv_step_abort(c->kv);
                if (!first) first = it[i].st;
                memset(att, 0, (size_t)n * Q * sizeof(float));
                continue;
            }
            if (c->tap) c->tap(c->tap_user, l, att, n, Q);
            if (c->lin_tap) c->lin_tap(c->lin_tap_user, l, KVQ_LIN_O, att, n, Q);
        }
        linear(wk, nth, &w->wo, NULL, wk->att, R, wk->xb);
        PAR_ROWS
        for (int r = 0; r < R; r++) {
            kvq_add(wk->x + (size_t)r * E, wk->xb + (size_t)r * E, E);
            kvq_rmsnorm(wk->xb + (size_t)r * E, wk->x + (size_t)r * E, w->ffn_norm.data, E, h->norm_eps);
        }
        for (int i = 0; i < n_items; i++)
            if (it[i].c->lin_tap && !it[i].st)
                it[i].c->lin_tap(it[i].c->lin_tap_user, l, KVQ_LIN_GATE_UP, wk->xb + (size_t)rw[i].r0 * E, rw[i].n, E);
        {
            const kvq_tensor *W2[] = {&w->w_gate, &w->w_up};
            float *Y2[] = {wk->hb, wk->hb2};
            linear_multi(wk, nth, W2, NULL, 2, wk->xb, R, Y2);
        }
        PAR_ROWS
        for (int r = 0; r < R; r++) kvq_swiglu(wk->hb + (size_t)r * F, wk->hb2 + (size_t)r * F, F);
        for (int i = 0; i < n_items; i++)
            if (it[i].c->lin_tap && !it[i].st)
                it[i].c->lin_tap(it[i].c->lin_tap_user, l, KVQ_LIN_DOWN, wk->hb + (size_t)rw[i].r0 * F, rw[i].n, F);
        linear(wk, nth, &w->w_down, NULL, wk->hb, R, wk->xb);
        PAR_ROWS
        for (int r = 0; r < R; r++) kvq_add(wk->x + (size_t)r * E, wk->xb + (size_t)r * E, E);
    }
    /* the rows whose logits are wanted, gathered: one pass over the output matrix */
    int nl = 0;
    for (int i = 0; i < n_items; i++) {
        struct kvq_ctx *c = it[i].c;
        if (it[i].st) continue;
        memcpy(c->tokens + c->n_past, it[i].tok, (size_t)it[i].n * sizeof *it[i].tok);
        c->n_past += it[i].n;
        if (!it[i].o.speculative) c->n_past_final = c->n_past;
        /* eviction runs here, before the logits: it changes only what later tokens read */
        if ((it[i].st = kvq_kv_step_end(c->kv, it[i].o.prompt_end))) {
            if (!first) first = it[i].st;
            continue;
        }
        c->has_logits = false;
        if (!it[i].logits) continue;
        const int r0 = it[i].o.all_logits ? 0 : it[i].n - 1;
        for (int t = r0; t < it[i].n; t++, nl++)
            kvq_rmsnorm(wk->xb + (size_t)nl * E, wk->x + (size_t)(rw[i].r0 + t) * E, m->out_norm.data, E, h->norm_eps);
    }
    if (!nl) return first;
    const size_t V = (size_t)h->n_vocab;
    /* one item writes straight into its caller's rows; several go through the work buffer */
    const bool direct = n_items == 1;
    float *out = direct ? it[0].logits : wk->logits;
    linear(wk, nth, output, NULL, wk->xb, nl, out);
    int row = 0;
    for (int i = 0; i < n_items; i++) {
        if (it[i].st || !it[i].logits) continue;
        const int nr = it[i].o.all_logits ? it[i].n : 1;
        if (!direct) memcpy(it[i].logits, out + (size_t)row * V, (size_t)nr * V * sizeof(float));
        /* kept for sessions: a restored context continues from this row */
        memcpy(it[i].c->logits, out + (size_t)(row + nr - 1) * V, V * sizeof(float));
        it[i].c->has_logits = true;
        row += nr;
    }
#undef PAR_ROWS
    return first;
}
