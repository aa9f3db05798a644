/* Context lifecycle: creation with its KV cache and work buffers, the
 * evaluation entry points (chunking, checks, speculative accept), truncation
 * and reports. The forward pass itself is forward.c. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../core/cpu.h"
#include "context.h"

void kvq_ctx_rope_keys(const void *user, float *k, int n, const int32_t *pos, int n_heads);

kvq_ctx_params kvq_ctx_default_params(void) {
    kvq_ctx_params p = {0};
    p.n_batch = 256;
    p.kv_spec = "f16";
    return p;
}

kvq_eval_opts kvq_eval_default_opts(void) {
    kvq_eval_opts o = {0};
    o.view = KVQ_VIEW_FULL;
    return o;
}

void kvq_ctx_free(kvq_ctx *c) {
    if (!c) return;
    kvq_kv_cache_free(c->kv);
    kvq_work_free(&c->w);
    free(c->tokens);
    free(c->logits);
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
    /* OMP_DYNAMIC=false says the user wants the count as given */
    const char *dyn = getenv("OMP_DYNAMIC");
    kvq_thread_gov_init(&c->gov, c->n_threads, !p->fixed_threads && !(dyn && (!strcmp(dyn, "false") || !strcmp(dyn, "FALSE"))));
    c->gov.others = kvq_others_running;
    c->n_sets = kvq_model_n_weight_sets(m);
    kvq_kv_geom g = {h->n_layer, h->n_head, h->n_head_kv, h->head_dim, n_ctx, c->n_batch, kvq_model_fingerprint(m)};
    kvq_kv_mem_opts mo = {p->kv_mem_cap, p->kv_pool};
    char err[256] = "";
    kvq_status st = kvq_kv_cache_new_ex(&g, p->kv_spec, &mo, &c->lg, &c->kv, err, sizeof err);
    if (st) {
        kvq_err(&lg, st, "KV cache '%s': %s", p->kv_spec ? p->kv_spec : "f16", err[0] ? err : kvq_status_str(st));
        kvq_ctx_free(c);
        return st;
    }
    kvq_kv_alloc_bound(&g, p->kv_spec, &c->kv_alloc_max, NULL, 0);
    c->kv->rope = kvq_ctx_rope_keys;
    c->kv->rope_user = c;
    c->tokens = malloc((size_t)n_ctx * sizeof *c->tokens);
    c->logits = malloc((size_t)h->n_vocab * sizeof *c->logits);
    if (!c->tokens || !c->logits) {
        kvq_ctx_free(c);
        return kvq_err(&lg, KVQ_ERR_NOMEM, "out of memory for a context of %d tokens", n_ctx);
    }
    *out = c;
    return KVQ_OK;
}

kvq_status kvq_ctx_check_eval(kvq_ctx *c, const kvq_token *tokens, int n, const kvq_eval_opts *o) {
    if (n <= 0 || !tokens) return kvq_err(&c->lg, KVQ_ERR_ARG, "nothing to evaluate (empty token list)");
    if (c->n_past + n > c->n_ctx)
        return kvq_err(&c->lg, KVQ_ERR_CONTEXT_FULL, "context overflow: %d cached + %d new tokens > context %d",
                       c->n_past, n, c->n_ctx);
    if (o->weight_set < 0 || o->weight_set >= c->n_sets)
        return kvq_err(&c->lg, KVQ_ERR_ARG, "weight set %d does not exist (this context knows %d)", o->weight_set,
                       c->n_sets);
    if (!o->speculative && c->n_past_final < c->n_past)
        return kvq_err(&c->lg, KVQ_ERR_ARG, "%d speculative tokens are pending: kvq_ctx_accept them first",
                       c->n_past - c->n_past_final);
    if (o->speculative && o->prompt_end)
        return kvq_err(&c->lg, KVQ_ERR_ARG, "a speculative pass cannot end a prompt");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->m->hp.n_vocab)
            return kvq_err(&c->lg, KVQ_ERR_ARG, "token id %d is outside the vocabulary (0..%d)", tokens[i],
                           c->m->hp.n_vocab - 1);
    return KVQ_OK;
}

