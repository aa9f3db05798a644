#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void cli_log_cb(void *user, kvq_log_level lvl, const char *msg) {
    const cli_log *l = user;
    int v = l ? l->verbosity : 0;
    if (lvl == KVQ_LOG_DEBUG && v < 2) return;
    if (lvl == KVQ_LOG_INFO && v < 1) return;
    static const char *tag[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "kvq: %s: %s\n", tag[lvl], msg);
}

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvq: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

bool cli_int(const char *flag, const char *v, long lo, long hi, long *out) {
    char *e;
    errno = 0;
    long x = strtol(v, &e, 10);
    if (!*v || *e || errno || x < lo || x > hi) {
        cli_fail("%s expects an integer in [%ld, %ld], got '%s'", flag, lo, hi, v);
        return false;
    }
    *out = x;
    return true;
}

bool cli_float(const char *flag, const char *v, double lo, double hi, double *out) {
    char *e;
    errno = 0;
    double x = strtod(v, &e);
    if (!*v || *e || errno || !isfinite(x) || x < lo || x > hi) {
        cli_fail("%s expects a number in [%g, %g], got '%s'", flag, lo, hi, v);
        return false;
    }
    *out = x;
    return true;
}

bool cli_bytes(const char *flag, const char *v, uint64_t *out) {
    char *e;
    errno = 0;
    double x = strtod(v, &e);
    double mul = 1;
    if (*e && !e[1]) {
        switch (*e) {
        case 'k': case 'K': mul = 1024.0; e++; break;
        case 'm': case 'M': mul = 1024.0 * 1024; e++; break;
        case 'g': case 'G': mul = 1024.0 * 1024 * 1024; e++; break;
        case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; e++; break;
        }
    }
    if (!*v || *e || errno || !isfinite(x) || x < 1 || x * mul > 1.8e19) {
        cli_fail("%s expects a byte count such as 123456, 512M or 2G, got '%s'", flag, v);
        return false;
    }
    *out = (uint64_t)(x * mul);
    return true;
}

const char *cli_val(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        /* argv[0] is the command: its usage text tells a missing value from an unknown option */
        if (cli_cmd_has_flag(argv[0], argv[*i])) cli_fail("option %s needs a value", argv[*i]);
        else cli_fail("unknown option '%s' for kvq %s (kvq %s --help lists them)", argv[*i], argv[0], argv[0]);
        return NULL;
    }
    return argv[++*i];
}

kvq_model *cli_load_model(const char *path, const char *tok, bool vocab_only, cli_log *lg) {
    kvq_model_params mp = kvq_model_default_params();
    mp.path = path;
    mp.tokenizer_path = tok;
    mp.vocab_only = vocab_only;
    const char *rp = getenv("KVQ_REPACK"); /* 0: products read the file's layout (A/B runs, debugging) */
    mp.no_repack = rp && !strcmp(rp, "0");
    mp.log = cli_log_cb;
    mp.log_user = lg;
    kvq_model *m = NULL;
    if (kvq_model_load(&mp, &m)) cli_fail("cannot load model '%s'", path);
    return m;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* VmHWM, which cli_reset_peak_rss can reset (getrusage's maximum cannot be) */
uint64_t cli_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    if (kb) return kb * 1024;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_maxrss * 1024;
}

bool cli_reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return false;
    const bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

void cli_human_bytes(double b, char *buf, size_t cap) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) { b /= 1024; i++; }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

int sysconf_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

FILE *cli_fopen_text(const char *path, const char *what) {
    /* O_NONBLOCK so that opening a FIFO returns at once, to be refused */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        cli_fail("cannot open %s '%s': %s", what, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        cli_fail("cannot open %s '%s': not a regular file", what, path);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        cli_fail("cannot open %s '%s': %s", what, path, strerror(errno));
    }
    return f;
}

char *cli_read_all(FILE *f, size_t max, size_t *len, bool *too_long) {
    size_t cap = 1 << 16, n = 0, got;
    if (cap > max) cap = max;
    *too_long = false;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n < cap) continue;
        if (cap >= max) { /* full: one byte more means too long */
            *too_long = fgetc(f) != EOF;
            break;
        }
        const size_t nc = cap * 2 < max ? cap * 2 : max;
        char *nb = realloc(buf, nc + 1);
        if (!nb) { free(buf); return NULL; }
        buf = nb;
        cap = nc;
    }
    if (!buf || *too_long) { free(buf); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}

int cli_read_tokens(kvq_model *m, const char *path, size_t max_bytes, kvq_token **out, int *n) {
    *out = NULL;
    *n = 0;
    FILE *f = cli_fopen_text(path, "text");
    if (!f) return 1;
    char *text = malloc(max_bytes ? max_bytes : 1);
    const size_t len = text ? fread(text, 1, max_bytes, f) : 0;
    fclose(f);
    if (!text) return cli_fail("no memory to read '%s'", path);
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    kvq_tokenize(m, text, len, info.add_bos, NULL, 0, n);
    *out = malloc(((size_t)*n + 1) * sizeof **out);
    const int rc = !*out || kvq_tokenize(m, text, len, info.add_bos, *out, *n, n) ? cli_fail("tokenization failed") : 0;
    free(text);
    return rc;
}
