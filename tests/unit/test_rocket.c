/* RocketKV's parts and policies: the budget split against the digest's
 * worked example, the stable top-k, SnapKV scores and max-pooling against
 * dense scalar references, HSA page scores and choice against brute force,
 * every policy over every codec against dense attention on the slots it
 * chose, eviction freeing memory, and bad options. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/fp16.h"
#include "kv/hsa.h"
#include "kv/kv.h"
#include "kv/rocket_split.h"
#include "kv/snapkv.h"
#include "kv/topk.h"
#include "testutil.h"

static void test_split_example(void **st) {
    (void)st;
    kvq_rocket_split s;
    /* S = 32K (prompt + 256 generated), t = 256, D = 128 -> cap 1618, page 3, r 61, k 128 */
    kvq_rocket_split_for(32768 - 256, 256, 256, 128, &s);
    assert_int_equal(s.S, 32768);
    assert_int_equal(s.cap, 1618);
    assert_int_equal(s.prompt_keep, 1618 - 256);
    assert_int_equal(s.page, 3);
    assert_int_equal(s.r, 61);
    assert_int_equal(s.k, 128);
    assert_true(fabs(s.alpha - 0.62) < 1e-9);
    /* short inputs: nothing to compress, the generation cap holds everything */
    kvq_rocket_split_for(100, 256, 256, 64, &s);
    assert_int_equal(s.cap, 356);
    assert_int_equal(s.page, 1);
    /* the budget's r equals the rule HSA applies at each step when the cache holds cap tokens */
    kvq_rocket_split_for(32768 - 256, 256, 256, 128, &s);
    assert_int_equal(kvq_hsa_channels(128, s.page, 256, (int)s.cap), s.r);
}

static int cmp_desc(const void *a, const void *b) {
    const float *x = a, *y = b; /* pairs (score, index) */
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : 1;
}
static int cmp_int(const void *a, const void *b) { return *(const int32_t *)a - *(const int32_t *)b; }

static void test_topk_stable(void **st) {
    (void)st;
    uint64_t s = 3;
    float x[500], tmp[500], pairs[1000];
    int32_t got[500], want[500];
    for (int trial = 0; trial < 300; trial++) {
        const int n = 1 + (int)(tu_rng(&s) % 500), k = (int)(tu_rng(&s) % (n + 3));
        const int levels = 1 + (int)(tu_rng(&s) % 8); /* many ties */
        for (int i = 0; i < n; i++) x[i] = trial % 3 ? (float)(tu_rng(&s) % levels) : tu_randn(&s);
        if (trial % 10 == 0) x[tu_rng(&s) % n] = NAN;
        for (int i = 0; i < n; i++) { pairs[2 * i] = isnan(x[i]) ? -INFINITY : x[i]; pairs[2 * i + 1] = (float)i; }
        qsort(pairs, (size_t)n, 2 * sizeof(float), cmp_desc);
        const int m = k < n ? k : n;
        for (int i = 0; i < m; i++) want[i] = (int32_t)pairs[2 * i + 1];
        qsort(want, (size_t)m, sizeof *want, cmp_int);
        assert_int_equal(kvq_topk(x, n, k, tmp, got), m);
        assert_memory_equal(got, want, (size_t)m * sizeof *got);
    }
    assert_int_equal(kvq_topk(x, 10, 0, tmp, got), 0);
}

static void test_maxpool(void **st) {
    (void)st;
    uint64_t s = 5;
    float x[300], out[300];
    for (int pool = 1; pool <= 65; pool += 8)
        for (int n = 1; n < 300; n += 37) {
            for (int i = 0; i < n; i++) x[i] = tu_randn(&s);
            kvq_maxpool1d(x, n, pool, out);
            for (int i = 0; i < n; i++) {
                float m = -INFINITY;
                for (int j = i - pool / 2; j <= i + pool / 2; j++)
                    if (j >= 0 && j < n && x[j] > m) m = x[j];
                assert_float_equal(out[i], m, 0);
            }
        }
}

