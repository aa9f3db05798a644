/* KV cache lifecycle, memory, accounting, and the operations on slots that
 * the step protocol (kv_step.c) and the policies build on. */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

/* Configures the codec for every layer; shared by sizing and construction. */
static kvq_status configure(const kvq_kv_geom *g, const kvq_kv_spec *spec, const kvq_codec *codec, void **cfgs,
                            char *err, size_t err_cap) {
    *cfgs = calloc((size_t)g->n_layer, codec->cfg_size ? codec->cfg_size : 1);
    if (!*cfgs) return KVQ_ERR_NOMEM;
    kvq_status st = KVQ_OK;
    if (codec->configure) st = codec->configure(spec, g, *cfgs, err, err_cap); /* releases what it took on failure */
    else if (spec->n_copt) {
        kvq_seterr(err, err_cap, "KV codec '%s' takes no options (got '%s')", spec->codec, spec->copt[0].key);
        st = KVQ_ERR_ARG;
    }
    if (st) {
        free(*cfgs);
        *cfgs = NULL;
    }
    return st;
}

static kvq_kv_layer layer_shell(const kvq_kv_geom *g, const kvq_codec *codec, const void *cfgs, int il) {
    kvq_kv_layer L = {0};
    L.codec = codec;
    L.cfg = (const char *)cfgs + (size_t)il * codec->cfg_size;
    L.il = il;
    L.n_head_kv = g->n_head_kv;
    L.head_dim = g->head_dim;
    L.cap = g->n_ctx;
    L.n_batch = g->n_batch;
    return L;
}

static kvq_status check_geom(const kvq_kv_geom *g, char *err, size_t cap) {
    if (g->n_layer <= 0 || g->n_head_kv <= 0 || g->head_dim <= 0 || g->n_head % g->n_head_kv || g->n_ctx <= 0) {
        kvq_seterr(err, cap, "invalid KV geometry");
        return KVQ_ERR_ARG;
    }
    return KVQ_OK;
}

kvq_status kvq_kv_bytes_for(const kvq_kv_geom *g, const char *spec_s, int64_t n, uint64_t *bytes, char *err,
                            size_t err_cap) {
    return kvq_kv_bytes_for_ex(g, spec_s, n, bytes, NULL, err, err_cap);
}

kvq_status kvq_kv_bytes_for_ex(const kvq_kv_geom *g, const char *spec_s, int64_t n, uint64_t *bytes, uint64_t *aux,
                               char *err, size_t err_cap) {
    kvq_kv_spec spec;
    kvq_status st = check_geom(g, err, err_cap);
    if (!st) st = kvq_kv_spec_parse(spec_s, &spec, err, err_cap);
    if (st) return st;
    const kvq_codec *codec = kvq_codec_find(spec.codec);
    void *cfgs;
    if ((st = configure(g, &spec, codec, &cfgs, err, err_cap))) return st;
    *bytes = 0;
    for (int il = 0; il < g->n_layer; il++) {
        kvq_kv_layer L = layer_shell(g, codec, cfgs, il);
        *bytes += codec->bytes_for(&L, n);
    }
    if (aux) *aux = codec->aux_bytes ? codec->aux_bytes(cfgs, g->n_layer) : 0;
    if (codec->release) codec->release(cfgs, g->n_layer);
    free(cfgs);
    return KVQ_OK;
}

kvq_status kvq_kv_cache_new(const kvq_kv_geom *g, const char *spec, const kvq_logger *lg, kvq_kv_cache **out,
                            char *err, size_t err_cap) {
    return kvq_kv_cache_new_ex(g, spec, NULL, lg, out, err, err_cap);
}

kvq_status kvq_kv_cache_new_ex(const kvq_kv_geom *g, const char *spec_s, const kvq_kv_mem_opts *mo,
                               const kvq_logger *lg, kvq_kv_cache **out, char *err, size_t err_cap) {
    *out = NULL;
    kvq_kv_spec spec;
    kvq_status st = kvq_kv_spec_parse(spec_s, &spec, err, err_cap);
    if (st) return st;
    return kvq_kv_cache_new_with(g, &spec, kvq_codec_find(spec.codec), kvq_policy_find(spec.policy), mo, lg, out,
                                 err, err_cap);
}

