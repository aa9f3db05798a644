/* KV cache lifecycle, spec parsing, registry, accounting and persistence. */
#include "kv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

extern const kvq_codec kvq_codec_f32, kvq_codec_f16, kvq_codec_kivi, kvq_codec_pertoken, kvq_codec_q8_0,
    kvq_codec_q4_0;
extern const kvq_policy kvq_policy_full, kvq_policy_window;

static const kvq_codec *const CODECS[] = {&kvq_codec_f32,      &kvq_codec_f16,  &kvq_codec_kivi,
                                          &kvq_codec_pertoken, &kvq_codec_q8_0, &kvq_codec_q4_0};
static const kvq_policy *const POLICIES[] = {&kvq_policy_full, &kvq_policy_window};

const kvq_codec *kvq_codec_find(const char *name) {
    for (size_t i = 0; i < sizeof CODECS / sizeof CODECS[0]; i++)
        if (!strcmp(CODECS[i]->name, name)) return CODECS[i];
    return NULL;
}

const kvq_policy *kvq_policy_find(const char *name) {
    for (size_t i = 0; i < sizeof POLICIES / sizeof POLICIES[0]; i++)
        if (!strcmp(POLICIES[i]->name, name)) return POLICIES[i];
    return NULL;
}

static void seterr(char *err, size_t cap, const char *fmt, ...) {
    if (!err || !cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static kvq_status parse_part(const char *s, size_t n, char *name, size_t name_cap, kvq_kv_opt *opts, int *n_opts,
                             char *err, size_t err_cap) {
    const char *colon = memchr(s, ':', n);
    size_t nl = colon ? (size_t)(colon - s) : n;
    if (nl == 0 || nl >= name_cap) {
        seterr(err, err_cap, "bad name in KV spec part '%.*s'", (int)n, s);
        return KVQ_ERR_ARG;
    }
    memcpy(name, s, nl);
    name[nl] = 0;
    *n_opts = 0;
    if (!colon) return KVQ_OK;
    const char *p = colon + 1, *end = s + n;
    if (p == end) {
        seterr(err, err_cap, "':' without options in KV spec '%.*s'", (int)n, s);
        return KVQ_ERR_ARG;
    }
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        if (e == p) {
            seterr(err, err_cap, "empty option in KV spec '%.*s'", (int)n, s);
            return KVQ_ERR_ARG;
        }
        if (*n_opts == KVQ_KV_MAX_OPTS) {
            seterr(err, err_cap, "too many options in KV spec (max %d)", KVQ_KV_MAX_OPTS);
            return KVQ_ERR_ARG;
        }
        kvq_kv_opt *o = &opts[(*n_opts)++];
        const char *eq = memchr(p, '=', (size_t)(e - p));
        size_t kl = eq ? (size_t)(eq - p) : (size_t)(e - p);
        size_t vl = eq ? (size_t)(e - eq - 1) : 0;
        if (kl == 0 || kl >= sizeof o->key || vl >= sizeof o->val || (eq && vl == 0)) {
            seterr(err, err_cap, "bad option '%.*s' in KV spec", (int)(e - p), p);
            return KVQ_ERR_ARG;
        }
        memcpy(o->key, p, kl);
        o->key[kl] = 0;
        if (eq) memcpy(o->val, eq + 1, vl);
        o->val[vl] = 0;
        p = e + (comma ? 1 : 0);
        if (comma && p == end) {
            seterr(err, err_cap, "trailing comma in KV spec");
            return KVQ_ERR_ARG;
        }
    }
    return KVQ_OK;
}

kvq_status kvq_kv_spec_parse(const char *s, kvq_kv_spec *out, char *err, size_t err_cap) {
    memset(out, 0, sizeof *out);
    if (!s || !*s) s = "f16";
    size_t n = strlen(s);
    if (n > 1000) {
        seterr(err, err_cap, "KV spec too long");
        return KVQ_ERR_ARG;
    }
    const char *plus = strchr(s, '+');
    kvq_status st = parse_part(s, plus ? (size_t)(plus - s) : n, out->codec, sizeof out->codec, out->copt,
                               &out->n_copt, err, err_cap);
    if (st) return st;
    if (plus) {
        if (strchr(plus + 1, '+')) {
            seterr(err, err_cap, "a KV spec has one codec and at most one policy ('+' twice)");
            return KVQ_ERR_ARG;
        }
        st = parse_part(plus + 1, strlen(plus + 1), out->policy, sizeof out->policy, out->popt, &out->n_popt, err,
                        err_cap);
        if (st) return st;
    } else {
        strcpy(out->policy, "full");
    }
    if (!kvq_codec_find(out->codec)) {
        char names[256] = "";
        for (size_t i = 0; i < sizeof CODECS / sizeof CODECS[0]; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", CODECS[i]->name);
        seterr(err, err_cap, "unknown KV codec '%s' (available: %s)", out->codec, names);
        return KVQ_ERR_ARG;
    }
    if (!kvq_policy_find(out->policy)) {
        char names[256] = "";
        for (size_t i = 0; i < sizeof POLICIES / sizeof POLICIES[0]; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", POLICIES[i]->name);
        seterr(err, err_cap, "unknown KV policy '%s' (available: %s)", out->policy, names);
        return KVQ_ERR_ARG;
    }
    return KVQ_OK;
}

static void fmt_opts(char *buf, size_t cap, size_t *o, const kvq_kv_opt *opts, int n) {
    for (int i = 0; i < n; i++) {
        int w = snprintf(buf + *o, cap > *o ? cap - *o : 0, "%s%s%s%s", i ? "," : ":", opts[i].key,
                         opts[i].val[0] ? "=" : "", opts[i].val);
        if (w > 0) *o += (size_t)w;
    }
}

void kvq_kv_spec_format(const kvq_kv_spec *s, char *buf, size_t cap) {
    if (!cap) return;
    size_t o = 0;
    int w = snprintf(buf, cap, "%s", s->codec);
    if (w > 0) o = (size_t)w;
    fmt_opts(buf, cap, &o, s->copt, s->n_copt);
    if (strcmp(s->policy, "full") || s->n_popt) {
        w = snprintf(buf + (o < cap ? o : cap), o < cap ? cap - o : 0, "+%s", s->policy);
        if (w > 0) o += (size_t)w;
        fmt_opts(buf, cap, &o, s->popt, s->n_popt);
    }
    if (o >= cap) buf[cap - 1] = 0;
}

const char *kvq_kv_opt_get(const kvq_kv_opt *o, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(o[i].key, key)) return o[i].val;
    return NULL;
}

bool kvq_kv_opt_int(const kvq_kv_opt *o, int n, const char *key, long lo, long hi, long *out, char *err, size_t cap) {
    const char *v = kvq_kv_opt_get(o, n, key);
    if (!v) return true;
    char *e;
    errno = 0;
    long x = strtol(v, &e, 10);
    if (!*v || *e || errno || x < lo || x > hi) {
        seterr(err, cap, "KV option %s=%s: expected an integer in [%ld, %ld]", key, v, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

/* Configures the codec for every layer; shared by sizing and construction. */
static kvq_status configure(const kvq_kv_geom *g, const kvq_kv_spec *spec, const kvq_codec **codec, void **cfgs,
                            char *err, size_t err_cap) {
    *codec = kvq_codec_find(spec->codec);
    *cfgs = calloc((size_t)g->n_layer, (*codec)->cfg_size ? (*codec)->cfg_size : 1);
    if (!*cfgs) return KVQ_ERR_NOMEM;
    if ((*codec)->configure) {
        kvq_status st = (*codec)->configure(spec, g, *cfgs, err, err_cap);
        if (st) {
            free(*cfgs);
            *cfgs = NULL;
            return st;
        }
    } else if (spec->n_copt) {
        seterr(err, err_cap, "KV codec '%s' takes no options (got '%s')", spec->codec, spec->copt[0].key);
        free(*cfgs);
        *cfgs = NULL;
        return KVQ_ERR_ARG;
    }
    return KVQ_OK;
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
        seterr(err, cap, "invalid KV geometry");
        return KVQ_ERR_ARG;
    }
    return KVQ_OK;
}

kvq_status kvq_kv_bytes_for(const kvq_kv_geom *g, const char *spec_s, int64_t n, uint64_t *bytes, char *err,
                            size_t err_cap) {
    kvq_kv_spec spec;
    kvq_status st = check_geom(g, err, err_cap);
    if (!st) st = kvq_kv_spec_parse(spec_s, &spec, err, err_cap);
    if (st) return st;
    const kvq_codec *codec;
    void *cfgs;
    if ((st = configure(g, &spec, &codec, &cfgs, err, err_cap))) return st;
    *bytes = 0;
    for (int il = 0; il < g->n_layer; il++) {
        kvq_kv_layer L = layer_shell(g, codec, cfgs, il);
        *bytes += codec->bytes_for(&L, n);
    }
    free(cfgs);
    return KVQ_OK;
}

kvq_status kvq_kv_cache_new(const kvq_kv_geom *g, const char *spec_s, const kvq_logger *lg, kvq_kv_cache **out,
                            char *err, size_t err_cap) {
    *out = NULL;
    kvq_status st = check_geom(g, err, err_cap);
    if (st) return st;
    kvq_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return KVQ_ERR_NOMEM;
    c->g = *g;
    c->lg = lg;
    if ((st = kvq_kv_spec_parse(spec_s, &c->spec, err, err_cap))) goto fail;
    c->policy = kvq_policy_find(c->spec.policy);
    if ((st = configure(g, &c->spec, &c->codec, &c->cfgs, err, err_cap))) goto fail;
    c->layers = calloc((size_t)g->n_layer, sizeof *c->layers);
    if (!c->layers) { st = KVQ_ERR_NOMEM; goto fail; }
    for (int il = 0; il < g->n_layer; il++) {
        kvq_kv_layer *L = &c->layers[il];
        *L = layer_shell(g, c->codec, c->cfgs, il);
        L->prev = il ? &c->layers[il - 1] : NULL;
        L->cache = c;
        if ((st = c->codec->init(L))) {
            seterr(err, err_cap, "cannot allocate the KV cache for layer %d (%llu bytes for %d tokens)", il,
                   (unsigned long long)c->codec->bytes_for(L, g->n_ctx), g->n_ctx);
            goto fail;
        }
    }
    if (c->policy->init && (st = c->policy->init(c, err, err_cap))) goto fail;
    if (c->policy->obs_window > 0) {
        c->obs_q = calloc((size_t)g->n_layer * (size_t)c->policy->obs_window * (size_t)(g->n_head * g->head_dim),
                          sizeof(float));
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
    free(c->cfgs);
    free(c->obs_q);
    free(c->scratch);
    free(c);
}

kvq_status kvq_kv_append(kvq_kv_cache *c, int il, const float *k, const float *v, int n) {
    kvq_kv_layer *L = &c->layers[il];
    if (n < 0 || L->n + n > L->cap)
        return kvq_err(c->lg, KVQ_ERR_CONTEXT_FULL, "KV cache full: %d + %d tokens > %d", L->n, n, L->cap);
    return c->codec->append(L, k, v, n);
}

void kvq_kv_commit(kvq_kv_cache *c, int il) {
    if (c->codec->commit) c->codec->commit(&c->layers[il]);
}

void kvq_kv_observe(kvq_kv_cache *c, int il, const float *q, int n) {
    int W = c->policy->obs_window;
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
    for (int il = 0; il < c->g.n_layer; il++)
        if (n < c->layers[il].n) c->codec->truncate(&c->layers[il], n);
    return KVQ_OK;
}

int32_t kvq_kv_n(const kvq_kv_cache *c) { return c->layers[0].n; }

uint64_t kvq_kv_bytes_used(const kvq_kv_cache *c) {
    uint64_t b = 0;
    for (int il = 0; il < c->g.n_layer; il++) b += c->codec->bytes_for(&c->layers[il], c->layers[il].n);
    return b;
}

#define KV_MAGIC "KVQC"
/* 2: KIVI value codes stored in quads of 4 tokens; a version-1 file would load
 * into the wrong byte order, so it is refused instead. */
#define KV_VERSION 2u

kvq_status kvq_kv_save(const kvq_kv_cache *c, const char *path) {
    if (!c->codec->save) return kvq_err(c->lg, KVQ_ERR_UNSUPPORTED, "codec %s cannot be saved", c->codec->name);
    FILE *f = fopen(path, "wb");
    if (!f) return kvq_err(c->lg, KVQ_ERR_IO, "cannot write '%s'", path);
    char spec[512];
    kvq_kv_spec_format(&c->spec, spec, sizeof spec);
    uint32_t ver = KV_VERSION, sl = (uint32_t)strlen(spec);
    kvq_status st = KVQ_OK;
    if (fwrite(KV_MAGIC, 1, 4, f) != 4 || fwrite(&ver, 4, 1, f) != 1 || fwrite(&c->g, sizeof c->g, 1, f) != 1 ||
        fwrite(&sl, 4, 1, f) != 1 || fwrite(spec, 1, sl, f) != sl)
        st = KVQ_ERR_IO;
    for (int il = 0; !st && il < c->g.n_layer; il++) {
        int32_t n = c->layers[il].n;
        if (fwrite(&n, 4, 1, f) != 1) st = KVQ_ERR_IO;
        else st = c->codec->save(&c->layers[il], f);
    }
    if (fclose(f) != 0) st = KVQ_ERR_IO;
    return st ? kvq_err(c->lg, st, "failed writing KV cache to '%s'", path) : KVQ_OK;
}

kvq_status kvq_kv_load(kvq_kv_cache *c, const char *path) {
    if (!c->codec->load) return kvq_err(c->lg, KVQ_ERR_UNSUPPORTED, "codec %s cannot be loaded", c->codec->name);
    FILE *f = fopen(path, "rb");
    if (!f) return kvq_err(c->lg, KVQ_ERR_IO, "cannot read '%s'", path);
    char magic[4], spec[512], mine[512];
    uint32_t ver, sl;
    kvq_kv_geom g;
    kvq_status st = KVQ_OK;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, KV_MAGIC, 4) || fread(&ver, 4, 1, f) != 1 || ver != KV_VERSION ||
        fread(&g, sizeof g, 1, f) != 1 || fread(&sl, 4, 1, f) != 1 || sl >= sizeof spec || fread(spec, 1, sl, f) != sl) {
        fclose(f);
        return kvq_err(c->lg, KVQ_ERR_FORMAT, "'%s' is not a kvq KV cache file", path);
    }
    spec[sl] = 0;
    kvq_kv_spec_format(&c->spec, mine, sizeof mine);
    if (memcmp(&g, &c->g, sizeof g) || strcmp(spec, mine)) {
        fclose(f);
        return kvq_err(c->lg, KVQ_ERR_ARG, "'%s' holds a cache for another model or spec (%s)", path, spec);
    }
    for (int il = 0; !st && il < c->g.n_layer; il++) {
        int32_t n;
        if (fread(&n, 4, 1, f) != 1 || n < 0 || n > c->layers[il].cap) st = KVQ_ERR_FORMAT;
        else {
            c->codec->truncate(&c->layers[il], 0);
            c->layers[il].n = n;
            st = c->codec->load(&c->layers[il], f);
        }
    }
    fclose(f);
    if (st) {
        kvq_kv_truncate(c, 0);
        return kvq_err(c->lg, st, "'%s' is truncated or corrupt", path);
    }
    return KVQ_OK;
}
