/* kvq serve: an OpenAI-compatible HTTP server over continuous batching.
 *
 *   request.c  a request body (JSON) -> a checked srv_req, or a 4xx reason
 *   chat.c     chat templates: the model's family -> prompt segments
 *   sched.c    the scheduler thread: admission against the KV budget,
 *              sessions and prefix reuse, one kvq_batch_eval per step
 *   http.c     libmicrohttpd: routes, auth, limits, JSON and SSE replies,
 *              /metrics
 *   ../cmd_serve.c  options, start, SIGTERM
 *
 * Request parsing and template rendering touch no model and no network, so
 * the fuzz target (tests/fuzz/fuzz_serve.c) runs them alone. */
#ifndef KVQ_SERVE_H
#define KVQ_SERVE_H
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kvq.h"
#include "../stoptext.h"

/* ------------------------------------------------------------ request.c */

#define SRV_MAX_STOP 4
#define SRV_MAX_STOP_LEN 128
#define SRV_MAX_MSGS 512

typedef enum srv_kind { SRV_COMPLETION, SRV_CHAT } srv_kind;

typedef struct srv_msg { char *role, *content; } srv_msg;

typedef struct srv_req {
    srv_kind kind;
    char *prompt;              /* completions: the text, or NULL when given as token ids */
    kvq_token *prompt_ids;     /* completions: token ids (n_prompt_ids) */
    int n_prompt_ids;
    srv_msg *msgs;             /* chat */
    int n_msgs;
    int max_tokens;            /* 0: up to the context */
    double temperature, top_p;
    bool has_seed;
    uint64_t seed;
    char *stop[SRV_MAX_STOP];
    int n_stop;
    bool stream, include_usage;
    char *model, *kv, *session; /* NULL when absent */
} srv_req;

typedef struct srv_limits {
    int max_tokens;            /* largest max_tokens accepted */
    size_t max_prompt_bytes;   /* text of the prompt or all messages */
} srv_limits;

/* 0 on success; else the HTTP status (400), with the reason and the name of
 * the offending field (or "") in err/param. */
int  srv_req_parse(const char *body, size_t len, srv_kind kind, const srv_limits *lim, srv_req *out, char *err,
                   size_t err_cap, char *param, size_t param_cap);
void srv_req_free(srv_req *r);

/* --------------------------------------------------------------- chat.c */

typedef enum srv_tpl { SRV_TPL_PLAIN, SRV_TPL_CHATML, SRV_TPL_LLAMA2, SRV_TPL_LLAMA3, SRV_TPL_MISTRAL, SRV_TPL_ZEPHYR }
    srv_tpl;

/* The family of a template text (the GGUF's tokenizer.chat_template);
 * false when no family is recognised (*t is then SRV_TPL_PLAIN). */
bool        srv_tpl_detect(const char *text, size_t n, srv_tpl *t);
bool        srv_tpl_from_name(const char *name, srv_tpl *t);
const char *srv_tpl_name(srv_tpl t);

/* A rendered conversation: markup segments (special tokens such as
 * <|im_start|> are parsed in them) and content segments (parsed as plain
 * text, so a message cannot forge a role). */
typedef struct srv_seg { size_t off, n; bool special; } srv_seg;
typedef struct srv_render {
    char *buf;
    size_t len, cap;
    srv_seg *seg;
    int n_seg, cap_seg;
} srv_render;

/* 0 on success, else 400 with the reason in err. */
int  srv_chat_render(srv_tpl t, const srv_msg *msgs, int n, srv_render *out, char *err, size_t err_cap);
void srv_render_free(srv_render *r);

/* -------------------------------------------------------------- sched.c */

typedef enum srv_finish { SRV_RUNNING, SRV_FIN_STOP, SRV_FIN_LENGTH, SRV_FIN_ERROR } srv_finish;

typedef struct srv_session srv_session;

typedef struct srv_job {
    /* set before submission, read-only afterwards; freed with the job */
    srv_req req;
    kvq_token *prompt;
    int n_prompt, max_tokens;
    char spec[256];
    char session_id[33];       /* "" : a new session */
    /* the scheduler's own */
    srv_session *s;
    kvq_sampler *smp;
    float *logits;
    int fed;                   /* prompt tokens evaluated */
    kvq_token next, prev;
    uint64_t reserve;          /* bytes this job reserved in the budget */
    /* shared, under srv.mu */
    cli_text out;              /* generated text; out.safe: what can be sent (no partial stop string or UTF-8) */
    int n_gen, n_reused;
    srv_finish finish;
    bool cancelled;            /* the client went away */
    int http_status;           /* a refusal before any output: 429, 503 */
    const char *code;          /* the OpenAI error code of a refusal at admission, or NULL */
    char err[256];
    char id_out[33];           /* the session id the reply names */
    int refs;                  /* HTTP side + scheduler: freed by the last srv_release */
    double t_submit, t_first, t_last, itl_max;
} srv_job;

typedef struct srv_opts {
    const char *spec;          /* the default KV spec */
    int n_ctx, parallel, chunk, n_threads, queue;
    uint64_t kv_memory;
    const char *session_dir;
    double timeout;            /* seconds per request */
    int idle_sessions;         /* idle sessions kept in memory */
} srv_opts;

typedef struct srv_metrics {
    uint64_t requests[7];      /* by status: 2xx, 400, 401, 404, 429, other 4xx, 5xx */
    uint64_t prompt_tokens, prompt_reused, gen_tokens, passes, rows, sessions_saved, sessions_loaded;
    double tps;                /* generated tokens/s over the recent window */
} srv_metrics;

typedef struct srv srv;

srv *srv_new(kvq_model *m, const srv_opts *o, char *err, size_t err_cap);
void srv_free(srv *s);
/* Runs until srv_stop; in-flight jobs end, sessions are saved. */
void *srv_run(void *srv);
void srv_stop(srv *s);
/* Admission: 0 with the job queued, or an HTTP status (job->err says why). */
int  srv_submit(srv *s, srv_job *j);
/* Under srv_lock: waits until the job has text past `seen` bytes or ends,
 * or half a second passes (the caller checks its client is still there).
 * Called by the HTTP threads. */
void srv_wait(srv *s, srv_job *j, size_t seen);
/* A job with refs = 2 (the HTTP side's and the scheduler's). */
srv_job *srv_job_new(srv *s);
/* After srv_run returned: waits up to `seconds` for the HTTP side to let go
 * of every job (the rest of a stream being sent). */
void srv_drain(srv *s, double seconds);
void srv_lock(srv *s);
void srv_unlock(srv *s);
/* The HTTP side is done with the job (it is cancelled if still running). */
void srv_release(srv *s, srv_job *j);
const kvq_model *srv_model(const srv *s);
srv_tpl srv_template(const srv *s);
void srv_set_template(srv *s, srv_tpl t);
bool srv_stopping(srv *s);
const srv_opts *srv_options(const srv *s);
/* Prometheus text into a malloc'd string. */
char *srv_metrics_text(srv *s);
void  srv_count_status(srv *s, int http_status);
/* A fresh random session id (32 hex digits). */
void srv_new_id(char out[33]);
bool srv_id_valid(const char *id);

/* --------------------------------------------------------------- http.c */

typedef struct srv_http_opts {
    const char *host;
    int port;
    const char *api_key;
    const char *model_id;
    size_t max_body;
    srv_limits lim;
} srv_http_opts;

typedef struct srv_http srv_http;
srv_http *srv_http_start(srv *s, const srv_http_opts *o, char *err, size_t err_cap);
void      srv_http_stop(srv_http *h);

#endif
