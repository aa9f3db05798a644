/* QuantSpec: the hier codec (the planes' arithmetic, exact accounting, both
 * views' attention against dense attention on their own dequantized values,
 * the double buffer flushing only verified tokens), speculative sampling
 * reproducing the target distribution (a chi-square test that also catches
 * a deliberately broken rejection step), greedy speculative output equal to
 * plain decoding, and the cache after rollbacks byte-identical to one that
 * never saw a rejected token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "context/context.h"
#include "core/fp16.h"
#include "core/cpu.h"
#include "kv/hier_kernels.h"
#include "decode/spec_tune.h"
#include "kv/kv.h"
#include "testutil.h"

static float *randv(int n, uint64_t seed) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) x[i] = tu_randn(&seed);
    return x;
}

/* Dense attention of one query row over rows K, V [n][nkv*hd]. */
static void dense(const float *q, const float *K, const float *V, int n, int nh, int nkv, int hd, float *out) {
    const int rep = nh / nkv;
    for (int h = 0; h < nh; h++) {
        const int g = h / rep;
        double mx = -1e300, z = 0, o[256] = {0};
        double *sc = malloc(sizeof(double) * (size_t)n);
        for (int t = 0; t < n; t++) {
            double d = 0;
            for (int e = 0; e < hd; e++) d += (double)q[h * hd + e] * K[((size_t)t * nkv + g) * hd + e];
            sc[t] = d / sqrt((double)hd);
            mx = fmax(mx, sc[t]);
        }
        for (int t = 0; t < n; t++) {
            const double w = exp(sc[t] - mx);
            z += w;
            for (int e = 0; e < hd; e++) o[e] += w * V[((size_t)t * nkv + g) * hd + e];
        }
        for (int e = 0; e < hd; e++) out[h * hd + e] = (float)(o[e] / z);
        free(sc);
    }
}

