/* A request body into a checked srv_req. The body is untrusted: every
 * field is type-checked and bounded, and anything wrong is a 400 naming the
 * field, as the OpenAI API does. Unknown fields are ignored (clients send
 * many we do not use). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "serve.h"

typedef struct perr { char *err; size_t cap; char *param; size_t pcap; } perr;

static int fail(perr *e, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->cap, fmt, ap);
    va_end(ap);
    snprintf(e->param, e->pcap, "%s", param);
    return 400;
}

/* A message's content: a string, or an array of {"type":"text","text":...} parts. */
static int content_of(const cJSON *c, char **out, size_t *total, const srv_limits *lim, perr *e) {
    if (cJSON_IsString(c)) {
        *total += strlen(c->valuestring);
        if (*total > lim->max_prompt_bytes) return fail(e, "messages", "the messages exceed %zu bytes", lim->max_prompt_bytes);
        return (*out = strdup(c->valuestring)) ? 0 : fail(e, "messages", "out of memory");
    }
    if (!cJSON_IsArray(c)) return fail(e, "messages", "a message's content must be a string or an array of text parts");
    size_t n = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type"), *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx))
            return fail(e, "messages", "only text content parts are supported");
        n += strlen(tx->valuestring);
    }
    *total += n;
    if (*total > lim->max_prompt_bytes) return fail(e, "messages", "the messages exceed %zu bytes", lim->max_prompt_bytes);
    char *s = malloc(n + 1);
    if (!s) return fail(e, "messages", "out of memory");
    size_t k = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t l = strlen(t);
        memcpy(s + k, t, l);
        k += l;
    }
    s[k] = 0;
    *out = s;
    return 0;
}

static int parse_messages(const cJSON *ms, srv_req *r, const srv_limits *lim, perr *e) {
    if (!cJSON_IsArray(ms)) return fail(e, "messages", "'messages' must be an array");
    int n = cJSON_GetArraySize(ms);
    if (n < 1 || n > SRV_MAX_MSGS) return fail(e, "messages", "'messages' must hold 1 to %d messages", SRV_MAX_MSGS);
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return fail(e, "messages", "out of memory");
    size_t total = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) return fail(e, "messages", "each message needs a string 'role'");
        const char *ro = role->valuestring;
        if (!strcmp(ro, "developer")) ro = "system"; /* the newer name of the same role */
        if (strcmp(ro, "system") && strcmp(ro, "user") && strcmp(ro, "assistant"))
            return fail(e, "messages", "unsupported role '%.32s' (system, user, assistant)", role->valuestring);
        srv_msg *d = &r->msgs[r->n_msgs++];
        if (!(d->role = strdup(ro))) return fail(e, "messages", "out of memory");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        int st = content_of(c, &d->content, &total, lim, e);
        if (st) return st;
    }
    return 0;
}

static int parse_prompt(const cJSON *p, srv_req *r, const srv_limits *lim, perr *e) {
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        p = cJSON_GetArrayItem(p, 0); /* ["text"]: one prompt, n=1 */
    if (cJSON_IsString(p)) {
        if (strlen(p->valuestring) > lim->max_prompt_bytes)
            return fail(e, "prompt", "the prompt exceeds %zu bytes", lim->max_prompt_bytes);
        return (r->prompt = strdup(p->valuestring)) ? 0 : fail(e, "prompt", "out of memory");
    }
    if (!cJSON_IsArray(p)) return fail(e, "prompt", "'prompt' must be a string, or an array of token ids");
    int n = cJSON_GetArraySize(p);
    if (n < 1 || (size_t)n > lim->max_prompt_bytes) return fail(e, "prompt", "'prompt' must hold 1 to %zu token ids", lim->max_prompt_bytes);
    r->prompt_ids = malloc((size_t)n * sizeof *r->prompt_ids);
    if (!r->prompt_ids) return fail(e, "prompt", "out of memory");
    const cJSON *t;
    cJSON_ArrayForEach(t, p) {
        if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) || t->valuedouble < 0 || t->valuedouble > 1e9)
            return fail(e, "prompt", "a prompt array must hold one string or token ids (non-negative integers)");
        r->prompt_ids[r->n_prompt_ids++] = (kvq_token)t->valuedouble;
    }
    return 0;
}