kvq_status kvq_eval_ex(kvq_ctx *c, const kvq_token *tokens, int n, const kvq_eval_opts *opts, float *logits) {
    kvq_eval_opts o = opts ? *opts : kvq_eval_default_opts();
    kvq_status st = kvq_ctx_check_eval(c, tokens, n, &o);
    if (st) return st;
    if (!c->w.cap && kvq_work_init(&c->w, c->m, c->n_batch, 0))
        return kvq_err(&c->lg, KVQ_ERR_NOMEM, "out of memory for batch buffers (batch %d)", c->n_batch);
    const size_t V = (size_t)c->m->hp.n_vocab;
    for (int i = 0; i < n; i += c->n_batch) {
        int nb = n - i < c->n_batch ? n - i : c->n_batch;
        kvq_fwd_item it = {.c = c, .tok = tokens + i, .n = nb, .o = o};
        if (logits && o.all_logits) it.logits = logits + (size_t)i * V;
        else if (logits && i + nb == n) it.logits = logits;
        it.o.prompt_end = o.prompt_end && i + nb == n; /* the prompt ends with its last chunk */
        /* a decode step's thread count is the governor's (threads.h) */
        const bool decode = nb == 1;
        const int nth = decode ? kvq_thread_gov_next(&c->gov) : c->n_threads;
        struct timespec t0, t1;
        if (decode) clock_gettime(CLOCK_MONOTONIC, &t0);
        if ((st = kvq_forward(&c->w, nth, &it, 1))) return st;
        if (decode) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (kvq_thread_gov_done(&c->gov, nth, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)))
                kvq_logf(&c->lg, KVQ_LOG_INFO, "decode now uses %d thread(s) of %d (%s)", c->gov.cur, c->gov.max,
                         c->gov.cur == 1 ? "steps were slower on all: other processes hold the cores"
                                         : "the cores are free again");
        }
    }
    return KVQ_OK;
}

kvq_status kvq_eval(kvq_ctx *c, const kvq_token *tokens, int n, bool all_logits, float *logits) {
    kvq_eval_opts o = kvq_eval_default_opts();
    o.all_logits = all_logits;
    return kvq_eval_ex(c, tokens, n, &o, logits);
}

kvq_status kvq_ctx_accept(kvq_ctx *c, int32_t n) {
    int32_t pending = c->n_past - c->n_past_final;
    if (n < 0 || n > pending)
        return kvq_err(&c->lg, KVQ_ERR_ARG, "cannot accept %d tokens: %d are pending", n, pending);
    kvq_status st = kvq_kv_accept(c->kv, n);
    if (st) return st;
    if (n < pending) c->has_logits = false; /* the row held is a dropped token's */
    c->n_past = c->n_past_final = c->n_past_final + n;
    return KVQ_OK;
}

int32_t kvq_ctx_n_pending(const kvq_ctx *c) { return c->n_past - c->n_past_final; }

int32_t kvq_ctx_n_past(const kvq_ctx *c) { return c->n_past; }

void kvq_ctx_kv_timing(const kvq_ctx *c, kvq_kv_timing *t) {
    t->attn_seconds = (double)c->kv->stats.attn_ns * 1e-9;
    t->select_seconds = (double)c->kv->stats.select_ns * 1e-9;
    t->layer_attentions = c->kv->stats.n_attn;
}

int32_t kvq_ctx_tokens(const kvq_ctx *c, const kvq_token **out) {
    *out = c->tokens;
    return c->n_past;
}

void kvq_ctx_set_attn_tap(kvq_ctx *c, kvq_attn_tap_fn fn, void *user) {
    c->tap = fn;
    c->tap_user = user;
}

void kvq_ctx_set_linear_tap(kvq_ctx *c, kvq_linear_tap_fn fn, void *user) {
    c->lin_tap = fn;
    c->lin_tap_user = user;
}

void kvq_ctx_set_kv_tap(kvq_ctx *c, kvq_kv_tap_fn fn, void *user) {
    c->kv_tap = fn;
    c->kv_tap_user = user;
}

int32_t kvq_ctx_n_ctx(const kvq_ctx *c) { return c->n_ctx; }

