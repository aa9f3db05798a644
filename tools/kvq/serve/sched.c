/* The scheduler: one thread that owns every context and runs one
 * kvq_batch_eval per step over all active requests, so decode reads the
 * weights once per step however many streams run (continuous batching).
 * Prompts are prefilled in chunks of at most `chunk` tokens per step beside
 * the decode tokens, so a long prompt does not stall the streams.
 *
 * Memory: every request reserves, at admission, the KV bytes its context can
 * reach (kvq_kv_describe's allocation bound at prompt + max_tokens); a
 * request that cannot fit even after idle sessions are evicted is refused
 * with 429. The shared kvq_kv_pool is the hard cap underneath.
 *
 * Sessions: a finished request leaves its context idle under its session
 * id; the next request naming that id reuses the longest common prefix of
 * its prompt. Idle sessions are saved to --session-dir (when given) after
 * each request and on eviction and shutdown, and restored from it by any
 * replica sharing the directory. */
#include <errno.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include "../cli.h"
#include "serve.h"

struct srv_session {
    char id[33];
    char spec[256];
    kvq_ctx *ctx;
    uint64_t reserved;
    double last_used;
    bool busy;
    srv_session *next;
};

#define N_FIT 4

struct srv {
    kvq_model *m;
    srv_opts o;
    char spec[256];
    srv_tpl tpl;
    kvq_kv_pool *pool;
    kvq_batch *batch;
    cli_log lg;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_out;
    srv_job **queue, **active;
    int n_queue, n_active;
    srv_session *sessions;
    int n_jobs;          /* jobs not yet freed */
    uint64_t reserved;
    bool stopping;
    double stop_t;
    srv_metrics mt;
    double tps_t0;
    uint64_t tps_tok0;
    kvq_batch_item *items;
    srv_job **item_job;
    /* how many more sessions of a full context fit, per spec */
    const char *fit_spec[N_FIT];
    uint64_t fit_bytes[N_FIT];
};

static void logf_(srv *s, kvq_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(srv *s, kvq_log_level lvl, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cli_log_cb(&s->lg, lvl, buf);
}

void srv_new_id(char out[33]) {
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t k = getrandom(r + got, sizeof r - got, 0);
        if (k > 0) got += (size_t)k;
        else if (errno != EINTR) break;
    }
    if (got < sizeof r) { /* no kernel randomness: ids are then guessable, so say nothing works */
        memset(out, '0', 32);
    } else {
        for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", r[i]);
    }
    out[32] = 0;
}

