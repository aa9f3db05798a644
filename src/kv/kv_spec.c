/* KV specs: the codec and policy registry, parsing and canonical text of
 * CODEC[:OPT,...][+POLICY[:OPT,...]], and the option helpers codecs use. */
#include "kv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

extern const kvq_codec kvq_codec_f32, kvq_codec_f16, kvq_codec_kivi, kvq_codec_pertoken, kvq_codec_q8_0,
    kvq_codec_q4_0, kvq_codec_hier, kvq_codec_aqua;
extern const kvq_policy kvq_policy_full, kvq_policy_window, kvq_policy_snapkv, kvq_policy_hsa, kvq_policy_rocket,
    kvq_policy_rocket_mt;

static const kvq_codec *const CODECS[] = {&kvq_codec_f32,  &kvq_codec_f16,  &kvq_codec_kivi, &kvq_codec_pertoken,
                                          &kvq_codec_q8_0, &kvq_codec_q4_0, &kvq_codec_hier, &kvq_codec_aqua};
static const kvq_policy *const POLICIES[] = {&kvq_policy_full,   &kvq_policy_window, &kvq_policy_snapkv,
                                             &kvq_policy_hsa,    &kvq_policy_rocket, &kvq_policy_rocket_mt};

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

void kvq_codec_names(char *buf, size_t cap) {
    if (!cap) return;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof CODECS / sizeof CODECS[0]; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? ", " : "", CODECS[i]->name);
}

void kvq_policy_names(char *buf, size_t cap) {
    if (!cap) return;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof POLICIES / sizeof POLICIES[0]; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? ", " : "", POLICIES[i]->name);
}

static kvq_status parse_part(const char *s, size_t n, char *name, size_t name_cap, kvq_kv_opt *opts, int *n_opts,
                             char *err, size_t err_cap) {
    const char *colon = memchr(s, ':', n);
    size_t nl = colon ? (size_t)(colon - s) : n;
    if (nl == 0 || nl >= name_cap) {
        kvq_seterr(err, err_cap, "bad name in KV spec part '%.*s'", (int)n, s);
        return KVQ_ERR_ARG;
    }
    memcpy(name, s, nl);
    name[nl] = 0;
    *n_opts = 0;
    if (!colon) return KVQ_OK;
    const char *p = colon + 1, *end = s + n;
    if (p == end) {
        kvq_seterr(err, err_cap, "':' without options in KV spec '%.*s'", (int)n, s);
        return KVQ_ERR_ARG;
    }
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        if (e == p) {
            kvq_seterr(err, err_cap, "empty option in KV spec '%.*s'", (int)n, s);
            return KVQ_ERR_ARG;
        }
        if (*n_opts == KVQ_KV_MAX_OPTS) {
            kvq_seterr(err, err_cap, "too many options in KV spec (max %d)", KVQ_KV_MAX_OPTS);
            return KVQ_ERR_ARG;
        }
        kvq_kv_opt *o = &opts[(*n_opts)++];
        const char *eq = memchr(p, '=', (size_t)(e - p));
        size_t kl = eq ? (size_t)(eq - p) : (size_t)(e - p);
        size_t vl = eq ? (size_t)(e - eq - 1) : 0;
        if (kl == 0 || kl >= sizeof o->key || vl >= sizeof o->val || (eq && vl == 0)) {
            kvq_seterr(err, err_cap, "bad option '%.*s' in KV spec", (int)(e - p), p);
            return KVQ_ERR_ARG;
        }
        memcpy(o->key, p, kl);
        o->key[kl] = 0;
        if (eq) memcpy(o->val, eq + 1, vl);
        o->val[vl] = 0;
        p = e + (comma ? 1 : 0);
        if (comma && p == end) {
            kvq_seterr(err, err_cap, "trailing comma in KV spec");
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
        kvq_seterr(err, err_cap, "KV spec too long");
        return KVQ_ERR_ARG;
    }
    const char *plus = strchr(s, '+');
    kvq_status st = parse_part(s, plus ? (size_t)(plus - s) : n, out->codec, sizeof out->codec, out->copt,
                               &out->n_copt, err, err_cap);
    if (st) return st;
    if (plus) {
        if (strchr(plus + 1, '+')) {
            kvq_seterr(err, err_cap, "a KV spec has one codec and at most one policy ('+' twice)");
            return KVQ_ERR_ARG;
        }
        st = parse_part(plus + 1, strlen(plus + 1), out->policy, sizeof out->policy, out->popt, &out->n_popt, err,
                        err_cap);
        if (st) return st;
    } else {
        strcpy(out->policy, "full");
    }
    if (!kvq_codec_find(out->codec)) {
        char names[256];
        kvq_codec_names(names, sizeof names);
        kvq_seterr(err, err_cap, "unknown KV codec '%s' (available: %s)", out->codec, names);
        return KVQ_ERR_ARG;
    }
    if (!kvq_policy_find(out->policy)) {
        char names[256];
        kvq_policy_names(names, sizeof names);
        kvq_seterr(err, err_cap, "unknown KV policy '%s' (available: %s)", out->policy, names);
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
        kvq_seterr(err, cap, "KV option %s=%s: expected an integer in [%ld, %ld]", key, v, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

