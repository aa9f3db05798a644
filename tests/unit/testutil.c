#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *tu_shared(const char *rel) {
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 1024, "../shared/%s", rel);
    if (access(p, R_OK) == 0) return p;
    const char *ci = getenv("CI");
    if (ci && !strcmp(ci, "true")) {
        fprintf(stderr, "missing required file %s (CI=true)\n", p);
        fail_msg("missing required file %s", p);
    }
    fprintf(stderr, "SKIP: %s is absent (tests that need ../shared are skipped outside CI)\n", p);
    return NULL;
}

void tu_log_cb(void *user, kvq_log_level lvl, const char *msg) {
    tu_log *l = user;
    if (!l) return;
    if (lvl == KVQ_LOG_ERROR) {
        l->n_err++;
        snprintf(l->last, sizeof l->last, "%s", msg);
    }
}

uint64_t tu_rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

float tu_randn(uint64_t *s) {
    double u1 = ((tu_rng(s) >> 11) + 1.0) / 9007199254740993.0, u2 = (tu_rng(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

double tu_nmse(const float *ref, const float *x, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        e += ((double)ref[i] - x[i]) * ((double)ref[i] - x[i]);
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? e / r : e;
}

void tu_put(tu_buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
void tu_u32(tu_buf *b, uint32_t v) { tu_put(b, &v, 4); }
void tu_u64(tu_buf *b, uint64_t v) { tu_put(b, &v, 8); }
void tu_str(tu_buf *b, const char *s) {
    tu_u64(b, strlen(s));
    tu_put(b, s, strlen(s));
}

int tu_write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

kvq_model *tu_load(const char *path) {
    kvq_model_params mp = kvq_model_default_params();
    mp.path = path;
    kvq_model *m = NULL;
    assert_int_equal(kvq_model_load(&mp, &m), KVQ_OK);
    return m;
}
