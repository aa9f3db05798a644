/* The cache as a byte stream: a header (version, geometry, spec) and each
 * layer's slots in the codec's compressed form. A stream written with
 * another spec is converted through the codecs: loaded into a cache of its
 * own spec, read back densely and appended to this one, so a session saved
 * in f16 can be restored compressed. Streams are untrusted: every count is
 * checked before it sizes anything. */
#include "kv.h"
#include "../core/mapfile.h"

#include <stdlib.h>
#include <string.h>

#define KV_MAGIC "KVQC"
/* 3: paged caches; the geometry no longer includes the context size, so a
 * cache loads into any context that can hold it. 4: hier's key blocks in
 * tiles of 8 tokens by 8 channels (hier_kernels.h). */
#define KV_VERSION 4u
#define KV_SPEC_MAX 512

typedef struct kv_head {
    int32_t n_layer, n_head, n_head_kv, head_dim;
} kv_head;

kvq_status kvq_kv_write(const kvq_kv_cache *c, FILE *f) {
    if (!c->codec->save) return kvq_err(c->lg, KVQ_ERR_UNSUPPORTED, "codec %s cannot be saved", c->codec->name);
    if (kvq_kv_n_pending(c)) return kvq_err(c->lg, KVQ_ERR_ARG, "cannot save a cache with pending speculative tokens");
    char spec[KV_SPEC_MAX];
    kvq_kv_spec_format(&c->spec, spec, sizeof spec);
    kv_head h = {c->g.n_layer, c->g.n_head, c->g.n_head_kv, c->g.head_dim};
    uint32_t ver = KV_VERSION, sl = (uint32_t)strlen(spec);
    if (fwrite(KV_MAGIC, 1, 4, f) != 4 || fwrite(&ver, 4, 1, f) != 1 || fwrite(&h, sizeof h, 1, f) != 1 ||
        fwrite(&sl, 4, 1, f) != 1 || fwrite(spec, 1, sl, f) != sl)
        return KVQ_ERR_IO;
    for (int il = 0; il < c->g.n_layer; il++) {
        int32_t n = c->layers[il].n;
        if (fwrite(&n, 4, 1, f) != 1) return KVQ_ERR_IO;
        kvq_status st = c->codec->save(&c->layers[il], f);
        if (st) return st;
    }
    return KVQ_OK;
}

/* Loads the layers of a stream whose spec is this cache's own. */
static kvq_status read_layers(kvq_kv_cache *c, FILE *f) {
    for (int il = 0; il < c->g.n_layer; il++) {
        kvq_kv_layer *L = &c->layers[il];
        int32_t n;
        if (fread(&n, 4, 1, f) != 1 || n < 0) return KVQ_ERR_FORMAT;
        if (n > L->cap) return KVQ_ERR_CONTEXT_FULL;
        kvq_status st = c->codec->reserve ? c->codec->reserve(L, n) : KVQ_OK;
        if (st) return st;
        L->n = n;
        if ((st = c->codec->load(L, f))) return st;
    }
    return KVQ_OK;
}

/* Rebuilds a policy's summaries from the keys now held. */
static kvq_status replay_policy(kvq_kv_cache *c) {
    if (!c->policy->on_append) return KVQ_OK;
    const int row = c->g.n_head_kv * c->g.head_dim, chunk = 256;
    float *k = malloc((size_t)chunk * row * sizeof(float));
    if (!k) return KVQ_ERR_NOMEM;
    for (int il = 0; il < c->g.n_layer; il++) {
        kvq_kv_layer *L = &c->layers[il];
        for (int t0 = 0; t0 < L->n; t0 += chunk) {
            int m = L->n - t0 < chunk ? L->n - t0 : chunk;
            c->codec->read(L, KVQ_VIEW_FULL, t0, m, k, NULL);
            c->policy->on_append(c, il, k, m, t0);
        }
    }
    free(k);
    return KVQ_OK;
}

/* Reads every slot of src and appends it to dst, a chunk of slots at a time
 * through every layer (a cross-layer codec compresses a chunk layer after
 * layer). Chunks of 128 slots: AQUA-KV compresses 128 tokens at a time, so
 * each pass compresses at most one chunk per layer, and the layer above finds
 * the layer below's reconstruction of it still at hand. Keys are read
 * rotated; a codec that stores them before RoPE gets them rotated back, with
 * the slot index as position: a cache whose tokens were evicted cannot be
 * converted into one. */
kvq_status kvq_kv_convert(kvq_kv_cache *src, kvq_kv_cache *dst) {
    const int row = src->g.n_head_kv * src->g.head_dim, chunk = 128;
    if (dst->codec->prerope && !dst->rope)
        return kvq_err(dst->lg, KVQ_ERR_UNSUPPORTED, "codec %s needs the model's RoPE to be converted into",
                       dst->codec->name);
    float *k = malloc((size_t)chunk * row * sizeof(float)), *v = malloc((size_t)chunk * row * sizeof(float));
    int32_t *pos = malloc((size_t)chunk * sizeof *pos);
    kvq_status st = k && v && pos ? KVQ_OK : KVQ_ERR_NOMEM;
    const int n = kvq_kv_n(src);
    for (int il = 0; !st && il < src->g.n_layer; il++)
        if (src->layers[il].n != n || n > dst->layers[il].cap) st = KVQ_ERR_CONTEXT_FULL;
    for (int t0 = 0; !st && t0 < n; t0 += chunk) {
        const int m = n - t0 < chunk ? n - t0 : chunk;
        for (int il = 0; !st && il < src->g.n_layer; il++) {
            kvq_kv_layer *S = &src->layers[il];
            src->codec->read(S, KVQ_VIEW_FULL, t0, m, k, v);
            if (dst->codec->prerope) {
                for (int i = 0; i < m; i++) pos[i] = -(t0 + i); /* rotating by -p undoes RoPE at p */
                dst->rope(dst->rope_user, k, m, pos, dst->g.n_head_kv);
                for (int i = 0; i < m; i++) pos[i] = t0 + i;
            }
            st = kvq_kv_append_pos(dst, il, k, v, m, dst->codec->prerope ? pos : NULL);
            if (!st && dst->codec->commit) dst->codec->commit(&dst->layers[il], dst->layers[il].n);
            if (!st && dst->policy->on_append && !dst->codec->prerope) dst->policy->on_append(dst, il, k, m, t0);
        }
    }
    free(k);
    free(v);
    free(pos);
    return st;
}