/* Runs a prompt of n tokens through the step protocol (queries recorded). */
static void prompt(kvq_kv_cache *c, const float *q, const float *k, const float *v, int n, int chunk, bool end) {
    const int nh = c->g.n_head, nkv = c->g.n_head_kv, hd = c->g.head_dim;
    float *out = malloc((size_t)chunk * nh * hd * sizeof(float));
    int32_t *pos = malloc((size_t)chunk * sizeof *pos);
    for (int t0 = 0; t0 < n; t0 += chunk) {
        const int m = n - t0 < chunk ? n - t0 : chunk, s0 = kvq_kv_n(c);
        for (int i = 0; i < m; i++) pos[i] = s0 + i;
        kvq_kv_step sp = {.n = m, .pos = pos, .mode = m > 1 ? KVQ_STEP_PROMPT : KVQ_STEP_DECODE};
        assert_int_equal(kvq_kv_step_begin(c, &sp), KVQ_OK);
        for (int il = 0; il < c->g.n_layer; il++)
            assert_int_equal(kvq_kv_step_layer(c, il, q + (size_t)t0 * nh * hd, k + (size_t)t0 * nkv * hd,
                                               v + (size_t)t0 * nkv * hd, 1.0f / sqrtf((float)hd), out, 2),
                             KVQ_OK);
        assert_int_equal(kvq_kv_step_end(c, end && t0 + m == n), KVQ_OK);
    }
    free(out);
    free(pos);
}

static float *randv(int n, uint64_t seed, float scale) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) x[i] = tu_randn(&seed) * scale;
    return x;
}

static void test_snapkv_scores_dense(void **st) {
    (void)st;
    const int nh = 8, nkv = 2, hd = 32, n = 700, rep = nh / nkv, W = 16;
    kvq_kv_geom g = {1, nh, nkv, hd, 1024, 64, 0};
    char err[256];
    kvq_kv_cache *c;
    assert_int_equal(kvq_kv_cache_new(&g, "f32+snapkv:budget=500,window=16", NULL, &c, err, sizeof err), KVQ_OK);
    float *q = randv(n * nh * hd, 1, 1), *k = randv(n * nkv * hd, 2, 1), *v = randv(n * nkv * hd, 3, 1);
    prompt(c, q, k, v, n, 64, false); /* no prompt end: nothing evicted yet */
    float got[700];
    for (int h = 0; h < nkv; h++) {
        assert_int_equal(kvq_snapkv_scores(c, 0, h, W, got), W);
        double ref[700] = {0};
        for (int i = 0; i < W; i++) {
            const int qs = n - W + i; /* the query's slot: it sees [0, qs] */
            for (int j = 0; j < rep; j++) {
                const float *qq = q + ((size_t)qs * nh + (size_t)h * rep + j) * hd;
                double sc[700], mx = -1e300, z = 0;
                for (int t = 0; t <= qs; t++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += (double)qq[e] * k[((size_t)t * nkv + h) * hd + e];
                    sc[t] = d / sqrt((double)hd);
                    mx = sc[t] > mx ? sc[t] : mx;
                }
                for (int t = 0; t <= qs; t++) z += exp(sc[t] - mx);
                for (int t = 0; t < n - W; t++) ref[t] += exp(sc[t] - mx) / z;
            }
        }
        for (int t = 0; t < n - W; t++)
            if (fabs(got[t] - ref[t]) > 1e-5 + 1e-4 * fabs(ref[t])) fail_msg("head %d slot %d: %g vs %g", h, t, got[t], ref[t]);
    }
    /* the prompt's end evicts to the budget and frees memory; the window survives */
    uint64_t before = kvq_kv_bytes_allocated(c);
    assert_int_equal(kvq_kv_prefill_end(c), KVQ_OK);
    assert_int_equal(kvq_kv_n(c), 500); /* 3 pages of 256 slots -> 2 */
    assert_true(kvq_kv_bytes_allocated(c) < before);
    float kr[32 * 2];
    c->codec->read(&c->layers[0], KVQ_VIEW_FULL, 499, 1, kr, NULL);
    assert_memory_equal(kr, k + (size_t)(n - 1) * nkv * hd, sizeof kr);
    kvq_kv_cache_free(c);
    free(q); free(k); free(v);
}

/* The closest fp16 value on the outer side of v (bounds are stored so). */
static double f16_out(float v, bool up) {
    const uint16_t h = kvq_f32_to_f16(v);
    double best = up ? INFINITY : -INFINITY;
    for (int d = -2; d <= 2; d++) {
        const double c = kvq_f16_to_f32((uint16_t)(h + d));
        if (isnan(c)) continue;
        if (up ? c >= v && c < best : c <= v && c > best) best = c;
    }
    return best;
}

