/* The HTTP side of kvq serve, on libmicrohttpd (a thread per connection, so
 * a reply can wait for the scheduler). Routes, the API key, body limits,
 * the OpenAI JSON and server-sent-event replies, /metrics. Every failure is
 * a 4xx/5xx with an OpenAI-style body: {"error": {message, type, param, code}}. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../cli.h"
#include "serve.h"

struct srv_http {
    struct MHD_Daemon *d;
    srv *s;
    srv_http_opts o;
};

typedef struct conn {
    srv_http *h;
    char *body;
    size_t len, cap;
    bool too_big;
    srv_job *job;
    bool chat;
    char id[48];
    long created;
    char *out;            /* the event being sent */
    size_t out_len, out_off;
    size_t seen;          /* bytes of the job's text sent */
    int phase;            /* 0: role chunk next (chat), 1: text, 2: all sent */
    int fd;
} conn;

static enum MHD_Result reply(struct MHD_Connection *c, int status, const char *ctype, char *body, const char *h1,
                             const char *v1) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (h1) MHD_add_response_header(r, h1, v1);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static char *json_out(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s ? s : strdup("{}");
}

static enum MHD_Result error_reply(srv_http *h, struct MHD_Connection *c, int status, const char *msg, const char *param,
                                   const char *code) {
    const char *type = status == 401 ? "authentication_error" : status == 404 ? "not_found_error"
                     : status == 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param && *param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    srv_count_status(h->s, status);
    return reply(c, status, "application/json", json_out(o), status == 429 ? "Retry-After" : NULL, "1");
}

/* The client hung up: nobody will read what the job makes. */
static bool client_gone(const conn *k) {
    if (k->fd < 0) return false;
    struct pollfd p = {.fd = k->fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Waits (lock held) for text past `seen` or the end; false when the client left. */
static bool wait_news(conn *k, size_t seen) {
    srv_job *j = k->job;
    while (j->out.safe <= seen && j->finish == SRV_RUNNING) {
        srv_wait(k->h->s, j, seen);
        if (client_gone(k)) return false;
    }
    return true;
}

static const char *finish_name(srv_finish f) {
    return f == SRV_FIN_STOP ? "stop" : f == SRV_FIN_LENGTH ? "length" : "error";
}

static cJSON *usage_of(const srv_job *j) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", j->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_gen);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", j->n_reused);
    return u;
}

static cJSON *head(const conn *k, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", k->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)k->created);
    cJSON_AddStringToObject(o, "model", k->h->o.model_id);
    return o;
}

/* One choice: text (completions) or message/delta (chat). */
static cJSON *choice(const conn *k, const char *text, size_t n, const char *finish, bool delta, bool role) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    char *t = malloc(n + 1);
    if (t) {
        memcpy(t, text ? text : "", n);
        t[n] = 0;
    }
    if (k->chat) {
        cJSON *m = cJSON_AddObjectToObject(c, delta ? "delta" : "message");
        if (role) cJSON_AddStringToObject(m, "role", "assistant");
        if (!delta || n || role) cJSON_AddStringToObject(m, "content", t ? t : "");
    } else {
        cJSON_AddStringToObject(c, "text", t ? t : "");
    }
    free(t);
    cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

static void add_kvq(cJSON *o, const srv_job *j) {
    cJSON *x = cJSON_AddObjectToObject(o, "kvq");
    cJSON_AddStringToObject(x, "session", j->id_out);
    cJSON_AddStringToObject(x, "kv", j->spec);
    cJSON_AddNumberToObject(x, "prompt_tokens_reused", j->n_reused);
    if (j->finish == SRV_FIN_ERROR) cJSON_AddStringToObject(x, "error", j->err);
}

/* ---- streaming: one server-sent event per callback fill ---- */