bool srv_id_valid(const char *id) {
    if (!id || strlen(id) != 32) return false;
    for (int i = 0; i < 32; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return false;
    return strspn(id, "0") != 32;
}

static uint64_t alloc_bound(const kvq_model *m, const char *spec, int n) {
    kvq_kv_report r;
    if (kvq_kv_describe(m, spec, n, &r, NULL, 0)) return UINT64_MAX;
    return r.bytes_alloc_max;
}

srv *srv_new(kvq_model *m, const srv_opts *o, char *err, size_t err_cap) {
    srv *s = calloc(1, sizeof *s);
    if (!s) return snprintf(err, err_cap, "out of memory"), NULL;
    s->m = m;
    s->o = *o;
    snprintf(s->spec, sizeof s->spec, "%s", o->spec);
    s->o.spec = s->spec;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv_work, NULL);
    pthread_cond_init(&s->cv_out, NULL);
    kvq_kv_report r;
    char e[256] = "";
    if (kvq_kv_describe(m, o->spec, o->n_ctx, &r, e, sizeof e)) {
        snprintf(err, err_cap, "--kv '%s': %s", o->spec, e);
        srv_free(s);
        return NULL;
    }
    if (r.bytes_alloc_max > o->kv_memory) {
        char a[32], b[32];
        cli_human_bytes((double)r.bytes_alloc_max, a, sizeof a);
        cli_human_bytes((double)o->kv_memory, b, sizeof b);
        snprintf(err, err_cap, "--kv-memory %s cannot hold one context of %d tokens with '%s' (%s)", b, o->n_ctx,
                 o->spec, a);
        srv_free(s);
        return NULL;
    }
    kvq_batch_params bp = kvq_batch_default_params();
    bp.n_tokens = o->chunk + o->parallel;
    bp.n_seqs = o->parallel;
    bp.n_threads = o->n_threads;
    bp.log = cli_log_cb;
    bp.log_user = &s->lg;
    /* admission counts active and queued together: all may be queued before the scheduler runs */
    s->queue = calloc((size_t)o->queue + (size_t)o->parallel, sizeof *s->queue);
    s->active = calloc((size_t)o->parallel, sizeof *s->active);
    s->items = calloc((size_t)o->parallel, sizeof *s->items);
    s->item_job = calloc((size_t)o->parallel, sizeof *s->item_job);
    if (!s->queue || !s->active || !s->items || !s->item_job || kvq_kv_pool_new(o->kv_memory, &s->pool) ||
        kvq_batch_new(m, &bp, &s->batch)) {
        snprintf(err, err_cap, "out of memory for %d parallel sequences", o->parallel);
        srv_free(s);
        return NULL;
    }
    const char *fit[N_FIT] = {s->spec, "f16", "kivi:k4v2", "kivi:k2v2+rocket:budget=512"};
    for (int i = 0; i < N_FIT; i++) {
        s->fit_spec[i] = fit[i];
        s->fit_bytes[i] = alloc_bound(m, fit[i], o->n_ctx);
    }
    s->tps_t0 = cli_now();
    return s;
}

static void session_free(srv_session *x) {
    if (!x) return;
    kvq_ctx_free(x->ctx);
    free(x);
}

void srv_free(srv *s) {
    if (!s) return;
    for (srv_session *x = s->sessions, *n; x; x = n) {
        n = x->next;
        session_free(x);
    }
    kvq_batch_free(s->batch);
    kvq_kv_pool_free(s->pool);
    free(s->queue);
    free(s->active);
    free(s->items);
    free(s->item_job);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv_work);
    pthread_cond_destroy(&s->cv_out);
    free(s);
}

void srv_lock(srv *s) { pthread_mutex_lock(&s->mu); }
void srv_unlock(srv *s) { pthread_mutex_unlock(&s->mu); }
const kvq_model *srv_model(const srv *s) { return s->m; }
srv_tpl srv_template(const srv *s) { return s->tpl; }
void srv_set_template(srv *s, srv_tpl t) { s->tpl = t; }
const srv_opts *srv_options(const srv *s) { return &s->o; }

bool srv_stopping(srv *s) {
    srv_lock(s);
    bool r = s->stopping;
    srv_unlock(s);
    return r;
}

void srv_stop(srv *s) {
    srv_lock(s);
    if (!s->stopping) s->stop_t = cli_now();
    s->stopping = true;
    pthread_cond_broadcast(&s->cv_work);
    pthread_cond_broadcast(&s->cv_out);
    srv_unlock(s);
}

srv_job *srv_job_new(srv *s) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->refs = 2;
    srv_lock(s);
    s->n_jobs++;
    srv_unlock(s);
    return j;
}

void srv_drain(srv *s, double seconds) {
    const double end = cli_now() + seconds;
    srv_lock(s);
    while (s->n_jobs > 0 && cli_now() < end) {
        srv_unlock(s);
        usleep(10000);
        srv_lock(s);
    }
    srv_unlock(s);
}

static void job_free(srv_job *j) {
    srv_req_free(&j->req);
    kvq_sampler_free(j->smp);
    free(j->prompt);
    free(j->logits);
    cli_text_free(&j->out);
    free(j);
}

/* Under the lock. */
static void job_unref(srv *s, srv_job *j) {
    if (--j->refs == 0) {
        job_free(j);
        s->n_jobs--;
    }
}