static void test_hsa_brute_force(void **st) {
    (void)st;
    const int nkv = 2, hd = 16, rep = 3, P = 4;
    kvq_kv_geom g = {1, nkv * rep, nkv, hd, 512, 0, 0};
    char err[256];
    kvq_kv_cache *c;
    assert_int_equal(kvq_kv_cache_new(&g, "f32", NULL, &c, err, sizeof err), KVQ_OK);
    kvq_hsa h;
    assert_int_equal(kvq_hsa_init(&h, c, P), KVQ_OK);
    uint64_t s = 17;
    for (int trial = 0; trial < 40; trial++) {
        const int n = 20 + (int)(tu_rng(&s) % 300), r = 1 + (int)(tu_rng(&s) % hd);
        float *k = randv(n * nkv * hd, 100 + trial, 1), *q = randv(rep * hd, 200 + trial, 1);
        assert_int_equal(kvq_kv_truncate(c, 0), KVQ_OK);
        assert_int_equal(kvq_kv_append(c, 0, k, k, n), KVQ_OK);
        /* summaries built in uneven pieces, then partly rebuilt after a truncation */
        assert_int_equal(kvq_hsa_resync(&h, c, 0, 0), KVQ_OK);
        assert_int_equal(kvq_kv_truncate(c, n - 7), KVQ_OK);
        assert_int_equal(kvq_hsa_resync(&h, c, 0, n - 7), KVQ_OK);
        const int nv = n - 7, np = (nv + P - 1) / P;
        for (int head = 0; head < nkv; head++) {
            /* brute force, written from the digest */
            double a[64], sg[64];
            for (int i = 0; i < hd; i++) {
                a[i] = sg[i] = 0;
                for (int j = 0; j < rep; j++) { a[i] += fabs(q[j * hd + i]); sg[i] += q[j * hd + i]; }
            }
            int I[64], ni = 0;
            bool used[64] = {false};
            for (; ni < r; ni++) { /* stable top-r channels */
                int b = -1;
                for (int i = 0; i < hd; i++) if (!used[i] && (b < 0 || a[i] > a[b])) b = i;
                used[b] = true;
                I[ni] = b;
            }
            double want[128] = {0};
            for (int j = 0; j < rep; j++) {
                double u[128], sel = 0, all = 0, mx = -1e300, z = 0;
                for (int i = 0; i < ni; i++) sel += fabs(q[j * hd + I[i]]);
                for (int i = 0; i < hd; i++) all += fabs(q[j * hd + i]);
                const double tau = sqrt(hd * sel / all);
                for (int p = 0; p < np; p++) {
                    u[p] = 0;
                    for (int ii = 0; ii < ni; ii++) {
                        const int i = I[ii];
                        double b = sg[i] > 0 ? -1e300 : 1e300;
                        for (int t = p * P; t < nv && t < (p + 1) * P; t++) {
                            double x = k[((size_t)t * nkv + head) * hd + i];
                            b = sg[i] > 0 ? fmax(b, x) : fmin(b, x);
                        }
                        u[p] += q[j * hd + i] * f16_out((float)b, sg[i] > 0);
                    }
                    mx = fmax(mx, u[p]);
                }
                for (int p = 0; p < np; p++) z += (p == np - 1 ? nv - p * P : P) * exp((u[p] - mx) / tau);
                for (int p = 0; p < np; p++) want[p] += (p == np - 1 ? nv - p * P : P) * exp((u[p] - mx) / tau) / z;
            }
            float got[128];
            kvq_hsa_page_scores(&h, 0, head, q, rep, nv, r, got);
            for (int p = 0; p < np; p++)
                if (fabs(got[p] - want[p]) > 1e-4) fail_msg("trial %d page %d: %g vs %g", trial, p, got[p], want[p]);
            /* the choice: the top pages by score, ties to the lower page, as merged spans */
            const int kt = 3 * P;
            kvq_span sp[64];
            int ns = kvq_hsa_select(&h, 0, head, q, rep, nv, r, kt, NULL, 0, sp, 64);
            if (np <= 3) { assert_int_equal(ns, -1); continue; }
            float gs[128], tmp[128];
            int32_t idx[128];
            for (int p = 0; p < np; p++) gs[p] = got[p];
            int m = kvq_topk(gs, np, 3, tmp, idx);
            int covered = 0;
            for (int i = 0; i < ns; i++) covered += sp[i].t1 - sp[i].t0;
            int want_cov = 0;
            for (int i = 0; i < m; i++) want_cov += (idx[i] == np - 1 ? nv - idx[i] * P : P);
            assert_int_equal(covered, want_cov);
            for (int i = 0; i < m; i++) {
                bool in = false;
                for (int j = 0; j < ns; j++) in |= sp[j].t0 <= idx[i] * P && idx[i] * P < sp[j].t1;
                assert_true(in);
            }
        }
        free(k);
        free(q);
    }
    kvq_hsa_free(&h);
    kvq_kv_cache_free(c);
}