static int parse_stop(const cJSON *s, srv_req *r, perr *e) {
    if (!s || cJSON_IsNull(s)) return 0;
    const cJSON *one[1] = {s};
    int n = cJSON_IsString(s) ? 1 : cJSON_IsArray(s) ? cJSON_GetArraySize(s) : -1;
    if (n < 0) return fail(e, "stop", "'stop' must be a string or an array of strings");
    if (n > SRV_MAX_STOP) return fail(e, "stop", "at most %d stop sequences", SRV_MAX_STOP);
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_IsString(s) ? one[0] : cJSON_GetArrayItem(s, i);
        if (!cJSON_IsString(x)) return fail(e, "stop", "'stop' must be a string or an array of strings");
        size_t l = strlen(x->valuestring);
        if (l == 0 || l > SRV_MAX_STOP_LEN) return fail(e, "stop", "a stop sequence must be 1 to %d bytes", SRV_MAX_STOP_LEN);
        if (!(r->stop[r->n_stop++] = strdup(x->valuestring))) return fail(e, "stop", "out of memory");
    }
    return 0;
}

/* An optional number in [lo, hi]; absent or null keeps *out. */
static int opt_num(const cJSON *root, const char *key, double lo, double hi, double *out, perr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return fail(e, key, "'%s' must be a number", key);
    if (v->valuedouble < lo || v->valuedouble > hi) return fail(e, key, "'%s' must be in [%g, %g]", key, lo, hi);
    *out = v->valuedouble;
    return 0;
}

static int opt_int(const cJSON *root, const char *key, double lo, double hi, double *out, bool *had, perr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return fail(e, key, "'%s' must be an integer", key);
    if (v->valuedouble < lo || v->valuedouble > hi) return fail(e, key, "'%s' must be in [%.0f, %.0f]", key, lo, hi);
    *out = v->valuedouble;
    if (had) *had = true;
    return 0;
}

static int opt_str(const cJSON *root, const char *key, size_t max, char **out, perr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v)) return fail(e, key, "'%s' must be a string", key);
    if (strlen(v->valuestring) > max) return fail(e, key, "'%s' is longer than %zu bytes", key, max);
    return (*out = strdup(v->valuestring)) ? 0 : fail(e, key, "out of memory");
}

static int parse_root(const cJSON *root, srv_kind kind, const srv_limits *lim, srv_req *r, perr *e) {
    int st;
    if (!cJSON_IsObject(root)) return fail(e, "", "the request body must be a JSON object");
    if (kind == SRV_CHAT) {
        if ((st = parse_messages(cJSON_GetObjectItemCaseSensitive(root, "messages"), r, lim, e))) return st;
    } else {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (!p) return fail(e, "prompt", "'prompt' is required");
        if ((st = parse_prompt(p, r, lim, e))) return st;
    }
    double v = 0;
    bool had = false;
    if ((st = opt_int(root, "max_tokens", 1, lim->max_tokens, &v, &had, e))) return st;
    if (kind == SRV_CHAT && (st = opt_int(root, "max_completion_tokens", 1, lim->max_tokens, &v, &had, e))) return st;
    r->max_tokens = had ? (int)v : 0;
    r->temperature = 1.0; /* the OpenAI defaults */
    r->top_p = 1.0;
    if ((st = opt_num(root, "temperature", 0, 2, &r->temperature, e))) return st;
    if ((st = opt_num(root, "top_p", 0, 1, &r->top_p, e))) return st;
    if (r->top_p <= 0) return fail(e, "top_p", "'top_p' must be in (0, 1]");
    v = 0;
    if ((st = opt_int(root, "seed", -9007199254740991.0, 9007199254740991.0, &v, &r->has_seed, e))) return st;
    r->seed = (uint64_t)(int64_t)v;
    v = 1;
    if ((st = opt_int(root, "n", 1, 1, &v, NULL, e))) return st;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (s && !cJSON_IsNull(s) && !cJSON_IsBool(s)) return fail(e, "stream", "'stream' must be a boolean");
    r->stream = cJSON_IsTrue(s);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return fail(e, "stream_options", "'stream_options' must be an object");
        r->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    }
    if ((st = parse_stop(cJSON_GetObjectItemCaseSensitive(root, "stop"), r, e))) return st;
    if ((st = opt_str(root, "model", 256, &r->model, e))) return st;
    if ((st = opt_str(root, "kv", 255, &r->kv, e))) return st;
    if ((st = opt_str(root, "session", 64, &r->session, e))) return st;
    return 0;
}

int srv_req_parse(const char *body, size_t len, srv_kind kind, const srv_limits *lim, srv_req *r, char *err,
                  size_t err_cap, char *param, size_t param_cap) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    perr e = {err, err_cap, param, param_cap};
    err[0] = 0;
    param[0] = 0;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) return fail(&e, "", "the request body is not valid JSON");
    int st = parse_root(root, kind, lim, r, &e);
    cJSON_Delete(root);
    if (st) srv_req_free(r);
    return st;
}

void srv_req_free(srv_req *r) {
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
    }
    free(r->msgs);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->model);
    free(r->kv);
    free(r->session);
    memset(r, 0, sizeof *r);
}