static void test_views(void **st) {
    (void)st;
    const int nh = 8, nkv = 2, hd = 64, n = 700, row = nkv * hd;
    kvq_kv_geom g = {1, nh, nkv, hd, 1024, 0, 0};
    char err[256];
    kvq_kv_cache *c;
    /* a head_dim the key tiles cannot hold is refused with a clear error, not computed wrong */
    kvq_kv_geom odd = {1, 2, 2, 12, 256, 0, 0};
    assert_int_equal(kvq_kv_cache_new(&odd, "hier", NULL, &c, err, sizeof err), KVQ_ERR_ARG);
    assert_non_null(strstr(err, "not a multiple of 8"));
    assert_int_equal(kvq_kv_cache_new(&g, "hier:g=64", NULL, &c, err, sizeof err), KVQ_OK);
    float *k = randv(n * row, 1), *v = randv(n * row, 2), *q = randv(nh * hd, 3);
    for (int t0 = 0; t0 < n; t0 += 50) { /* verified chunks */
        assert_int_equal(kvq_kv_append(c, 0, k + (size_t)t0 * row, v + (size_t)t0 * row, 50), KVQ_OK);
        kvq_kv_commit(c, 0);
    }
    /* 700 verified: blocks of 64 quantized up to 640, fp16 kept from F(700) = 576 */
    const uint64_t want = 2ull * (640 / 64 * (64 * 64 + 64 * 4) + 640 * (64 + 4) + (700 - 576) * 64 * 4);
    assert_int_equal(kvq_kv_bytes_used(c), want);
    float *K8 = malloc((size_t)n * row * 4), *V8 = malloc((size_t)n * row * 4), *K4 = malloc((size_t)n * row * 4),
          *V4 = malloc((size_t)n * row * 4);
    c->codec->read(&c->layers[0], KVQ_VIEW_FULL, 0, n, K8, V8);
    c->codec->read(&c->layers[0], KVQ_VIEW_DRAFT, 0, n, K4, V4);
    /* the target view is an 8-bit quantization, the draft view a 4-bit one; the fp16 tail is shared */
    const double e8 = tu_nmse(k, K8, 576 * row), e4 = tu_nmse(k, K4, 576 * row);
    fprintf(stderr, "hier keys nmse: target view %.3g, draft view %.3g\n", e8, e4);
    assert_true(e8 < 1e-4 && e4 > 2e-3 && e4 < 2e-2);
    assert_memory_equal(K8 + 576 * row, K4 + 576 * row, (size_t)(n - 576) * row * 4);
    /* the draft view is a valid 4-bit code: at most 16 levels per channel and block, in the inputs' order */
    for (int b = 0; b < 576; b += 64)
        for (int d = 0; d < hd; d++) {
            float lv[64];
            int nl = 0;
            for (int t = b; t < b + 64; t++) {
                const float x = K4[(size_t)t * row + d];
                bool seen = false;
                for (int i = 0; i < nl; i++) seen |= lv[i] == x;
                if (!seen) lv[nl++] = x;
                for (int u = b; u < b + 64; u++) /* monotone: a larger input never gets a lower level */
                    if (k[(size_t)u * row + d] > k[(size_t)t * row + d]) assert_true(K4[(size_t)u * row + d] >= x);
            }
            assert_true(nl <= 16);
        }
    /* each view's fused attention is dense attention on that view's values, up
     * to the integer arithmetic's rounding of queries and weights: 8 bits in the
     * draft view, about 15 in the target view (hier_kernels.h). Random data is
     * the hard case: weights spread over 700 tokens make an output of norm
     * ~1/sqrt(700) that the rounding errors of every token add to. */
    for (int view = 0; view < 2; view++) {
        float out[512], ref[512];
        assert_int_equal(kvq_kv_attend(c, 0, q, 1, n, 1.0f / sqrtf((float)hd), view, out, 2), KVQ_OK);
        dense(q, view ? K4 : K8, view ? V4 : V8, n, nh, nkv, hd, ref);
        const double e = sqrt(tu_nmse(ref, out, nh * hd)), bound = view ? 5e-2 : 3e-3;
        fprintf(stderr, "hier %s view: attention differs from dense on its values by %.3g (bound %.3g)\n",
                view ? "draft" : "target", e, bound);
        if (e > bound) fail_msg("view %d: attention differs from dense by %.3g", view, e);
    }
    /* pending tokens are never quantized: 200 speculative tokens, nothing flushed */
    float *k2 = randv(200 * row, 4);
    int32_t pos[200];
    for (int i = 0; i < 200; i++) pos[i] = n + i;
    float out[200 * 512];
    float *q2 = randv(200 * nh * hd, 5);
    kvq_kv_step sp = {.n = 200, .pos = pos, .mode = KVQ_STEP_VERIFY};
    assert_int_equal(kvq_kv_step_begin(c, &sp), KVQ_OK);
    assert_int_equal(kvq_kv_step_layer(c, 0, q2, k2, k2, 0.125f, out, 2), KVQ_OK);
    assert_int_equal(kvq_kv_step_end(c, false), KVQ_OK);
    assert_int_equal(kvq_kv_bytes_used(c), want + 200ull * 2 * 64 * 4);
    assert_int_equal(kvq_kv_accept(c, 100), KVQ_OK); /* 800 verified: blocks up to 768, fp16 from 704 */
    assert_int_equal(kvq_kv_bytes_used(c),
                     2ull * (768 / 64 * (64 * 64 + 64 * 4) + 768 * (64 + 4) + (800 - 704) * 64 * 4));
    kvq_kv_cache_free(c);
    free(k); free(v); free(q); free(K8); free(V8); free(K4); free(V4); free(k2); free(q2);
}

/* Every ISA's hier kernels against the scalar reference: both views, blocks
 * of 16..128 tokens, value groups of 16..64, runs starting and ending inside
 * a quad of 4 tokens and runs longer than one pass of the value kernel,
 * query counts that are not multiples of 4. A query's result must not depend
 * on the other queries of the call, bit for bit: the batched attention pass
 * relies on it to compute what token-by-token decoding computes. AVX-512 must
 * equal AVX2 exactly (same roundings, same integer sums, same float steps). */