/* Every policy over every codec: the decode step's attention equals dense
 * attention over the codec's own (dequantized) keys and values of exactly
 * the spans the policy chose. */
static void test_compositions(void **st) {
    (void)st;
    const int nh = 8, nkv = 2, hd = 64, n = 1500, rep = nh / nkv;
    const char *codecs[] = {"f32", "f16", "kivi:k4v2", "kivi:layers=%s", "pertoken:k4v4", "q8_0"};
    const char *policies[] = {"snapkv:budget=300", "hsa:budget=128", "rocket:budget=128,gen=64",
                              "rocket-mt:budget=256,gen=64", "window:sink=4,win=100"};
    char table[] = "/tmp/kvq_layers_XXXXXX";
    FILE *tf = fdopen(mkstemp(table), "w");
    fprintf(tf, "k4v2\nk2v4\n");
    fclose(tf);
    float *q = randv(n * nh * hd, 11, 1), *k = randv(n * nkv * hd, 12, 1), *v = randv(n * nkv * hd, 13, 1);
    float *qd = randv(nh * hd, 14, 1), *kd = randv(nkv * hd, 15, 1), *vd = randv(nkv * hd, 16, 1);
    for (size_t ci = 0; ci < sizeof codecs / sizeof *codecs; ci++)
        for (size_t pi = 0; pi < sizeof policies / sizeof *policies; pi++) {
            char codec[128], spec[256], err[256];
            snprintf(codec, sizeof codec, codecs[ci], table);
            snprintf(spec, sizeof spec, "%s+%s", codec, policies[pi]);
            kvq_kv_geom g = {2, nh, nkv, hd, 2048, 128, 0};
            kvq_kv_cache *c;
            if (kvq_kv_cache_new(&g, spec, NULL, &c, err, sizeof err)) fail_msg("%s: %s", spec, err);
            prompt(c, q, k, v, n, 128, true);
            const int held = kvq_kv_n(c);
            /* one decode step, layer by layer, with the spans each head's policy picks */
            int32_t pos = n;
            kvq_kv_step sp = {.n = 1, .pos = &pos, .mode = KVQ_STEP_DECODE};
            assert_int_equal(kvq_kv_step_begin(c, &sp), KVQ_OK);
            for (int il = 0; il < 2; il++) {
                float out[512];
                assert_int_equal(kvq_kv_step_layer(c, il, qd, kd, vd, 1.0f / sqrtf((float)hd), out, 2), KVQ_OK);
                const kvq_kv_layer *L = &c->layers[il];
                const int nv = L->n;
                float *K = malloc((size_t)nv * nkv * hd * 4), *V = malloc((size_t)nv * nkv * hd * 4);
                L->codec->read(L, KVQ_VIEW_FULL, 0, nv, K, V);
                double worst = 0;
                for (int h = 0; h < nkv; h++) {
                    kvq_span spans[2048];
                    c->in_step = true; /* select as the step saw it (decode) */
                    int ns = c->policy->select ? c->policy->select(c, il, h, qd + (size_t)h * rep * hd, rep, nv, spans, c->max_spans) : -1;
                    if (ns < 0) { spans[0] = (kvq_span){0, nv}; ns = 1; }
                    for (int j = 0; j < rep; j++) {
                        const float *qq = qd + ((size_t)h * rep + j) * hd;
                        double mx = -1e300, z = 0, o[64] = {0};
                        for (int si = 0; si < ns; si++)
                            for (int t = spans[si].t0; t < spans[si].t1; t++) {
                                double d = 0;
                                for (int e = 0; e < hd; e++) d += (double)qq[e] * K[((size_t)t * nkv + h) * hd + e];
                                mx = fmax(mx, d / sqrt((double)hd));
                            }
                        for (int si = 0; si < ns; si++)
                            for (int t = spans[si].t0; t < spans[si].t1; t++) {
                                double d = 0;
                                for (int e = 0; e < hd; e++) d += (double)qq[e] * K[((size_t)t * nkv + h) * hd + e];
                                const double w = exp(d / sqrt((double)hd) - mx);
                                z += w;
                                for (int e = 0; e < hd; e++) o[e] += w * V[((size_t)t * nkv + h) * hd + e];
                            }
                        double num = 0, den = 0;
                        for (int e = 0; e < hd; e++) {
                            const double r = o[e] / z, x = out[((size_t)h * rep + j) * hd + e];
                            num += (r - x) * (r - x);
                            den += r * r;
                        }
                        worst = fmax(worst, sqrt(num / den));
                    }
                }
                free(K);
                free(V);
                /* KIVI's integer paths (AVX-512 VNNI, AVX2) dot 8-bit queries with the codes and
                 * weigh values with 8-bit weights: up to 20% of k4v2's own error on this data (~0.25),
                 * far below what reading the wrong spans does */
                const double tol = strstr(spec, "kivi") ? 6e-2 : strstr(spec, "f16") || strstr(spec, "q8_0") ? 2e-3 : 1e-5;
                if (worst > tol) fail_msg("%s layer %d: attention on the chosen spans differs by %.3g", spec, il, worst);
            }
            assert_int_equal(kvq_kv_step_end(c, false), KVQ_OK);
            if (strstr(spec, "snapkv") || strstr(spec, "+rocket:")) assert_true(held < n); /* really evicted */
            kvq_kv_cache_free(c);
        }
    remove(table);
    free(q); free(k); free(v); free(qd); free(kd); free(vd);
}