kvq_status kvq_kv_cache_new_with(const kvq_kv_geom *g, const kvq_kv_spec *spec, const kvq_codec *codec,
                                 const kvq_policy *policy, const kvq_kv_mem_opts *mo, const kvq_logger *lg,
                                 kvq_kv_cache **out, char *err, size_t err_cap) {
    *out = NULL;
    kvq_status st = check_geom(g, err, err_cap);
    if (st) return st;
    kvq_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return KVQ_ERR_NOMEM;
    c->g = *g;
    c->lg = lg;
    c->spec = *spec;
    if (mo) {
        c->mem.cap = mo->cap;
        c->mem.pool = mo->pool;
    }
    c->policy = policy;
    c->codec = codec;
    if ((st = configure(g, spec, codec, &c->cfgs, err, err_cap))) goto fail;
    if (c->policy->needs_compact && !c->codec->compact && (!c->codec->read || c->codec->prerope)) {
        kvq_seterr(err, err_cap, "policy '%s' evicts tokens, and codec '%s' cannot compact", c->policy->name,
                   c->codec->name);
        st = KVQ_ERR_UNSUPPORTED;
        goto fail;
    }
    c->layers = calloc((size_t)g->n_layer, sizeof *c->layers);
    if (!c->layers) { st = KVQ_ERR_NOMEM; goto fail; }
    for (int il = 0; il < g->n_layer; il++) {
        kvq_kv_layer *L = &c->layers[il];
        *L = layer_shell(g, c->codec, c->cfgs, il);
        L->prev = il ? &c->layers[il - 1] : NULL;
        L->cache = c;
        if ((st = c->codec->init(L))) {
            if (st == KVQ_ERR_CONTEXT_FULL)
                kvq_seterr(err, err_cap, "the KV memory cap (%llu bytes) is smaller than the cache's fixed buffers",
                           (unsigned long long)(c->mem.cap ? c->mem.cap : c->mem.pool ? c->mem.pool->cap : 0));
            else
                kvq_seterr(err, err_cap, "cannot allocate the KV cache for layer %d", il);
            goto fail;
        }
        if (L->page <= 0) { st = KVQ_ERR_INTERNAL; goto fail; }
    }
    c->obs_w = c->policy->obs_window;
    c->max_spans = c->policy->max_spans > 0 ? c->policy->max_spans : 1;
    c->n_threads = 1;
    if (c->policy->init && (st = c->policy->init(c, err, err_cap))) goto fail;
    if (c->obs_w > 0) {
        c->obs_q = calloc((size_t)g->n_layer * (size_t)c->obs_w * (size_t)(g->n_head * g->head_dim), sizeof(float));
        if (!c->obs_q) { st = KVQ_ERR_NOMEM; goto fail; }
    }
    *out = c;
    return KVQ_OK;
fail:
    kvq_kv_cache_free(c);
    return st;
}

void kvq_kv_cache_free(kvq_kv_cache *c) {
    if (!c) return;
    if (c->policy && c->policy->destroy) c->policy->destroy(c);
    for (int il = 0; c->layers && il < c->g.n_layer; il++)
        if (c->layers[il].state) c->codec->destroy(&c->layers[il]);
    free(c->layers);
    if (c->cfgs && c->codec->release) c->codec->release(c->cfgs, c->g.n_layer);
    free(c->cfgs);
    free(c->obs_q);
    free(c->scratch);
    free(c->kscratch);
    free(c);
}

kvq_status kvq_kv_alloc_bound(const kvq_kv_geom *g, const char *spec, uint64_t *bytes, char *err, size_t err_cap) {
    return kvq_kv_held_bound(g, spec, bytes, NULL, NULL, err, err_cap);
}

kvq_status kvq_kv_held_bound(const kvq_kv_geom *g, const char *spec, uint64_t *alloc, int32_t *held, uint64_t *held_bytes,
                             char *err, size_t err_cap) {
    kvq_kv_cache *c;
    kvq_status st = kvq_kv_cache_new(g, spec, NULL, &c, err, err_cap);
    if (st) return st;
    uint64_t b = c->mem.held, hb = 0; /* fixed buffers */
    int32_t most = 0;
    for (int il = 0; il < g->n_layer; il++) {
        const int32_t bound = c->policy->held_bound ? c->policy->held_bound(c, il) : 0;
        const int32_t n = bound > 0 && bound < g->n_ctx ? bound : g->n_ctx;
        if (n > most) most = n;
        b += (uint64_t)kvq_pages_for(c->layers[il].page, n) * c->layers[il].page_bytes;
        hb += c->codec->bytes_for(&c->layers[il], n);
    }
    kvq_kv_cache_free(c);
    if (alloc) *alloc = b;
    if (held) *held = most;
    if (held_bytes) *held_bytes = hb;
    return KVQ_OK;
}