static void test_kernels(void **st) {
    (void)st;
    const kvq_hier_kernels *ref = kvq_hier_kernels_isa(KVQ_ISA_SCALAR);
    uint64_t r = 7;
    enum { LDW = 320 };
    for (int isa = 0; isa < KVQ_ISA_COUNT; isa++) {
        if (!kvq_isa_supported(isa)) continue;
        const kvq_hier_kernels *k = kvq_hier_kernels_isa(isa);
        const kvq_hier_kernels *x86 = isa == KVQ_ISA_AVX512 ? kvq_hier_kernels_isa(KVQ_ISA_AVX2) : NULL;
        for (int G = 16; G <= 128; G *= 2)
            for (int hd = 32; hd <= 128; hd *= 2) {
                const int nq = 7, vg = G < hd ? G : hd;
                static uint8_t up[320 * 64], lo[320 * 64];
                static kvq_f16 ms[2 * 320 * 8];
                for (size_t i = 0; i < sizeof up; i++) {
                    up[i] = (uint8_t)(tu_randn(&r) * 1e4);
                    lo[i] = (uint8_t)(tu_randn(&r) * 1e4);
                }
                for (int i = 0; i < 2 * 320 * 8; i++) ms[i] = kvq_f32_to_f16(i & 1 ? fabsf(tu_randn(&r)) : tu_randn(&r));
                static float q[7 * 128], a[7 * 128], b[7 * 128], c[128], w[7 * LDW], oa[7 * 128], ob[7 * 128], oc[128], oc2[7 * 128];
                for (int i = 0; i < nq * hd; i++) q[i] = tu_randn(&r);
                for (int i = 0; i < nq * LDW; i++) w[i] = fabsf(tu_randn(&r));
                for (int view = 0; view < 2; view++) {
                    const uint8_t *l = view ? NULL : lo;
                    ref->qk(up, l, ms, G, hd, q, nq, a, 128);
                    k->qk(up, l, ms, G, hd, q, nq, b, 128);
                    if (x86) { /* both x86 kernels share the rounding and the integer sums: equal, bit for bit */
                        static float bx[7 * 128];
                        x86->qk(up, l, ms, G, hd, q, nq, bx, 128);
                        for (int g = 0; g < nq; g++)
                            if (memcmp(bx + g * 128, b + g * 128, (size_t)G * sizeof(float)))
                                fail_msg("qk isa %d view %d G %d hd %d: differs from avx2", isa, view, G, hd);
                    }
                    for (int g = 0; g < nq; g++) {
                        const double e = tu_nmse(a + g * 128, b + g * 128, (size_t)G);
                        if (e > 1e-10) fail_msg("qk isa %d view %d G %d hd %d: nmse %.3g", isa, view, G, hd, e);
                        k->qk(up, l, ms, G, hd, q + (size_t)g * hd, 1, c, 128);
                        if (memcmp(c, b + g * 128, (size_t)G * sizeof(float)))
                            fail_msg("qk isa %d view %d: query %d alone differs from its batch", isa, view, g);
                    }
                    for (int t0 = 0; t0 < 4; t0 += 3)
                        for (int n = 37; n <= 301; n += 264) {
                            memset(oa, 0, sizeof oa);
                            memset(ob, 0, sizeof ob);
                            ref->av(up, l, t0, ms, n, hd, vg, w, LDW, nq, oa);
                            k->av(up, l, t0, ms, n, hd, vg, w, LDW, nq, ob);
                            const double e = tu_nmse(oa, ob, (size_t)nq * hd);
                            if (e > 1e-10)
                                fail_msg("av isa %d view %d vg %d hd %d t0 %d n %d: nmse %.3g", isa, view, vg, hd, t0, n, e);
                            if (x86) {
                                memset(oc2, 0, sizeof oc2);
                                x86->av(up, l, t0, ms, n, hd, vg, w, LDW, nq, oc2);
                                if (memcmp(oc2, ob, sizeof oc2))
                                    fail_msg("av isa %d view %d vg %d hd %d t0 %d n %d: differs from avx2", isa, view, vg, hd, t0, n);
                            }
                            for (int g = 0; g < nq; g++) {
                                memset(oc, 0, sizeof oc);
                                k->av(up, l, t0, ms, n, hd, vg, w + (size_t)g * LDW, LDW, 1, oc);
                                if (memcmp(oc, ob + (size_t)g * hd, (size_t)hd * sizeof(float)))
                                    fail_msg("av isa %d view %d: query %d alone differs from its batch", isa, view, g);
                            }
                        }
                }
            }
    }
}

