/* The Llama-family forward pass (llama, mistral, qwen2): pre-norm blocks of
 * GQA attention with RoPE and a SwiGLU MLP, on the weight set the pass asks
 * for. Attention is the KV cache's job: each layer hands its Q/K/V to the
 * step protocol (kv.h) and gets the attention output back; this file knows
 * no KV method. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/cpu.h"
#include "context.h"

static kvq_matw matw(const kvq_tensor *t) {
    return (kvq_matw){t->type, t->ne[0], t->ne[1], t->data, t->row_bytes, t->aux, t->aux_bytes};
}

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
void kvq_ctx_rope_keys(const void *user, float *k, int n, const int32_t *pos, int n_heads) {
    const struct kvq_ctx *c = user;
    float cs[1024];
    rope_rows(c, k, n, pos, 0, n_heads, cs);
}

static kvq_step_mode step_mode(const kvq_eval_opts *o, int n) {
    if (o->speculative) return o->view == KVQ_VIEW_DRAFT ? KVQ_STEP_DRAFT : KVQ_STEP_VERIFY;
    return n > 1 || o->prompt_end ? KVQ_STEP_PROMPT : KVQ_STEP_DECODE;
}

kvq_status kvq_forward(struct kvq_ctx *c, const kvq_token *tok, int n, const kvq_eval_opts *o, float *logits) {
    const struct kvq_model *m = c->m;
    const kvq_hparams *h = &m->hp;
    const int E = h->n_embd, F = h->n_ff, Q = h->n_head * h->head_dim;
    const kvq_tensor *embd = kvq_model_set_tok_embd(m, o->weight_set);
    const kvq_type_traits *et = kvq_traits(embd->type);
    const kvq_layer_weights *layers = kvq_model_set_layers(m, o->weight_set);
    const kvq_tensor *output = kvq_model_set_output(m, o->weight_set);
    const int nth = c->n_threads;
    for (int t = 0; t < n; t++) c->pos[t] = c->n_past + t;
    kvq_kv_step step = {.n = n, .pos = c->pos, .mode = step_mode(o, n), .view = o->view};
    kvq_status st = kvq_kv_step_begin(c->kv, &step);
    if (st) return st;
    /* element-wise work is split over tokens too, so prefill keeps both cores busy */
#define PAR_TOKENS _Pragma("omp parallel for schedule(static) num_threads(nth) if (n >= 8)")
    PAR_TOKENS
    for (int t = 0; t < n; t++)
        et->to_float((const uint8_t *)embd->data + (size_t)tok[t] * embd->row_bytes, c->x + (size_t)t * E, E);
    PAR_TOKENS
    for (int t = 0; t < n; t++) /* the same for every layer: once per pass */
        kvq_rope_cache(c->cs + (size_t)t * h->n_rot, c->pos[t], h->n_rot, h->rope_theta, h->rope_freq_scale,
                       h->rope_freq_factors);
    const float scale = 1.0f / sqrtf((float)h->head_dim);
    for (int l = 0; l < h->n_layer; l++) {
        const kvq_layer_weights *w = &layers[l];
        PAR_TOKENS
        for (int t = 0; t < n; t++)
            kvq_rmsnorm(c->xb + (size_t)t * E, c->x + (size_t)t * E, w->attn_norm.data, E, h->norm_eps);
        {
            const kvq_tensor *W3[] = {&w->wq, &w->wk, &w->wv}, *B3[] = {&w->bq, &w->bk, &w->bv};
            float *Y3[] = {c->q, c->k, c->v};
            if (c->lin_tap) c->lin_tap(c->lin_tap_user, l, KVQ_LIN_QKV, c->xb, n, E);
            linear_multi(c, W3, B3, 3, c->xb, n, Y3);
        }
        if (c->kv_tap) c->kv_tap(c->kv_tap_user, l, c->k, c->v, n, h->n_head_kv * h->head_dim);
        rope_batch(c, n, !c->kv->codec->prerope);
        if ((st = kvq_kv_step_layer(c->kv, l, c->q, c->k, c->v, scale, c->att, c->n_threads))) {
            kvq_kv_step_abort(c->kv);
            return st;
        }
        if (c->tap) c->tap(c->tap_user, l, c->att, n, Q);
        if (c->lin_tap) c->lin_tap(c->lin_tap_user, l, KVQ_LIN_O, c->att, n, Q);
        linear(c, &w->wo, NULL, c->att, n, c->xb);
        PAR_TOKENS
        for (int t = 0; t < n; t++) {
            kvq_add(c->x + (size_t)t * E, c->xb + (size_t)t * E, E);
            kvq_rmsnorm(c->xb + (size_t)t * E, c->x + (size_t)t * E, w->ffn_norm.data, E, h->norm_eps);
        }
        {
            const kvq_tensor *W2[] = {&w->w_gate, &w->w_up};
            float *Y2[] = {c->hb, c->hb2};
            if (c->lin_tap) c->lin_tap(c->lin_tap_user, l, KVQ_LIN_GATE_UP, c->xb, n, E);
            linear_multi(c, W2, NULL, 2, c->xb, n, Y2);
        }
        PAR_TOKENS
        for (int t = 0; t < n; t++) kvq_swiglu(c->hb + (size_t)t * F, c->hb2 + (size_t)t * F, F);
        if (c->lin_tap) c->lin_tap(c->lin_tap_user, l, KVQ_LIN_DOWN, c->hb, n, F);
        linear(c, &w->w_down, NULL, c->hb, n, c->xb);
        PAR_TOKENS
        for (int t = 0; t < n; t++) kvq_add(c->x + (size_t)t * E, c->xb + (size_t)t * E, E);
    }
    memcpy(c->tokens + c->n_past, tok, (size_t)n * sizeof *tok);
    c->n_past += n;
    if (!o->speculative) c->n_past_final = c->n_past;
    /* eviction runs here, before the logits: it changes only what later tokens read */
    if ((st = kvq_kv_step_end(c->kv, o->prompt_end))) return st;
    c->has_logits = false;
    if (!logits) return KVQ_OK;
    const int r0 = o->all_logits ? 0 : n - 1, nr = o->all_logits ? n : 1;
    PAR_TOKENS
    for (int t = r0; t < n; t++)
        kvq_rmsnorm(c->xb + (size_t)(t - r0) * E, c->x + (size_t)t * E, m->out_norm.data, E, h->norm_eps);
    linear(c, output, NULL, c->xb, nr, logits);
    /* kept for sessions: a restored context continues from this row */
    memcpy(c->logits, logits + (size_t)(nr - 1) * h->n_vocab, (size_t)h->n_vocab * sizeof(float));
    c->has_logits = true;
#undef PAR_TOKENS
    return KVQ_OK;
}