static void set_event(conn *k, cJSON *o, bool done) {
    char *s = json_out(o);
    size_t n = strlen(s);
    free(k->out);
    k->out = malloc(n + 32);
    k->out_len = k->out ? (size_t)snprintf(k->out, n + 32, "data: %s\n\n%s", s, done ? "data: [DONE]\n\n" : "") : 0;
    k->out_off = 0;
    free(s);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    conn *k = cls;
    (void)pos;
    while (k->out_off >= k->out_len) {
        if (k->phase == 2) return MHD_CONTENT_READER_END_OF_STREAM;
        srv *s = k->h->s;
        srv_job *j = k->job;
        const char *obj = k->chat ? "chat.completion.chunk" : "text_completion";
        srv_lock(s);
        if (k->phase == 0) {
            cJSON *o = head(k, obj), *ch = cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToArray(ch, choice(k, "", 0, NULL, true, true));
            k->phase = 1;
            srv_unlock(s);
            set_event(k, o, false);
            continue;
        }
        if (!wait_news(k, k->seen)) {
            srv_unlock(s);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        cJSON *o = head(k, obj), *ch = cJSON_AddArrayToObject(o, "choices");
        bool done = false;
        if (j->out.safe > k->seen) {
            cJSON_AddItemToArray(ch, choice(k, j->out.p + k->seen, j->out.safe - k->seen, NULL, true, false));
            k->seen = j->out.safe;
        } else {
            cJSON_AddItemToArray(ch, choice(k, "", 0, finish_name(j->finish), true, false));
            if (j->req.include_usage) cJSON_AddItemToObject(o, "usage", usage_of(j));
            add_kvq(o, j);
            if (j->finish == SRV_FIN_ERROR) {
                cJSON *e = cJSON_AddObjectToObject(o, "error");
                cJSON_AddStringToObject(e, "message", j->err);
                cJSON_AddStringToObject(e, "type", "server_error");
            }
            done = true;
            k->phase = 2;
        }
        srv_unlock(s);
        set_event(k, o, done);
    }
    size_t n = k->out_len - k->out_off < max ? k->out_len - k->out_off : max;
    memcpy(buf, k->out + k->out_off, n);
    k->out_off += n;
    return (ssize_t)n;
}

/* ---- requests ---- */

static bool add_tokens(const kvq_model *m, const char *text, size_t n, bool bos, bool special, kvq_token **t, int *nt,
                       int cap) {
    int got = 0;
    if (*nt >= cap) return false;
    if (kvq_tokenize_ex(m, text, n, bos, special, *t + *nt, cap - *nt, &got)) return false;
    *nt += got;
    return true;
}

/* The prompt's tokens; 0, or a status with msg set. */
static int prompt_tokens(srv_http *h, const srv_req *r, kvq_token **out, int *n, char *msg, size_t cap) {
    const kvq_model *m = srv_model(h->s);
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    const int n_ctx = srv_options(h->s)->n_ctx;
    *n = 0;
    *out = malloc((size_t)n_ctx * sizeof **out);
    if (!*out) return snprintf(msg, cap, "out of memory"), 500;
    bool ok = true;
    if (r->kind == SRV_COMPLETION && r->prompt) {
        ok = add_tokens(m, r->prompt, strlen(r->prompt), info.add_bos, true, out, n, n_ctx);
    } else if (r->kind == SRV_COMPLETION) {
        if (r->n_prompt_ids > n_ctx) ok = false;
        for (int i = 0; ok && i < r->n_prompt_ids; i++) {
            if (r->prompt_ids[i] >= kvq_vocab_size(m))
                return snprintf(msg, cap, "token id %d is outside the vocabulary (0..%d)", r->prompt_ids[i],
                                kvq_vocab_size(m) - 1), 400;
            (*out)[(*n)++] = r->prompt_ids[i];
        }
    } else {
        srv_render rd;
        int st = srv_chat_render(srv_template(h->s), r->msgs, r->n_msgs, &rd, msg, cap);
        if (st) return st;
        if (info.add_bos && info.bos >= 0) (*out)[(*n)++] = info.bos;
        for (int i = 0; ok && i < rd.n_seg; i++)
            ok = add_tokens(m, rd.buf + rd.seg[i].off, rd.seg[i].n, false, rd.seg[i].special, out, n, n_ctx);
        srv_render_free(&rd);
    }
    if (!ok) return snprintf(msg, cap, "this model's context is %d tokens and the prompt is longer", n_ctx), 400;
    if (*n == 0) return snprintf(msg, cap, "the prompt is empty"), 400;
    if (*n >= n_ctx)
        return snprintf(msg, cap, "this model's context is %d tokens; the prompt has %d, leaving none to generate", n_ctx,
                        *n), 400;
    return 0;
}

/* A per-request KV spec, checked: specs that name files (AQUA-KV's
 * predictors) are the operator's to choose, with --kv, not a client's. */
static int check_spec(srv_http *h, const char *spec, char *msg, size_t cap) {
    if (strchr(spec, '/') || strstr(spec, "pred="))
        return snprintf(msg, cap, "a 'kv' spec that names a file can only be set with kvq serve --kv"), 400;
    kvq_kv_report r;
    char e[256] = "";
    if (kvq_kv_describe(srv_model(h->s), spec, srv_options(h->s)->n_ctx, &r, e, sizeof e))
        return snprintf(msg, cap, "kv '%s': %s", spec, e[0] ? e : "invalid spec"), 400;
    return 0;
}

static enum MHD_Result completion(srv_http *h, struct MHD_Connection *c, conn *k, srv_kind kind) {
    srv *s = h->s;
    char msg[512], param[64];
    srv_job *j = srv_job_new(s);
    if (!j) return error_reply(h, c, 500, "out of memory", NULL, NULL);
    int st = srv_req_parse(k->body ? k->body : "", k->len, kind, &h->o.lim, &j->req, msg, sizeof msg, param, sizeof param);
    if (!st && j->req.model && strcmp(j->req.model, h->o.model_id)) {
        snprintf(msg, sizeof msg, "the model '%.200s' does not exist; this server has '%.200s'", j->req.model, h->o.model_id);
        j->refs = 1;
        srv_release(s, j);
        return error_reply(h, c, 404, msg, "model", "model_not_found");
    }
    const char *spec = j->req.kv ? j->req.kv : srv_options(s)->spec;
    if (!st && j->req.kv) st = check_spec(h, spec, msg, sizeof msg), snprintf(param, sizeof param, "kv");
    if (!st) st = prompt_tokens(h, &j->req, &j->prompt, &j->n_prompt, msg, sizeof msg), snprintf(param, sizeof param, kind == SRV_CHAT ? "messages" : "prompt");
    if (st) {
        j->refs = 1;
        srv_release(s, j);
        return error_reply(h, c, st, msg, param, st == 400 && strstr(msg, "context is") ? "context_length_exceeded" : NULL);
    }
    const int room = srv_options(s)->n_ctx - j->n_prompt;
    j->max_tokens = j->req.max_tokens ? j->req.max_tokens : h->o.lim.max_tokens;
    if (j->max_tokens > room) j->max_tokens = room; /* ends with finish_reason "length" */
    snprintf(j->spec, sizeof j->spec, "%s", spec);
    const char *sid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Session-Id");
    if (!sid) sid = j->req.session;
    if (sid && srv_id_valid(sid)) snprintf(j->session_id, sizeof j->session_id, "%s", sid);
    if ((st = srv_submit(s, j))) {
        snprintf(msg, sizeof msg, "%s", j->err);
        const char *code = j->code;
        srv_release(s, j);
        return error_reply(h, c, st, msg, NULL, code);
    }
    k->job = j;
    k->chat = kind == SRV_CHAT;
    k->created = (long)time(NULL);
    char rid[33];
    srv_new_id(rid);
    snprintf(k->id, sizeof k->id, "%s-%.24s", k->chat ? "chatcmpl" : "cmpl", rid);
    /* the headers wait for the first token, so a refusal can still be a status */
    srv_lock(s);
    const bool here = j->req.stream ? wait_news(k, 0) : wait_news(k, (size_t)-1);
    const int refused = j->http_status;
    srv_unlock(s);
    if (!here) return MHD_NO;
    if (refused) return error_reply(h, c, refused, j->err, NULL, NULL);
    srv_count_status(s, 200);
    if (j->req.stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, k, NULL);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        srv_lock(s);
        char sidv[33];
        snprintf(sidv, sizeof sidv, "%s", j->id_out);
        srv_unlock(s);
        if (sidv[0]) MHD_add_response_header(r, "X-Session-Id", sidv);
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    srv_lock(s);
    cJSON *o = head(k, k->chat ? "chat.completion" : "text_completion"), *ch = cJSON_AddArrayToObject(o, "choices");
    cJSON_AddItemToArray(ch, choice(k, j->out.p, j->out.len, finish_name(j->finish), false, k->chat));
    cJSON_AddItemToObject(o, "usage", usage_of(j));
    add_kvq(o, j);
    char sidv[33];
    snprintf(sidv, sizeof sidv, "%s", j->id_out);
    srv_unlock(s);
    return reply(c, 200, "application/json", json_out(o), sidv[0] ? "X-Session-Id" : NULL, sidv);
}

static enum MHD_Result models(srv_http *h, struct MHD_Connection *c) {
    cJSON *o = cJSON_CreateObject(), *d = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddStringToObject(m, "id", h->o.model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "kvq");
    cJSON_AddItemToArray(d, m);
    srv_count_status(h->s, 200);
    return reply(c, 200, "application/json", json_out(o), NULL, NULL);
}

static bool authorized(srv_http *h, struct MHD_Connection *c) {
    if (!h->o.api_key) return true;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!a || strncmp(a, "Bearer ", 7)) return false;
    a += 7;
    const char *key = h->o.api_key;
    size_t na = strlen(a), nk = strlen(key);
    unsigned diff = (unsigned)(na ^ nk);
    for (size_t i = 0; i < nk; i++) diff |= (unsigned)(key[i] ^ (i < na ? a[i] : 0)); /* no early exit */
    return diff == 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *data, size_t *size, void **con_cls) {
    srv_http *h = cls;
    conn *k = *con_cls;
    if (!k) {
        if (!(k = calloc(1, sizeof *k))) return MHD_NO;
        k->h = h;
        k->fd = -1;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci) k->fd = ci->connect_fd;
        *con_cls = k;
        return MHD_YES;
    }
    if (*size) {
        if (!k->too_big && k->len + *size > h->o.max_body) k->too_big = true;
        if (!k->too_big) {
            if (k->len + *size + 1 > k->cap) {
                size_t cap = (k->len + *size + 1) * 2;
                char *b = realloc(k->body, cap);
                if (!b) return MHD_NO;
                k->body = b;
                k->cap = cap;
            }
            memcpy(k->body + k->len, data, *size);
            k->len += *size;
            k->body[k->len] = 0;
        }
        *size = 0;
        return MHD_YES;
    }
    const bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get) return error_reply(h, c, 405, "use GET", NULL, NULL);
        const bool stop = srv_stopping(h->s);
        srv_count_status(h->s, stop ? 503 : 200);
        return reply(c, stop ? 503 : 200, "application/json", strdup(stop ? "{\"status\":\"stopping\"}" : "{\"status\":\"ok\"}"),
                     NULL, NULL);
    }
    if (!authorized(h, c)) return error_reply(h, c, 401, "a valid API key is required (Authorization: Bearer KEY)", NULL, "invalid_api_key");
    if (k->too_big) {
        char m[128];
        snprintf(m, sizeof m, "the request body exceeds %zu bytes", h->o.max_body);
        return error_reply(h, c, 413, m, NULL, NULL);
    }
    const bool is_cmpl = !strcmp(url, "/v1/completions"), is_chat = !strcmp(url, "/v1/chat/completions");
    if (is_cmpl || is_chat) {
        if (!post) return error_reply(h, c, 405, "use POST", NULL, NULL);
        return completion(h, c, k, is_chat ? SRV_CHAT : SRV_COMPLETION);
    }
    if (!strcmp(url, "/v1/models")) return get ? models(h, c) : error_reply(h, c, 405, "use GET", NULL, NULL);
    if (!strcmp(url, "/metrics")) {
        if (!get) return error_reply(h, c, 405, "use GET", NULL, NULL);
        char *t = srv_metrics_text(h->s);
        if (!t) return MHD_NO;
        srv_count_status(h->s, 200);
        return reply(c, 200, "text/plain; version=0.0.4", t, NULL, NULL);
    }
    char m[160];
    snprintf(m, sizeof m, "no route %.16s %.100s", method, url);
    return error_reply(h, c, 404, m, NULL, NULL);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    srv_http *h = cls;
    conn *k = *con_cls;
    if (!k) return;
    if (k->job) srv_release(h->s, k->job);
    free(k->body);
    free(k->out);
    free(k);
    *con_cls = NULL;
}

srv_http *srv_http_start(srv *s, const srv_http_opts *o, char *err, size_t err_cap) {
    srv_http *h = calloc(1, sizeof *h);
    if (!h) return snprintf(err, err_cap, "out of memory"), NULL;
    h->s = s;
    h->o = *o;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    const char *host = !strcmp(o->host, "localhost") ? "127.0.0.1" : o->host;
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        snprintf(err, err_cap, "--host '%s' is not an IPv4 address", o->host);
        free(h);
        return NULL;
    }
    const srv_opts *so = srv_options(s);
    h->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)o->port, NULL,
                            NULL, handle, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(so->parallel + so->queue + 64),
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_NOTIFY_COMPLETED, completed, h,
                            MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, err_cap, "cannot listen on %s:%d (in use, or not allowed)", o->host, o->port);
        free(h);
        return NULL;
    }
    return h;
}

void srv_http_stop(srv_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    free(h);
}