/* The broken rejection step a test must catch: on rejection, draw from p
 * itself instead of the residual max(0, p - q). */
static bool broken_judge(kvq_sampler *s, const float *p, const float *q, kvq_token d, int V, kvq_token *bonus) {
    const float a = q[d] > 0 ? p[d] / q[d] : 0;
    if (a >= 1 || kvq_sampler_uniform(s) < a) return true;
    *bonus = kvq_sampler_draw(s, p);
    return false;
}

static double chi2(const long *obs, const float *p, int V, long n) {
    double x = 0;
    for (int v = 0; v < V; v++) {
        const double e = p[v] * (double)n;
        if (e > 0) x += (obs[v] - e) * (obs[v] - e) / e;
    }
    return x;
}

static void test_sampling_distribution(void **st) {
    (void)st;
    enum { V = 8 };
    const float p[V] = {0.30f, 0.20f, 0.15f, 0.10f, 0.10f, 0.08f, 0.05f, 0.02f};
    const float q[V] = {0.05f, 0.40f, 0.05f, 0.20f, 0.05f, 0.05f, 0.10f, 0.10f};
    kvq_sampler_params sp = {1.0f, 0, 1.0f, 12345};
    kvq_sampler *s;
    assert_int_equal(kvq_sampler_new(&sp, V, &s), KVQ_OK);
    const long N = 200000;
    long good[V] = {0}, bad[V] = {0};
    float tmp[V];
    for (long i = 0; i < N; i++) {
        kvq_token d = kvq_sampler_draw(s, q), b = -1;
        good[kvq_spec_judge(s, p, q, d, V, tmp, &b) ? d : b]++;
        d = kvq_sampler_draw(s, q);
        bad[broken_judge(s, p, q, d, V, &b) ? d : b]++;
    }
    /* 7 degrees of freedom: the 99.9% point is 24.3 */
    const double xg = chi2(good, p, V, N), xb = chi2(bad, p, V, N);
    fprintf(stderr, "speculative sampling chi-square (7 dof): %.1f; with the broken rejection step: %.1f\n", xg, xb);
    assert_true(xg < 24.3);
    assert_true(xb > 24.3);
    kvq_sampler_free(s);
}

typedef struct collect { kvq_token t[600]; int n; } collect;
static bool keep(void *u, kvq_token t) {
    collect *c = u;
    if (c->n < 600) c->t[c->n++] = t;
    return true;
}

static kvq_ctx *ctx_for(const kvq_model *m, const char *spec) {
    kvq_ctx_params p = kvq_ctx_default_params();
    p.kv_spec = spec;
    p.n_threads = 2;
    kvq_ctx *c = NULL;
    assert_int_equal(kvq_ctx_new(m, &p, &c), KVQ_OK);
    return c;
}

static void stream_of(kvq_ctx *c, kvq_token *prompt, int np) {
    kvq_eval_opts o = kvq_eval_default_opts();
    o.prompt_end = true;
    float *lg = malloc((size_t)c->m->hp.n_vocab * sizeof(float));
    assert_int_equal(kvq_eval_ex(c, prompt, np, &o, lg), KVQ_OK); /* kept as the context's last logits */
    free(lg);
}

/* Greedy speculative output is plain greedy output, and after all its
 * rollbacks the cache holds exactly the bytes of a cache that decoded the
 * same tokens one at a time. */