kvq_status kvq_kv_read(kvq_kv_cache *c, FILE *f, const char *what) {
    if (!what) what = "KV stream";
    if (!c->codec->load && !c->codec->append)
        return kvq_err(c->lg, KVQ_ERR_UNSUPPORTED, "codec %s cannot be loaded", c->codec->name);
    char magic[4], spec[KV_SPEC_MAX], mine[KV_SPEC_MAX];
    uint32_t ver, sl;
    kv_head h;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, KV_MAGIC, 4))
        return kvq_err(c->lg, KVQ_ERR_FORMAT, "%s: not a kvq KV cache (bad magic)", what);
    if (fread(&ver, 4, 1, f) != 1) return kvq_err(c->lg, KVQ_ERR_FORMAT, "%s: truncated header", what);
    if (ver != KV_VERSION)
        return kvq_err(c->lg, KVQ_ERR_FORMAT, "%s: KV cache format version %u, this kvq reads version %u", what, ver,
                       KV_VERSION);
    if (fread(&h, sizeof h, 1, f) != 1 || fread(&sl, 4, 1, f) != 1)
        return kvq_err(c->lg, KVQ_ERR_FORMAT, "%s: truncated header", what);
    if (sl == 0 || sl >= sizeof spec || fread(spec, 1, sl, f) != sl)
        return kvq_err(c->lg, KVQ_ERR_FORMAT, "%s: bad spec length %u", what, sl);
    spec[sl] = 0;
    if (h.n_layer != c->g.n_layer || h.n_head != c->g.n_head || h.n_head_kv != c->g.n_head_kv ||
        h.head_dim != c->g.head_dim)
        return kvq_err(c->lg, KVQ_ERR_ARG,
                       "%s holds a cache of another shape: %d layers, %d heads, %d KV heads of %d (this model: %d, "
                       "%d, %d, %d)",
                       what, h.n_layer, h.n_head, h.n_head_kv, h.head_dim, c->g.n_layer, c->g.n_head, c->g.n_head_kv,
                       c->g.head_dim);
    kvq_kv_spec_format(&c->spec, mine, sizeof mine);
    kvq_kv_truncate(c, 0);
    kvq_status st;
    if (!strcmp(spec, mine)) {
        st = read_layers(c, f);
        if (!st) st = replay_policy(c);
    } else {
        /* another spec: load it as it is, then convert */
        kvq_kv_cache *src = NULL;
        char err[256] = "";
        kvq_kv_geom g = c->g;
        st = kvq_kv_cache_new(&g, spec, c->lg, &src, err, sizeof err);
        if (st) {
            kvq_err(c->lg, st, "%s: its KV spec '%s' cannot be used: %s", what, spec, err);
            return KVQ_ERR_FORMAT;
        }
        src->rope = c->rope;
        src->rope_user = c->rope_user;
        st = read_layers(src, f);
        if (!st) st = kvq_kv_convert(src, c);
        kvq_kv_cache_free(src);
    }
    if (st) {
        kvq_kv_truncate(c, 0);
        if (st == KVQ_ERR_CONTEXT_FULL)
            return kvq_err(c->lg, st, "%s holds more tokens than this context can (context %d%s)", what, c->g.n_ctx,
                           c->mem.cap || c->mem.pool ? ", or the memory cap" : "");
        if (st == KVQ_ERR_FORMAT || st == KVQ_ERR_IO) return kvq_err(c->lg, KVQ_ERR_FORMAT, "%s is truncated or corrupt", what);
        return st;
    }
    c->n_pending = 0;
    for (int il = 1; il < c->g.n_layer; il++)
        if (c->layers[il].n != kvq_kv_n(c)) {
            kvq_kv_truncate(c, 0);
            return kvq_err(c->lg, KVQ_ERR_FORMAT, "%s: layers hold different token counts", what);
        }
    return KVQ_OK;
}

kvq_status kvq_kv_save(const kvq_kv_cache *c, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return kvq_err(c->lg, KVQ_ERR_IO, "cannot write '%s'", path);
    kvq_status st = kvq_kv_write(c, f);
    if (fclose(f) != 0 && !st) st = KVQ_ERR_IO;
    return st ? kvq_err(c->lg, st, "failed writing KV cache to '%s'", path) : KVQ_OK;
}

kvq_status kvq_kv_load(kvq_kv_cache *c, const char *path) {
    kvq_status ost;
    FILE *f = kvq_fopen_read(path, c->lg, &ost);
    if (!f) return ost;
    kvq_status st = kvq_kv_read(c, f, path);
    fclose(f);
    return st;
}
