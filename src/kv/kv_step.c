/* The step protocol: the one sequence by which the forward pass hands a
 * chunk of tokens to the cache. The forward pass knows no method; every
 * method plugs into one of these hooks (docs/ARCHITECTURE.md). */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

static bool step_final(kvq_step_mode m) { return m == KVQ_STEP_PROMPT || m == KVQ_STEP_DECODE; }

kvq_status kvq_kv_step_begin(kvq_kv_cache *c, const kvq_kv_step *s) {
    if (c->in_step) return kvq_err(c->lg, KVQ_ERR_INTERNAL, "a KV step is already in progress");
    if (s->n <= 0 || !s->pos) return kvq_err(c->lg, KVQ_ERR_ARG, "a KV step needs tokens and their positions");
    if ((unsigned)s->mode > KVQ_STEP_VERIFY) return kvq_err(c->lg, KVQ_ERR_ARG, "unknown step mode %d", (int)s->mode);
    if (s->view != KVQ_VIEW_FULL && s->view != KVQ_VIEW_DRAFT)
        return kvq_err(c->lg, KVQ_ERR_ARG, "unknown KV read view %d", s->view);
    if (s->view == KVQ_VIEW_DRAFT && !c->codec->has_draft_view)
        return kvq_err(c->lg, KVQ_ERR_UNSUPPORTED, "KV codec '%s' has no draft view (QuantSpec needs 'hier')",
                       c->codec->name);
    if (step_final(s->mode) && kvq_kv_n_pending(c))
        return kvq_err(c->lg, KVQ_ERR_ARG, "%d speculative tokens are pending: accept them first",
                       kvq_kv_n_pending(c));
    kvq_status st = kvq_kv_reserve(c, s->n);
    if (st) return st;
    c->step = *s;
    c->step.slots0 = kvq_kv_n(c);
    c->in_step = true;
    return KVQ_OK;
}

/* Keys as the policy must see them: rotated. Prerope codecs are handed
 * pre-RoPE keys, so the policy gets a rotated copy. */
static const float *rotated_keys(kvq_kv_cache *c, const float *k, int n) {
    if (!c->codec->prerope) return k;
    size_t need = (size_t)n * c->g.n_head_kv * c->g.head_dim;
    if (need > c->kscratch_cap) {
        float *p = realloc(c->kscratch, need * sizeof(float));
        if (!p) return NULL;
        c->kscratch = p;
        c->kscratch_cap = need;
    }
    memcpy(c->kscratch, k, need * sizeof(float));
    c->rope(c->rope_user, c->kscratch, n, c->step.pos, c->g.n_head_kv);
    return c->kscratch;
}

kvq_status kvq_kv_step_layer(kvq_kv_cache *c, int il, const float *q, const float *k, const float *v, float scale,
                             float *out, int n_threads) {
    if (!c->in_step) return kvq_err(c->lg, KVQ_ERR_INTERNAL, "KV layer step outside a step");
    kvq_kv_layer *L = &c->layers[il];
    const kvq_kv_step *s = &c->step;
    if (L->n != s->slots0) return kvq_err(c->lg, KVQ_ERR_INTERNAL, "layer %d stepped twice", il);
    kvq_status st = c->codec->append(L, k, v, s->n, s->pos);
    if (st) return kvq_err(c->lg, st, "KV append failed in layer %d", il);
    if (c->policy->on_append) {
        const float *kr = rotated_keys(c, k, s->n);
        if (!kr) return KVQ_ERR_NOMEM;
        c->policy->on_append(c, il, kr, s->n, s->slots0);
    }
    kvq_kv_observe(c, il, q, s->n);
    if (c->codec->prepare && (st = c->codec->prepare(L, s))) return st;
    c->n_threads = n_threads;
    if ((st = kvq_kv_attend(c, il, q, s->n, s->slots0 + 1, scale, s->view, out, n_threads))) return st;
    /* a speculative step's tokens, and those pending before it, stay unverified */
    if (c->codec->commit) c->codec->commit(L, step_final(s->mode) ? L->n : s->slots0 - c->n_pending);
    return KVQ_OK;
}

static kvq_status after_step(kvq_kv_cache *c) {
    if (!c->policy->after_step) return KVQ_OK;
    for (int il = 0; il < c->g.n_layer; il++) {
        kvq_status st = c->policy->after_step(c, il);
        if (st) return st;
    }
    return KVQ_OK;
}

kvq_status kvq_kv_step_end(kvq_kv_cache *c, bool prompt_end) {
    if (!c->in_step) return kvq_err(c->lg, KVQ_ERR_INTERNAL, "KV step end without a step");
    c->in_step = false;
    for (int il = 0; il < c->g.n_layer; il++)
        if (c->layers[il].n != c->step.slots0 + c->step.n)
            return kvq_err(c->lg, KVQ_ERR_INTERNAL, "layer %d was not stepped", il);
    if (!step_final(c->step.mode)) {
        c->n_pending += c->step.n;
        return KVQ_OK;
    }
    kvq_status st = prompt_end ? kvq_kv_prefill_end(c) : KVQ_OK;
    if (!st) st = after_step(c);
    return st;
}

/* A failed step leaves the cache as it was before it. */
void kvq_kv_step_abort(kvq_kv_cache *c) {
    if (!c->in_step) return;
    c->in_step = false;
    kvq_kv_truncate(c, c->step.slots0);
}

int32_t kvq_kv_n_pending(const kvq_kv_cache *c) { return c->n_pending; }

kvq_status kvq_kv_accept(kvq_kv_cache *c, int n) {
    int pending = kvq_kv_n_pending(c);
    if (n < 0 || n > pending)
        return kvq_err(c->lg, KVQ_ERR_ARG, "cannot accept %d tokens: %d are pending", n, pending);
    int keep = kvq_kv_n(c) - pending + n;
    kvq_kv_truncate(c, keep);
    c->n_pending = 0;
    for (int il = 0; il < c->g.n_layer; il++)
        if (c->codec->commit) c->codec->commit(&c->layers[il], keep);
    return after_step(c);
}