/* Room for n more slots in every layer, all or nothing. */
kvq_status kvq_kv_reserve(kvq_kv_cache *c, int n) {
    for (int il = 0; il < c->g.n_layer; il++) {
        kvq_kv_layer *L = &c->layers[il];
        if (n < 0 || L->n + n > L->cap)
            return kvq_err(c->lg, KVQ_ERR_CONTEXT_FULL, "KV cache full: %d + %d tokens > %d", L->n, n, L->cap);
        kvq_status st = c->codec->reserve ? c->codec->reserve(L, L->n + n) : KVQ_OK;
        if (st) {
            /* give back what this call took from the layers before */
            for (int j = 0; j <= il; j++) c->codec->truncate(&c->layers[j], c->layers[j].n);
            if (st == KVQ_ERR_CONTEXT_FULL) {
                /* what is left under the tighter of the cache's own cap and the shared pool's */
                uint64_t left = UINT64_MAX;
                if (c->mem.cap) left = c->mem.cap - c->mem.held;
                if (c->mem.pool && c->mem.pool->cap) {
                    const uint64_t used = atomic_load(&c->mem.pool->used), pl = c->mem.pool->cap > used ? c->mem.pool->cap - used : 0;
                    left = pl < left ? pl : left;
                }
                return kvq_err(c->lg, st,
                               "KV memory cap reached: %d more tokens need more than the %llu bytes left "
                               "(this cache holds %llu; memory comes in pages of %d tokens, %llu bytes per layer)",
                               n, (unsigned long long)left, (unsigned long long)c->mem.held, c->layers[0].page,
                               (unsigned long long)c->layers[0].page_bytes);
            }
            return kvq_err(c->lg, st, "cannot allocate KV pages for %d tokens", n);
        }
    }
    return KVQ_OK;
}

kvq_status kvq_kv_append_pos(kvq_kv_cache *c, int il, const float *k, const float *v, int n, const int32_t *pos) {
    kvq_kv_layer *L = &c->layers[il];
    if (n < 0 || L->n + n > L->cap)
        return kvq_err(c->lg, KVQ_ERR_CONTEXT_FULL, "KV cache full: %d + %d tokens > %d", L->n, n, L->cap);
    kvq_status st = c->codec->reserve ? c->codec->reserve(L, L->n + n) : KVQ_OK;
    if (st) return kvq_err(c->lg, st, "KV memory cap reached in layer %d (%d + %d tokens)", il, L->n, n);
    return c->codec->append(L, k, v, n, pos);
}

kvq_status kvq_kv_append(kvq_kv_cache *c, int il, const float *k, const float *v, int n) {
    return kvq_kv_append_pos(c, il, k, v, n, NULL);
}

void kvq_kv_commit(kvq_kv_cache *c, int il) {
    kvq_kv_layer *L = &c->layers[il];
    if (c->codec->commit) c->codec->commit(L, L->n);
}

void kvq_kv_observe(kvq_kv_cache *c, int il, const float *q, int n) {
    int W = c->obs_w;
    if (W <= 0) return;
    size_t row = (size_t)(c->g.n_head * c->g.head_dim);
    float *ring = c->obs_q + (size_t)il * (size_t)W * row;
    /* keep the last W rows of this chunk in arrival order, oldest first */
    int first = n > W ? n - W : 0;
    int keep = n - first;
    int old = W - keep;
    if (old > 0) memmove(ring, ring + (size_t)keep * row, (size_t)old * row * sizeof(float));
    memcpy(ring + (size_t)(W - keep) * row, q + (size_t)first * row, (size_t)keep * row * sizeof(float));
    if (il == c->g.n_layer - 1) c->obs_n = c->obs_n + n > W ? W : c->obs_n + n;
}

kvq_status kvq_kv_prefill_end(kvq_kv_cache *c) {
    if (!c->policy->prefill_end) return KVQ_OK;
    for (int il = 0; il < c->g.n_layer; il++) {
        kvq_status st = c->policy->prefill_end(c, il);
        if (st) return st;
    }
    return KVQ_OK;
}

