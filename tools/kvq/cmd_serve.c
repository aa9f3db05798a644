/* kvq serve: options, start, and a graceful stop on SIGTERM/SIGINT. The
 * server itself is tools/kvq/serve/. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"
#include "serve/serve.h"

/* The model's chat template family, or the plain fallback (said once). */
static srv_tpl pick_template(const kvq_model *m, const char *forced, bool *ok) {
    srv_tpl t = SRV_TPL_PLAIN;
    *ok = true;
    if (forced) {
        if (!srv_tpl_from_name(forced, &t)) {
            *ok = false;
            cli_fail("--chat-template '%s': one of plain, chatml, llama2, llama3, mistral, zephyr", forced);
        }
        return t;
    }
    const char *text;
    size_t n;
    if (kvq_model_meta_str(m, "tokenizer.chat_template", &text, &n)) {
        fprintf(stderr, "kvq serve: the model has no chat template; /v1/chat/completions uses the plain transcript "
                        "(--chat-template NAME to choose one)\n");
    } else if (!srv_tpl_detect(text, n, &t)) {
        fprintf(stderr, "kvq serve: the model's chat template is of no family kvq knows; /v1/chat/completions uses the "
                        "plain transcript (--chat-template chatml|llama2|llama3|mistral|zephyr to choose one)\n");
    }
    return t;
}

/* SIGTERM / SIGINT reach a handler that writes the signal's number to a
 * pipe, and a thread of its own reads it and stops the scheduler. Blocking
 * the signals and calling sigwait is not enough here: libraries start
 * threads before main (OpenBLAS's pool) with the signals unblocked, and the
 * kernel may pick one of them, whose default action ends the process, unless
 * the thread in sigwait is the main one (it is the scheduler). The pipe's
 * write end is the one piece of global state: a handler receives no
 * argument. */
static int g_sig_fd = -1;

static void on_signal(int sig) {
    const unsigned char c = (unsigned char)sig;
    const ssize_t r = write(g_sig_fd, &c, 1);
    (void)r;
}

typedef struct sig_wait { srv *s; int fd; bool session_dir; } sig_wait;

static void *wait_signal(void *arg) {
    sig_wait *w = arg;
    unsigned char c = 0;
    while (read(w->fd, &c, 1) < 0 && errno == EINTR) {}
    fprintf(stderr, "kvq serve: %s: finishing requests in flight%s\n", c == SIGTERM ? "SIGTERM" : "SIGINT",
            w->session_dir ? " and saving sessions" : "");
    srv_stop(w->s);
    return NULL;
}