static void test_bad_options(void **st) {
    (void)st;
    kvq_kv_geom g = {2, 8, 2, 32, 1024, 0, 0};
    const char *bad[][2] = {
        {"f16+snapkv", "needs budget"},
        {"f16+snapkv:budget=0", "budget=0"},
        {"f16+rocket:budget=-5", "budget=-5"},
        {"f16+hsa:budget=abc", "budget=abc"},
        {"f16+rocket:budget=5000", "larger than the context of 1024"},
        {"f16+snapkv:budget=64,window=64", "window=64 must be smaller than budget=64"},
        {"f16+snapkv:budget=64,pool=4", "must be odd"},
        {"f16+hsa:budget=64,window=8", "unknown option 'window'"},
        {"f16+rocket-mt:budget=256,page=0", "page=0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        kvq_kv_cache *c = NULL;
        if (kvq_kv_cache_new(&g, bad[i][0], NULL, &c, err, sizeof err) == KVQ_OK) fail_msg("accepted %s", bad[i][0]);
        if (!strstr(err, bad[i][1])) fail_msg("%s: error '%s' lacks '%s'", bad[i][0], err, bad[i][1]);
        assert_null(c);
    }
    /* an evicting policy on a codec that can neither compact nor be read back */
    extern const kvq_codec kvq_codec_f32;
    kvq_codec nc = kvq_codec_f32;
    nc.compact = NULL;
    nc.read = NULL;
    kvq_kv_spec spec;
    char err[256];
    assert_int_equal(kvq_kv_spec_parse("f32+snapkv:budget=64", &spec, err, sizeof err), KVQ_OK);
    kvq_kv_cache *c = NULL;
    assert_int_equal(kvq_kv_cache_new_with(&g, &spec, &nc, kvq_policy_find("snapkv"), NULL, NULL, &c, err, sizeof err),
                     KVQ_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "cannot compact"));
    /* a prompt shorter than the window or the budget evicts nothing and loses nothing */
    assert_int_equal(kvq_kv_cache_new(&g, "f16+snapkv:budget=64", NULL, &c, err, sizeof err), KVQ_OK);
    float *q = randv(20 * 8 * 32, 1, 1), *k = randv(20 * 2 * 32, 2, 1);
    prompt(c, q, k, k, 20, 8, true);
    assert_int_equal(kvq_kv_n(c), 20);
    kvq_kv_cache_free(c);
    free(q);
    free(k);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_example),  cmocka_unit_test(test_topk_stable),
        cmocka_unit_test(test_maxpool),        cmocka_unit_test(test_snapkv_scores_dense),
        cmocka_unit_test(test_hsa_brute_force), cmocka_unit_test(test_compositions),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