void srv_release(srv *s, srv_job *j) {
    srv_lock(s);
    if (j->finish == SRV_RUNNING) j->cancelled = true;
    job_unref(s, j);
    pthread_cond_broadcast(&s->cv_work);
    srv_unlock(s);
}

void srv_wait(srv *s, srv_job *j, size_t seen) {
    if (j->out.safe > seen || j->finish != SRV_RUNNING) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 500000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&s->cv_out, &s->mu, &ts);
}

void srv_count_status(srv *s, int st) {
    int k = st < 300 ? 0 : st == 400 ? 1 : st == 401 ? 2 : st == 404 ? 3 : st == 429 ? 4 : st < 500 ? 5 : 6;
    srv_lock(s);
    s->mt.requests[k]++;
    srv_unlock(s);
}

static void session_path(const srv *s, const char *id, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s.kvqs", s->o.session_dir, id);
}

/* Writes a session file whole or not at all: a replica reading the
 * directory never sees half a file. */
static void session_save(srv *s, srv_session *x) {
    if (!s->o.session_dir || !x->ctx || kvq_ctx_n_past(x->ctx) == 0) return;
    char path[4096], tmp[4200];
    session_path(s, x->id, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    if (kvq_ctx_save(x->ctx, tmp) == KVQ_OK && rename(tmp, path) == 0) {
        s->mt.sessions_saved++;
    } else {
        unlink(tmp);
        logf_(s, KVQ_LOG_WARN, "serve: could not save session %s to %s", x->id, s->o.session_dir);
    }
}

/* Under the lock: saves (with a session directory) and frees one session. */
static void evict(srv *s, srv_session *x) {
    for (srv_session **p = &s->sessions; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            break;
        }
    session_save(s, x);
    s->reserved -= x->reserved;
    session_free(x);
}

/* Under the lock: evicts the least recently used idle session but keep.
 * False when none is idle. */
static bool evict_one(srv *s, const srv_session *keep) {
    srv_session *best = NULL;
    for (srv_session *x = s->sessions; x; x = x->next)
        if (!x->busy && x != keep && (!best || x->last_used < best->last_used)) best = x;
    if (!best) return false;
    evict(s, best);
    return true;
}

static srv_session *session_find(srv *s, const char *id) {
    for (srv_session *x = s->sessions; x; x = x->next)
        if (!strcmp(x->id, id)) return x;
    return NULL;
}

int srv_submit(srv *s, srv_job *j) {
    srv_lock(s);
    int st = 0;
    srv_session *x = j->session_id[0] ? session_find(s, j->session_id) : NULL;
    if (x && x->busy) { /* the conversation is already running: this request forks it under a new id */
        j->session_id[0] = 0;
        x = NULL;
    } else if (x && strcmp(x->spec, j->spec)) {
        /* another KV spec: the session goes through its file (converted on restore) or starts afresh */
        evict(s, x);
        x = NULL;
    }
    const int n_need = j->n_prompt + j->max_tokens < s->o.n_ctx ? j->n_prompt + j->max_tokens : s->o.n_ctx;
    const uint64_t need = alloc_bound(s->m, j->spec, n_need), credit = x ? x->reserved : 0;
    if (s->stopping) {
        st = 503;
        snprintf(j->err, sizeof j->err, "the server is shutting down");
    } else if (s->n_active + s->n_queue >= s->o.parallel + s->o.queue) {
        st = 429;
        j->code = "server_busy";
        snprintf(j->err, sizeof j->err, "all %d sequences and %d queue places are taken", s->o.parallel, s->o.queue);
    } else {
        while (s->reserved - credit + need > s->o.kv_memory && evict_one(s, x)) {}
        if (s->reserved - credit + need > s->o.kv_memory) {
            char a[32], b[32];
            cli_human_bytes((double)need, a, sizeof a);
            cli_human_bytes((double)(s->o.kv_memory - (s->reserved - credit)), b, sizeof b);
            st = 429;
            j->code = "kv_memory_full";
            snprintf(j->err, sizeof j->err, "KV memory is full: this request needs %s of KV cache, %s is free", a, b);
        }
    }
    if (st) j->refs = 1; /* the scheduler never sees it */
    else {
        s->reserved = s->reserved - credit + need;
        j->reserve = need;
        if (x) {
            x->busy = true;
            x->reserved = need;
            j->s = x;
        }
        j->t_submit = cli_now();
        s->queue[s->n_queue++] = j;
        pthread_cond_signal(&s->cv_work);
    }
    srv_unlock(s);
    return st;
}

/* ---- the scheduler thread ---- */

static void finish(srv *s, srv_job *j, srv_finish f, const char *err) {
    if (j->finish) return;
    j->finish = f;
    if (err) snprintf(j->err, sizeof j->err, "%s", err);
    /* what was held back (a possible stop string) goes out now; a trailing partial character is dropped */
    cli_text_finish(&j->out);
}

/* Sets up a job taken from the queue: its context (a session's, restored,
 * or new), the reused prefix and its sampler. Lock not held. */
static bool activate(srv *s, srv_job *j, char *err, size_t cap) {
    const kvq_model *m = s->m;
    srv_session *x = j->s;
    if (!x) {
        x = calloc(1, sizeof *x);
        if (!x) return snprintf(err, cap, "out of memory"), false;
        kvq_ctx_params cp = kvq_ctx_default_params();
        cp.n_ctx = s->o.n_ctx;
        cp.n_batch = s->o.chunk;
        cp.n_threads = s->o.n_threads;
        cp.kv_spec = j->spec;
        cp.kv_pool = s->pool;
        cp.log = cli_log_cb;
        cp.log_user = &s->lg;
        if (kvq_ctx_new(m, &cp, &x->ctx)) {
            free(x);
            return snprintf(err, cap, "could not create a context with KV '%.160s'", j->spec), false;
        }
        snprintf(x->spec, sizeof x->spec, "%s", j->spec);
        x->busy = true;
        x->reserved = j->reserve;
        bool restored = false;
        if (j->session_id[0] && s->o.session_dir) {
            char path[4096];
            session_path(s, j->session_id, path, sizeof path);
            if (access(path, R_OK) == 0) {
                restored = kvq_ctx_load(x->ctx, path) == KVQ_OK;
                if (!restored) logf_(s, KVQ_LOG_WARN, "serve: session file %s was refused; starting afresh", path);
            }
        }
        srv_lock(s);
        /* a client may propose the id of a new conversation (so a proxy can
         * route its first turn by it): its 128 bits are then the client's to
         * choose well. An id already live here (two requests at once on one
         * conversation) gets a fresh one: the second forks. */
        if (j->session_id[0] && !session_find(s, j->session_id)) snprintf(x->id, sizeof x->id, "%s", j->session_id);
        else srv_new_id(x->id);
        if (restored) s->mt.sessions_loaded++;
        x->next = s->sessions;
        s->sessions = x;
        j->s = x;
        srv_unlock(s);
    }
    srv_lock(s);
    snprintf(j->id_out, sizeof j->id_out, "%s", x->id);
    srv_unlock(s);
    /* the longest common prefix is kept; the last prompt token is always run, for its logits */
    const kvq_token *have;
    int n_have = kvq_ctx_tokens(x->ctx, &have), l = 0;
    while (l < n_have && l < j->n_prompt - 1 && have[l] == j->prompt[l]) l++;
    if (l < n_have && kvq_ctx_truncate(x->ctx, l) != KVQ_OK) {
        /* a cache that cannot drop its tail (an evicting policy, say): start over */
        if (kvq_ctx_truncate(x->ctx, 0) != KVQ_OK) return snprintf(err, cap, "could not reset the session"), false;
        l = 0;
    }
    j->fed = l;
    j->n_reused = l;
    kvq_sampler_params sp = kvq_sampler_default_params();
    sp.temp = (float)j->req.temperature;
    sp.top_k = 0;
    sp.top_p = (float)j->req.top_p;
    if (j->req.has_seed) sp.seed = j->req.seed;
    else getrandom(&sp.seed, sizeof sp.seed, 0);
    j->logits = malloc((size_t)kvq_vocab_size(m) * sizeof(float));
    if (!j->logits || kvq_sampler_new(&sp, kvq_vocab_size(m), &j->smp))
        return snprintf(err, cap, "out of memory"), false;
    j->prev = l > 0 ? j->prompt[l - 1] : -1;
    return true;
}

/* Lock held. A job leaves the active set: its session goes idle, with its
 * reservation shrunk to what it holds. */
static void retire(srv *s, srv_job *j) {
    srv_session *x = j->s;
    if (x) {
        x->busy = false;
        x->last_used = cli_now();
        kvq_kv_report r;
        if (x->ctx && kvq_ctx_kv_report(x->ctx, &r) == KVQ_OK) {
            s->reserved = s->reserved - x->reserved + r.bytes_allocated;
            x->reserved = r.bytes_allocated;
        }
        session_save(s, x);
        snprintf(j->id_out, sizeof j->id_out, "%s", x->id);
    } else {
        s->reserved -= j->reserve;
    }
    int idle = 0;
    for (srv_session *y = s->sessions; y; y = y->next) idle += !y->busy;
    while (idle-- > s->o.idle_sessions && evict_one(s, NULL)) {}
    pthread_cond_broadcast(&s->cv_out);
    job_unref(s, j);
}

/* Lock held: a sampled token goes into the job's text, or ends it. */
static void take_token(srv *s, srv_job *j, kvq_token t, double now) {
    if (!j->t_first) j->t_first = now;
    else if (now - j->t_last > j->itl_max) j->itl_max = now - j->t_last;
    j->t_last = now;
    if (kvq_token_is_eog(s->m, t)) return finish(s, j, SRV_FIN_STOP, NULL);
    char piece[256];
    int n = kvq_token_to_piece(s->m, j->prev, t, piece, sizeof piece);
    j->prev = t;
    j->n_gen++;
    s->mt.gen_tokens++;
    if (n > 0 && !cli_text_add(&j->out, piece, (size_t)(n < (int)sizeof piece ? n : (int)sizeof piece)))
        return finish(s, j, SRV_FIN_ERROR, "out of memory");
    if (cli_text_scan(&j->out, j->req.stop, j->req.n_stop)) return finish(s, j, SRV_FIN_STOP, NULL);
    if (j->n_gen >= j->max_tokens || kvq_ctx_n_past(j->s->ctx) + 1 > kvq_ctx_n_ctx(j->s->ctx))
        return finish(s, j, SRV_FIN_LENGTH, NULL);
    j->next = t;
}

void *srv_run(void *arg) {
    srv *s = arg;
    srv_lock(s);
    for (;;) {
        const double now = cli_now();
        /* ends: cancelled, timed out, or cut short by a shutdown that has waited long enough */
        for (int i = 0; i < s->n_active; i++) {
            srv_job *j = s->active[i];
            if (j->cancelled) finish(s, j, SRV_FIN_ERROR, "the client went away");
            else if (now - j->t_submit > s->o.timeout) finish(s, j, SRV_FIN_ERROR, "the request time limit was reached");
            else if (s->stopping && now - s->stop_t > s->o.timeout) finish(s, j, SRV_FIN_ERROR, "the server is shutting down");
            if (j->finish) {
                s->active[i--] = s->active[--s->n_active];
                retire(s, j);
            }
        }
        if (s->stopping)
            while (s->n_queue) {
                srv_job *j = s->queue[--s->n_queue];
                j->http_status = 503;
                finish(s, j, SRV_FIN_ERROR, "the server is shutting down");
                retire(s, j);
            }
        while (s->n_queue && s->n_active < s->o.parallel) {
            /* popped only once set up: while the lock is released for that, the
             * job must still count against --parallel + --queue (submitters only
             * append, so queue[0] stays put) */
            srv_job *j = s->queue[0];
            srv_unlock(s);
            char err[256];
            bool ok = activate(s, j, err, sizeof err);
            srv_lock(s);
            memmove(s->queue, s->queue + 1, (size_t)--s->n_queue * sizeof *s->queue);
            if (!ok) {
                finish(s, j, SRV_FIN_ERROR, err);
                retire(s, j);
                continue;
            }
            s->mt.prompt_reused += (uint64_t)j->n_reused;
            s->mt.prompt_tokens += (uint64_t)j->n_prompt;
            s->active[s->n_active++] = j;
        }
        if (!s->n_active) {
            if (s->stopping) break;
            pthread_cond_wait(&s->cv_work, &s->mu);
            continue;
        }
        /* one step: a decode token per stream, prompt chunks up to the budget */
        int ni = 0, budget = s->o.chunk;
        for (int i = 0; i < s->n_active; i++) {
            srv_job *j = s->active[i];
            kvq_batch_item it = {.ctx = j->s->ctx, .logits = j->logits};
            if (j->fed < j->n_prompt) {
                int k = j->n_prompt - j->fed;
                if (k > budget) k = budget;
                if (k <= 0) continue;
                budget -= k;
                it.tokens = j->prompt + j->fed;
                it.n = k;
                it.prompt_end = j->fed + k == j->n_prompt;
                if (!it.prompt_end) it.logits = NULL;
            } else {
                it.tokens = &j->next;
                it.n = 1;
            }
            s->item_job[ni] = j;
            s->items[ni++] = it;
        }
        srv_unlock(s);
        kvq_batch_eval(s->batch, s->items, ni);
        kvq_token tok[ni > 0 ? ni : 1];
        /* each job samples from its own logits with its own sampler: the jobs
         * share the cores (a 128K vocabulary costs ~1 ms a token) */
#pragma omp parallel for schedule(dynamic, 1) num_threads(s->o.n_threads > 0 ? s->o.n_threads : omp_get_num_procs()) if (ni > 1)
        for (int i = 0; i < ni; i++)
            tok[i] = !s->items[i].status && s->items[i].logits ? kvq_sample(s->item_job[i]->smp, s->items[i].logits) : -1;
        srv_lock(s);
        const double t = cli_now();
        s->mt.passes++;
        for (int i = 0; i < ni; i++) {
            srv_job *j = s->item_job[i];
            const kvq_batch_item *it = &s->items[i];
            s->mt.rows += (uint64_t)it->n;
            if (it->status == KVQ_ERR_CONTEXT_FULL) {
                finish(s, j, SRV_FIN_LENGTH, NULL);
            } else if (it->status) {
                finish(s, j, SRV_FIN_ERROR, kvq_status_str(it->status));
            } else {
                if (j->fed < j->n_prompt) j->fed += it->n;
                if (tok[i] >= 0) take_token(s, j, tok[i], t);
            }
        }
        if (t - s->tps_t0 >= 2.0) {
            s->mt.tps = (double)(s->mt.gen_tokens - s->tps_tok0) / (t - s->tps_t0);
            s->tps_t0 = t;
            s->tps_tok0 = s->mt.gen_tokens;
        }
        pthread_cond_broadcast(&s->cv_out);
    }
    /* idle sessions go to disk, for this replica's restart or another's */
    for (srv_session *x = s->sessions; x; x = x->next) session_save(s, x);
    srv_unlock(s);
    return NULL;
}

char *srv_metrics_text(srv *s) {
    size_t cap = 8192, n = 0;
    char *b = malloc(cap);
    if (!b) return NULL;
#define P(...) n += (size_t)snprintf(b + n, n < cap ? cap - n : 0, __VA_ARGS__)
    srv_lock(s);
    const srv_metrics *m = &s->mt;
    static const char *const CODE[7] = {"2xx", "400", "401", "404", "429", "4xx", "5xx"};
    P("# HELP kvq_requests_total HTTP requests answered, by status.\n# TYPE kvq_requests_total counter\n");
    for (int i = 0; i < 7; i++) P("kvq_requests_total{code=\"%s\"} %llu\n", CODE[i], (unsigned long long)m->requests[i]);
    P("# TYPE kvq_prompt_tokens_total counter\nkvq_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    P("# HELP kvq_prompt_tokens_reused_total Prompt tokens found in a session's cache (not evaluated again).\n");
    P("# TYPE kvq_prompt_tokens_reused_total counter\nkvq_prompt_tokens_reused_total %llu\n", (unsigned long long)m->prompt_reused);
    P("# TYPE kvq_generated_tokens_total counter\nkvq_generated_tokens_total %llu\n", (unsigned long long)m->gen_tokens);
    P("# HELP kvq_tokens_per_second Generated tokens per second over the last 2 s or more.\n");
    P("# TYPE kvq_tokens_per_second gauge\nkvq_tokens_per_second %.2f\n", m->tps);
    P("# HELP kvq_batch_rows_total Rows (tokens) run in batched passes; / passes = mean batch.\n");
    P("# TYPE kvq_batch_passes_total counter\nkvq_batch_passes_total %llu\n", (unsigned long long)m->passes);
    P("# TYPE kvq_batch_rows_total counter\nkvq_batch_rows_total %llu\n", (unsigned long long)m->rows);
    P("# TYPE kvq_queue_depth gauge\nkvq_queue_depth %d\n", s->n_queue);
    P("# TYPE kvq_active_sequences gauge\nkvq_active_sequences %d\n", s->n_active);
    int idle = 0, all = 0;
    for (srv_session *x = s->sessions; x; x = x->next) all++, idle += !x->busy;
    P("# TYPE kvq_sessions gauge\nkvq_sessions{state=\"idle\"} %d\nkvq_sessions{state=\"busy\"} %d\n", idle, all - idle);
    P("# TYPE kvq_sessions_saved_total counter\nkvq_sessions_saved_total %llu\n", (unsigned long long)m->sessions_saved);
    P("# TYPE kvq_sessions_restored_total counter\nkvq_sessions_restored_total %llu\n", (unsigned long long)m->sessions_loaded);
    P("# HELP kvq_kv_bytes_used KV memory held by all sessions (pages and fixed buffers).\n");
    P("# TYPE kvq_kv_bytes_used gauge\nkvq_kv_bytes_used %llu\n", (unsigned long long)kvq_kv_pool_used(s->pool));
    P("# HELP kvq_kv_bytes_reserved KV memory promised to admitted requests and idle sessions.\n");
    P("# TYPE kvq_kv_bytes_reserved gauge\nkvq_kv_bytes_reserved %llu\n", (unsigned long long)s->reserved);
    P("# TYPE kvq_kv_bytes_limit gauge\nkvq_kv_bytes_limit %llu\n", (unsigned long long)s->o.kv_memory);
    P("# HELP kvq_sessions_fit More sessions of a full context (--ctx tokens) that fit now, by KV spec.\n");
    P("# TYPE kvq_sessions_fit gauge\n");
    const uint64_t free_b = s->o.kv_memory > s->reserved ? s->o.kv_memory - s->reserved : 0;
    for (int i = 0; i < N_FIT; i++)
        if (s->fit_bytes[i] != UINT64_MAX && s->fit_bytes[i] > 0)
            P("kvq_sessions_fit{kv=\"%s\",ctx=\"%d\"} %llu\n", s->fit_spec[i], s->o.n_ctx,
              (unsigned long long)(free_b / s->fit_bytes[i]));
    srv_unlock(s);
#undef P
    if (n >= cap) b[cap - 1] = 0;
    return b;
}