kvq_status kvq_ctx_truncate(kvq_ctx *c, int32_t n) {
    if (n < 0 || n > c->n_past) return kvq_err(&c->lg, KVQ_ERR_ARG, "cannot truncate to %d (have %d)", n, c->n_past);
    /* slots can be fewer than positions after eviction: drop the newest ones */
    int32_t drop = c->n_past - n, slots = kvq_kv_n(c->kv);
    kvq_status st = kvq_kv_truncate(c->kv, slots - drop > 0 ? slots - drop : 0);
    if (st == KVQ_OK) {
        if (n < c->n_past) c->has_logits = false;
        c->n_past = n;
        if (c->n_past_final > n) c->n_past_final = n;
    }
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
    uint64_t res = 0, held_res = 0;
    int32_t most = 0;
    for (int il = 0; il < c->kv->g.n_layer; il++) {
        const kvq_kv_layer *L = &c->kv->layers[il];
        const int32_t b = c->kv->policy->held_bound ? c->kv->policy->held_bound(c->kv, il) : 0;
        const int32_t n = b > 0 && b < c->n_ctx ? b : c->n_ctx;
        if (n > most) most = n;
        res += c->kv->codec->bytes_for(L, c->n_ctx);
        held_res += c->kv->codec->bytes_for(L, n);
    }
    fill_report(&c->kv->g, &c->kv->spec, res, r);
    if (most < c->n_ctx) {
        r->held_max = most;
        r->bytes_reserved = held_res;
    }
    r->bytes_used = kvq_kv_bytes_used(c->kv);
    r->bytes_allocated = kvq_kv_bytes_allocated(c->kv);
    r->bytes_alloc_max = c->kv_alloc_max;
    r->n_tokens = kvq_kv_n(c->kv);
    return KVQ_OK;
}

kvq_status kvq_kv_describe(const kvq_model *m, const char *spec, int n_ctx, kvq_kv_report *r, char *err,
                           size_t err_cap) {
    memset(r, 0, sizeof *r);
    const kvq_hparams *h = &m->hp;
    if (n_ctx <= 0) n_ctx = h->n_ctx_train;
    kvq_kv_geom g = {h->n_layer, h->n_head, h->n_head_kv, h->head_dim, n_ctx, 0, kvq_model_fingerprint(m)};
    kvq_kv_spec s;
    uint64_t bytes;
    kvq_status st = kvq_kv_spec_parse(spec, &s, err, err_cap);
    uint64_t aux = 0;
    if (!st) st = kvq_kv_bytes_for_ex(&g, spec, n_ctx, &bytes, &aux, err, err_cap);
    if (st) return st;
    int32_t held;
    uint64_t held_bytes;
    /* building the cache checks what parsing cannot: policy options, and a
     * policy that evicts on a codec that cannot compact */
    if ((st = kvq_kv_held_bound(&g, spec, &r->bytes_alloc_max, &held, &held_bytes, err, err_cap))) return st;
    fill_report(&g, &s, bytes, r); /* the rate per cached token */
    r->aux_bytes = aux;
    if (held < n_ctx) { /* what is reserved is what the policy keeps */
        r->held_max = held;
        r->bytes_reserved = held_bytes;
    }
    return KVQ_OK;
}

kvq_status kvq_ctx_fill_random(kvq_ctx *c, int32_t n, uint64_t seed) {
    if (n < 0 || c->n_past + n > c->n_ctx)
        return kvq_err(&c->lg, KVQ_ERR_CONTEXT_FULL, "cannot fill %d tokens: %d cached of %d", n, c->n_past, c->n_ctx);
    if (kvq_ctx_n_pending(c)) return kvq_err(&c->lg, KVQ_ERR_ARG, "speculative tokens are pending");
    const kvq_hparams *h = &c->m->hp;
    const int KV = h->n_head_kv * h->head_dim, chunk = 256;
    float *k = malloc((size_t)chunk * KV * sizeof(float)), *v = malloc((size_t)chunk * KV * sizeof(float));
    if (!k || !v) { free(k); free(v); return KVQ_ERR_NOMEM; }
    uint64_t s = seed | 1;
    kvq_status st = KVQ_OK;
    for (int32_t done = 0; done < n && !st; done += chunk) {
        int m = n - done < chunk ? n - done : chunk;
        if ((st = kvq_kv_reserve(c->kv, m))) break;
        for (int l = 0; l < h->n_layer && !st; l++) {
            for (size_t i = 0; i < (size_t)m * KV; i++) {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                k[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 4.0f;
                v[i] = ((float)((s >> 16) & 0xffffff) / 16777216.0f - 0.5f) * 4.0f;
            }
            const int slot0 = c->kv->layers[l].n;
            st = kvq_kv_append(c->kv, l, k, v, m);
            if (!st && c->kv->policy->on_append) c->kv->policy->on_append(c->kv, l, k, m, slot0);
            kvq_kv_commit(c->kv, l);
        }
        if (!st) {
            /* random K/V stand for tokens no one will read back: BOS fills the history */
            for (int i = 0; i < m; i++) c->tokens[c->n_past + i] = 0;
            c->n_past += m;
            c->n_past_final = c->n_past;
            c->has_logits = false;
        }
    }
    free(k);
    free(v);
    return st;
}