/* The adaptive gamma: the rate model, and the choice it makes from what it
 * has seen (synthetic timings: a clock-free test). */
static void test_spec_tune(void **st) {
    (void)st;
    /* a = 0.5, g = 2: E = 1.75 tokens for 2 d + v0 + 3 v1 */
    assert_float_equal(kvq_spec_rate(0.5, 1, 1, 1, 2), 1.75 / 6, 1e-12);
    assert_float_equal(kvq_spec_rate(0.9, 1, 2, 1, 0), 1.0 / 3, 1e-12); /* a plain step */
    kvq_spec_tune t;
    /* cheap drafts, a verify pass that costs its weights only, all drafts accepted: the largest gamma */
    kvq_spec_tune_init(&t, 8);
    assert_int_equal(kvq_spec_tune_next(&t, 4), 4);
    kvq_spec_tune_round(&t, 4, 4, 4 * 0.1, 1.0 + 0.01 * 5);
    assert_int_equal(kvq_spec_tune_next(&t, 4), 1); /* the second round measures another position count */
    kvq_spec_tune_round(&t, 1, 1, 0.1, 1.0 + 0.01 * 2);
    for (int i = 0; i < 20; i++) {
        const int g = kvq_spec_tune_next(&t, 4);
        assert_true(g >= 1);
        kvq_spec_tune_round(&t, g, g, g * 0.1, 1.0 + 0.01 * (g + 1));
    }
    assert_int_equal(kvq_spec_tune_next(&t, 4), 8);
    /* drafts half the cost of a step, each verified position a full step, acceptance 50%: plain steps,
     * with a round after every 16 of them */
    kvq_spec_tune_init(&t, 8);
    kvq_spec_tune_round(&t, 4, 1, 4 * 0.5, 5.0);
    kvq_spec_tune_round(&t, 1, 0, 0.5, 2.0);
    int g = kvq_spec_tune_next(&t, 4), plain = 0;
    assert_int_equal(g, 0);
    while ((g = kvq_spec_tune_next(&t, 4)) == 0 && plain < 100) kvq_spec_tune_plain(&t, 1.0), plain++;
    assert_int_equal(plain, 16);
    assert_int_equal(g, 1);
    /* the same costs at 90% acceptance and a verify pass at 1 + 0.2 steps per position: gamma in between */
    kvq_spec_tune_init(&t, 8);
    for (int i = 0; i < 30; i++) {
        const int gg = i == 0 ? 4 : i == 1 ? 1 : kvq_spec_tune_next(&t, 4);
        const int n = (i % 10 == 9) ? gg / 2 : gg; /* a miss now and then */
        kvq_spec_tune_round(&t, gg, n, gg * 0.5, 1.0 + 0.2 * (gg + 1));
    }
    g = kvq_spec_tune_next(&t, 4);
    fprintf(stderr, "adaptive gamma with drafts at half a step, verify 1 + 0.2 per position: %d\n", g);
    assert_true(g >= 2 && g <= 4); /* the model's optimum at a = 0.9 is 3 */
}