kvq_status kvq_kv_truncate(kvq_kv_cache *c, int n) {
    if (n < 0) return KVQ_ERR_ARG;
    const int32_t total = kvq_kv_n(c), final = total - c->n_pending;
    /* the top layer first: a cross-layer codec (aqua) that truncates into its
     * compressed tokens rebuilds them from the layer below, which must still hold them */
    for (int il = c->g.n_layer - 1; il >= 0; il--) {
        kvq_kv_layer *L = &c->layers[il];
        /* truncate also returns pages reserved beyond n, so it runs at n == L->n too */
        if (n <= L->n) {
            c->codec->truncate(L, n);
            if (c->policy->on_truncate) c->policy->on_truncate(c, il, n);
        }
    }
    /* pending slots are the newest: truncation takes them first */
    c->n_pending = n > final ? (n < total ? n : total) - final : 0;
    return KVQ_OK;
}

/* Compaction through the codec's own read and append, for codecs that
 * re-encode what they read back without further loss (or nearly so). */
static kvq_status compact_rebuild(kvq_kv_cache *c, kvq_kv_layer *L, const int32_t *keep, int n_keep) {
    const int nkv = L->n_head_kv, hd = L->head_dim, row = nkv * hd;
    float *k = malloc((size_t)n_keep * row * sizeof(float) + 1), *v = malloc((size_t)n_keep * row * sizeof(float) + 1);
    float *tk = malloc((size_t)row * sizeof(float)), *tv = malloc((size_t)row * sizeof(float));
    kvq_status st = k && v && tk && tv ? KVQ_OK : KVQ_ERR_NOMEM;
    for (int j = 0; !st && j < n_keep; j++) {
        int32_t last = -1;
        for (int h = 0; h < nkv; h++) {
            int32_t src = keep[(size_t)h * n_keep + j];
            if (src != last) L->codec->read(L, KVQ_VIEW_FULL, src, 1, tk, tv);
            last = src;
            memcpy(k + (size_t)j * row + (size_t)h * hd, tk + (size_t)h * hd, (size_t)hd * sizeof(float));
            memcpy(v + (size_t)j * row + (size_t)h * hd, tv + (size_t)h * hd, (size_t)hd * sizeof(float));
        }
    }
    if (!st) {
        L->codec->truncate(L, 0);
        st = L->codec->reserve ? L->codec->reserve(L, n_keep) : KVQ_OK;
        if (!st) st = L->codec->append(L, k, v, n_keep, NULL);
        if (!st && L->codec->commit) L->codec->commit(L, n_keep);
    }
    free(k); free(v); free(tk); free(tv);
    return st;
}

kvq_status kvq_kv_compact(kvq_kv_cache *c, int il, const int32_t *keep, int n_keep) {
    kvq_kv_layer *L = &c->layers[il];
    if (n_keep < 0 || n_keep > L->n) return kvq_err(c->lg, KVQ_ERR_ARG, "compact: %d slots kept of %d", n_keep, L->n);
    if (c->n_pending)
        return kvq_err(c->lg, KVQ_ERR_ARG, "compact: %d slots are pending verification", c->n_pending);
    for (int h = 0; h < L->n_head_kv; h++)
        for (int j = 0; j < n_keep; j++) {
            int32_t s = keep[(size_t)h * n_keep + j];
            if (s < j || s >= L->n || (j && s <= keep[(size_t)h * n_keep + j - 1]))
                return kvq_err(c->lg, KVQ_ERR_ARG, "compact: keep list of head %d is not ascending within [0, %d)",
                               h, L->n);
        }
    if (n_keep == L->n) return KVQ_OK; /* ascending, distinct and as many as held: the identity */
    kvq_status st;
    if (c->codec->compact) st = c->codec->compact(L, keep, n_keep);
    else if (c->codec->read && !c->codec->prerope) st = compact_rebuild(c, L, keep, n_keep);
    else return kvq_err(c->lg, KVQ_ERR_UNSUPPORTED, "codec %s cannot compact", c->codec->name);
    if (st) return kvq_err(c->lg, st, "compacting layer %d to %d slots failed", il, n_keep);
    return KVQ_OK;
}

int32_t kvq_kv_n(const kvq_kv_cache *c) { return c->layers[0].n; }

uint64_t kvq_kv_bytes_used(const kvq_kv_cache *c) {
    uint64_t b = c->policy->bytes ? c->policy->bytes(c) : 0;
    for (int il = 0; il < c->g.n_layer; il++) b += c->codec->bytes_for(&c->layers[il], c->layers[il].n);
    return b;
}

uint64_t kvq_kv_bytes_allocated(const kvq_kv_cache *c) { return c->mem.held; }