int cmd_serve(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *host = "127.0.0.1", *kv = "f16", *session_dir = NULL, *tpl_name = NULL;
    const char *api_key = getenv("KVQ_API_KEY"), *model_id = NULL;
    long port = 8080, n_ctx = 0, parallel = 4, chunk = 128, threads = 0, queue = 16, max_tokens = 4096, idle = 64;
    long verbose = 0;
    double timeout = 600;
    uint64_t kv_mem = 0, max_body = 4u << 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        bool ok = true;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) ok = cli_int(a, v, 1, 65535, &port);
        else if (!strcmp(a, "--kv")) kv = v;
        else if (!strcmp(a, "--ctx")) ok = cli_int(a, v, 16, 1 << 24, &n_ctx);
        else if (!strcmp(a, "--kv-memory")) ok = cli_bytes(a, v, &kv_mem);
        else if (!strcmp(a, "--parallel")) ok = cli_int(a, v, 1, 256, &parallel);
        else if (!strcmp(a, "--chunk")) ok = cli_int(a, v, 1, 4096, &chunk);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) ok = cli_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--queue")) ok = cli_int(a, v, 0, 4096, &queue);
        else if (!strcmp(a, "--max-tokens")) ok = cli_int(a, v, 1, 1 << 24, &max_tokens);
        else if (!strcmp(a, "--max-body")) ok = cli_bytes(a, v, &max_body);
        else if (!strcmp(a, "--timeout")) ok = cli_float(a, v, 1, 86400, &timeout);
        else if (!strcmp(a, "--idle-sessions")) ok = cli_int(a, v, 0, 100000, &idle);
        else if (!strcmp(a, "--api-key")) api_key = v;
        else if (!strcmp(a, "--session-dir")) session_dir = v;
        else if (!strcmp(a, "--chat-template")) tpl_name = v;
        else if (!strcmp(a, "--model-id")) model_id = v;
        else return cli_fail("serve: unknown option '%s' (kvq serve --help)", a);
        if (!ok) return 2;
    }
    if (!model) return cli_fail("serve: -m MODEL is required");
    if (api_key && !*api_key) return cli_fail("serve: --api-key is empty");
    if (max_body < 1024) return cli_fail("serve: --max-body must be at least 1K");
    if (session_dir) {
        struct stat st;
        if (stat(session_dir, &st) || !S_ISDIR(st.st_mode) || access(session_dir, W_OK | X_OK))
            return cli_fail("serve: --session-dir '%s' is not a writable directory", session_dir);
    }
    int sig_pipe[2];
    if (pipe(sig_pipe)) return cli_fail("serve: cannot create a pipe: %s", strerror(errno));
    g_sig_fd = sig_pipe[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up is an error on its connection, not the end of the server */
    cli_log lg = {(int)verbose};
    kvq_model *m = cli_load_model(model, tok, false, &lg);
    if (!m) return 1;
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    if (!n_ctx) n_ctx = info.n_ctx_train;
    if (chunk > n_ctx) chunk = n_ctx;
    bool tpl_ok;
    srv_tpl tpl = pick_template(m, tpl_name, &tpl_ok);
    if (!tpl_ok) return kvq_model_free(m), 2;
    if (!kv_mem) { /* room for every parallel sequence at a full context, and as much again for idle sessions */
        kvq_kv_report r;
        char e[256] = "";
        if (kvq_kv_describe(m, kv, (int)n_ctx, &r, e, sizeof e)) {
            kvq_model_free(m);
            return cli_fail("serve: --kv '%s': %s", kv, e);
        }
        kv_mem = 2 * (uint64_t)parallel * r.bytes_alloc_max;
    }
    srv_opts so = {.spec = kv, .n_ctx = (int)n_ctx, .parallel = (int)parallel, .chunk = (int)chunk,
                   .n_threads = (int)threads, .queue = (int)queue, .kv_memory = kv_mem, .session_dir = session_dir,
                   .timeout = timeout, .idle_sessions = (int)idle};
    char err[512];
    srv *s = srv_new(m, &so, err, sizeof err);
    if (!s) {
        kvq_model_free(m);
        return cli_fail("serve: %s", err);
    }
    srv_set_template(s, tpl);
    char id[256];
    if (model_id) snprintf(id, sizeof id, "%s", model_id);
    else {
        const char *b = strrchr(model, '/');
        snprintf(id, sizeof id, "%s", b && b[1] ? b + 1 : model);
    }
    srv_http_opts ho = {.host = host, .port = (int)port, .api_key = api_key, .model_id = id, .max_body = max_body,
                        .lim = {.max_tokens = (int)max_tokens, .max_prompt_bytes = max_body}};
    srv_http *h = srv_http_start(s, &ho, err, sizeof err);
    if (!h) {
        srv_free(s);
        kvq_model_free(m);
        return cli_fail("serve: %s", err);
    }
    char mem[32];
    cli_human_bytes((double)kv_mem, mem, sizeof mem);
    fprintf(stderr, "kvq serve: http://%s:%ld  model '%s', kv %s, ctx %ld, parallel %ld, kv-memory %s, chat template %s%s\n",
            host, port, id, kv, n_ctx, parallel, mem, srv_tpl_name(tpl), api_key ? ", API key required" : "");
    /* The scheduler runs on this thread, the one whose OpenMP team loaded
     * (and repacked) the model: a second thread with its own team would
     * leave libgomp with more threads than cores, and then its workers sleep
     * at every barrier instead of spinning (a futex round trip per parallel
     * region, ~130 per token: one sequence decoded 30% slower). Signals are
     * awaited on a thread of their own. */
    sig_wait w = {.s = s, .fd = sig_pipe[0], .session_dir = session_dir != NULL};
    pthread_t th;
    if (pthread_create(&th, NULL, wait_signal, &w)) {
        srv_http_stop(h);
        srv_free(s);
        kvq_model_free(m);
        return cli_fail("serve: cannot start the signal thread");
    }
    srv_run(s); /* returns once a signal stopped it and the requests in flight finished */
    pthread_join(th, NULL);
    close(sig_pipe[0]);
    srv_drain(s, 30); /* the streams finish sending what was generated */
    srv_http_stop(h);
    srv_free(s);
    kvq_model_free(m);
    fprintf(stderr, "kvq serve: stopped\n");
    return 0;
}