static void test_greedy_and_rollback(void **st) {
    (void)st;
    const char *path = tu_shared("models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    if (!path) { skip(); return; }
    kvq_model_params mp = kvq_model_default_params();
    mp.path = path;
    kvq_model *m = NULL;
    assert_int_equal(kvq_model_load(&mp, &m), KVQ_OK);
    int32_t set;
    assert_int_equal(kvq_model_add_weight_set(m, "q4_0", 2, &set), KVQ_OK);
    kvq_token prompt[8] = {1, 2, 3, 4};
    const char *text = "Once upon a time";
    int np = 0;
    assert_int_equal(kvq_tokenize(m, text, strlen(text), true, prompt, 8, &np), KVQ_OK);
    const int V = m->hp.n_vocab, N = 300;
    for (int g = 0; g < 3; g++) { /* the third: adaptive, rounds mixed with plain steps */
        const char *spec = g == 1 ? "hier:g=32" : "hier:g=64";
        kvq_ctx *a = ctx_for(m, spec), *b = ctx_for(m, spec);
        stream_of(a, prompt, np);
        stream_of(b, prompt, np);
        kvq_sampler_params sp = {0, 0, 1, 1};
        kvq_sampler *s;
        assert_int_equal(kvq_sampler_new(&sp, V, &s), KVQ_OK);
        collect got = {{0}, 0};
        kvq_spec_params pp = {.gamma = 5, .adaptive = g == 2, .draft_set = set};
        kvq_spec_stats stt;
        assert_int_equal(kvq_generate_speculative(a, s, &pp, N, keep, &got, &stt), KVQ_OK);
        if (g < 2) assert_true(stt.rounds > 0 && stt.accepted < stt.drafted); /* some drafts were rolled back */
        else assert_true(stt.rounds >= 2); /* adaptive starts with two rounds */
        /* plain greedy over the same cache */
        float *lg = malloc((size_t)V * 4);
        memcpy(lg, kvq_ctx_logits(b), (size_t)V * 4);
        for (int i = 0; i < got.n; i++) {
            kvq_token t = 0;
            for (int v = 1; v < V; v++) if (lg[v] > lg[t]) t = v;
            if (t != got.t[i]) fail_msg("%s: token %d differs: speculative %d, plain %d", spec, i, got.t[i], t);
            if (i + 1 < got.n) assert_int_equal(kvq_eval(b, &t, 1, false, lg), KVQ_OK);
        }
        /* both contexts hold the prompt and every emitted token but the last */
        assert_int_equal(kvq_ctx_n_past(a), kvq_ctx_n_past(b));
        char *ba = NULL, *bb = NULL;
        size_t la = 0, lb = 0;
        FILE *fa = open_memstream(&ba, &la), *fb = open_memstream(&bb, &lb);
        assert_int_equal(kvq_kv_write(a->kv, fa), KVQ_OK);
        assert_int_equal(kvq_kv_write(b->kv, fb), KVQ_OK);
        fclose(fa);
        fclose(fb);
        assert_int_equal(la, lb);
        assert_memory_equal(ba, bb, la);
        fprintf(stderr, "%s%s: %d greedy tokens identical, %lld rounds, %lld plain steps, acceptance %.1f%%, caches "
                "byte-identical (%zu bytes)\n", spec, g == 2 ? " adaptive" : "", got.n, (long long)stt.rounds,
                (long long)stt.plain_steps, 100.0 * stt.accepted / stt.drafted, la);
        free(ba);
        free(bb);
        free(lg);
        kvq_sampler_free(s);
        kvq_ctx_free(a);
        kvq_ctx_free(b);
    }
    /* bad input */
    kvq_ctx *f = ctx_for(m, "f16"), *h = ctx_for(m, "hier");
    stream_of(f, prompt, np);
    stream_of(h, prompt, np);
    kvq_sampler_params sp = {0, 0, 1, 1};
    kvq_sampler *s;
    assert_int_equal(kvq_sampler_new(&sp, V, &s), KVQ_OK);
    kvq_spec_params pp = {.gamma = 4, .draft_set = set};
    assert_int_equal(kvq_generate_speculative(f, s, &pp, 10, NULL, NULL, NULL), KVQ_ERR_UNSUPPORTED);
    pp.gamma = 99;
    assert_int_equal(kvq_generate_speculative(h, s, &pp, 10, NULL, NULL, NULL), KVQ_ERR_ARG);
    pp.gamma = 4;
    pp.draft_set = 7;
    assert_int_equal(kvq_generate_speculative(h, s, &pp, 10, NULL, NULL, NULL), KVQ_ERR_ARG);
    kvq_sampler_free(s);
    kvq_ctx_free(f);
    kvq_ctx_free(h);
    kvq_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_sampling_distribution),
        cmocka_unit_test(test_spec_tune),
        cmocka_unit_test(test_greedy_and_rollback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
