/* AQUA-KV: the fast Walsh-Hadamard transform against a dense Hadamard
 * matrix (every ISA path), HIGGS grids rebuilt bit for bit, the ridge fit
 * against a direct solution of the normal equations, the codec's attention
 * against dense attention on its own reconstruction in both modes,
 * predictor files that must be refused, and the cold tier: a session saved
 * through aqua restores into f32 exactly as aqua reconstructs it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "context/context.h"
#include "core/cpu.h"
#include "kernels/fwht.h"
#include "kernels/grid_nearest.h"
#include "kv/aqua_pred.h"
#include "kv/kv.h"
#include "quant/higgs.h"
#include "quant/resq.h"
#include "tune/aqua_calib.h"
#include "testutil.h"

static void test_fwht(void **st) {
    (void)st;
    uint64_t s = 3;
    for (int n = 1; n <= 512; n *= 2) {
        float x[512], y[512], z[512];
        for (int i = 0; i < n; i++) x[i] = tu_randn(&s);
        /* dense: H[i][j] = (-1)^popcount(i & j) */
        for (int i = 0; i < n; i++) {
            double a = 0;
            for (int j = 0; j < n; j++) a += (__builtin_popcount(i & j) & 1 ? -1.0 : 1.0) * x[j];
            y[i] = (float)a;
        }
        memcpy(z, x, (size_t)n * 4);
        kvq_fwht_ref(z, n);
        for (int i = 0; i < n; i++) assert_true(fabsf(z[i] - y[i]) <= 1e-4f * (1 + fabsf(y[i])));
        if (kvq_isa_supported(KVQ_ISA_AVX2)) {
            float w[512];
            memcpy(w, x, (size_t)n * 4);
            kvq_fwht_avx2(w, n);
            for (int i = 0; i < n; i++) assert_true(fabsf(w[i] - y[i]) <= 1e-4f * (1 + fabsf(y[i])));
        }
    }
}

/* The SIMD search against the scalar one, index for index: random grids with
 * duplicated points (ties must go to the lower index), points on the query, NaN. */
static void test_grid_nearest(void **st) {
    (void)st;
    if (!kvq_isa_supported(KVQ_ISA_AVX2)) skip();
    uint64_t s = 11;
    const int dn[5][2] = {{2, 16}, {2, 64}, {2, 256}, {4, 256}, {3, 24}};
    for (int c = 0; c < 5; c++) {
        const int d = dn[c][0], n = dn[c][1], m = 4000;
        float *soa = malloc((size_t)d * n * sizeof(float)), *y = malloc((size_t)m * d * sizeof(float));
        uint8_t *a = malloc(m), *b = malloc(m);
        for (int i = 0; i < d * n; i++) soa[i] = tu_randn(&s);
        for (int i = 0; i < n; i += 5) /* duplicates, some 8 apart (same lane), some not */
            for (int k = 0; k < d; k++) soa[k * n + (i + 8 + i % 3) % n] = soa[k * n + i];
        for (int i = 0; i < m * d; i++) y[i] = tu_randn(&s);
        for (int t = 0; t < m; t += 7) /* queries exactly on a point */
            for (int k = 0; k < d; k++) y[t * d + k] = soa[k * n + t % n];
        y[5 * d] = NAN;
        kvq_grid_nearest_ref(soa, n, d, y, m, a);
        kvq_grid_nearest_avx2(soa, n, d, y, m, b);
        assert_memory_equal(a, b, m);
        assert_int_equal(a[5], 0);
        free(soa); free(y); free(a); free(b);
    }
}

static uint64_t fnv(const void *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

static void test_grids(void **st) {
    (void)st;
    const int dn[4][2] = {{2, 16}, {2, 64}, {2, 256}, {4, 256}};
    /* the grids of every earlier build: a saved AQUA session or cache decodes through them,
     * so a change here would silently corrupt old files */
    const uint64_t pinned[4] = {0x6fe8e3596ba40ba1ull, 0x83e6b4e351a8482aull, 0x34f873493d34d909ull,
                                0x2c0f43e3cd7dbb18ull};
    for (int i = 0; i < 4; i++) {
        kvq_higgs_grid *a = malloc(sizeof *a), *b = malloc(sizeof *b);
        kvq_higgs_build(dn[i][0], dn[i][1], a);
        kvq_higgs_build(dn[i][0], dn[i][1], b);
        assert_memory_equal(a, b, sizeof *a); /* bit for bit, whatever the thread count */
        const kvq_higgs_grid *g = kvq_higgs_grid_get(dn[i][0], dn[i][1]);
        assert_non_null(g);
        assert_memory_equal(a->pts, g->pts, sizeof a->pts);
        assert_true(fnv(g->pts, (size_t)g->n * g->d * sizeof(float)) == pinned[i]);
        free(a);
        free(b);
    }
    assert_null(kvq_higgs_grid_get(3, 16));
    /* MSE on Gaussian rows near the optimal quantizers' (about 0.1, 0.03 and 0.009 for 2, 3, 4 bits) */
    const double bound[5] = {0, 0, 0.12, 0.04, 0.012};
    for (int bits = 2; bits <= 4; bits++) {
        kvq_resq q;
        assert_int_equal(kvq_resq_init(&q, KVQ_RESQ_HIGGS, bits, 128), KVQ_OK);
        uint64_t s = 9;
        float x[128], y[128];
        uint8_t c[512];
        double e = 0, z = 0;
        for (int t = 0; t < 400; t++) {
            for (int i = 0; i < 128; i++) x[i] = tu_randn(&s);
            kvq_resq_quant(&q, x, c);
            kvq_resq_dequant(&q, c, y);
            for (int i = 0; i < 128; i++) { e += (x[i] - y[i]) * (x[i] - y[i]); z += x[i] * x[i]; }
        }
        fprintf(stderr, "higgs %d bits: nmse %.4f (%zu bytes per row of 128)\n", bits, e / z, q.row_bytes);
        assert_true(e / z < bound[bits]);
    }
}

/* The ridge fit against Gauss-Jordan on (X'X + lambda I) W = X'Y, in double. */
static void test_ridge(void **st) {
    (void)st;
    const int n = 300, dx = 6, C = 4, d = dx + 1;
    uint64_t s = 21;
    float X[300 * 6], Y[300 * 4];
    for (int i = 0; i < n * dx; i++) X[i] = tu_randn(&s);
    for (int i = 0; i < n * C; i++) Y[i] = tu_randn(&s);
    double W[7 * 4], G[7][7 + 4] = {{0}};
    assert_int_equal(kvq_ridge_fit(X, dx, Y, C, n, W), KVQ_OK);
    for (int r = 0; r < n; r++)
        for (int i = 0; i < d; i++) {
            const double xi = i < dx ? X[r * dx + i] : 1;
            for (int j = 0; j < d; j++) G[i][j] += xi * (j < dx ? X[r * dx + j] : 1);
            for (int o = 0; o < C; o++) G[i][d + o] += xi * Y[r * C + o];
        }
    double tr = 0;
    for (int i = 0; i < d; i++) tr += G[i][i];
    for (int i = 0; i < d; i++) G[i][i] += 1e-3 * tr / d + 1e-12;
    for (int i = 0; i < d; i++) {
        const double p = G[i][i];
        for (int j = 0; j < d + C; j++) G[i][j] /= p;
        for (int k = 0; k < d; k++)
            if (k != i) {
                const double f = G[k][i];
                for (int j = 0; j < d + C; j++) G[k][j] -= f * G[i][j];
            }
    }
    for (int i = 0; i < d; i++)
        for (int o = 0; o < C; o++) assert_true(fabs(W[i * C + o] - G[i][d + o]) < 1e-9);
}

/* A predictor file with random (small) weights for a geometry. */
static void write_pred(const char *path, int L, int C, uint64_t fp, float fill) {
    float **A = calloc((size_t)L, sizeof *A), **a = calloc((size_t)L, sizeof *a), **B = calloc((size_t)L, sizeof *B),
          **b = calloc((size_t)L, sizeof *b);
    uint64_t s = 5;
    for (int l = 1; l < L; l++) {
        A[l] = malloc((size_t)C * C * 4);
        a[l] = malloc((size_t)C * 4);
        B[l] = malloc((size_t)C * 2 * C * 4);
        b[l] = malloc((size_t)C * 4);
        for (int i = 0; i < C * C; i++) A[l][i] = tu_randn(&s) * 0.1f;
        for (int i = 0; i < 2 * C * C; i++) B[l][i] = tu_randn(&s) * 0.1f;
        for (int i = 0; i < C; i++) a[l][i] = b[l][i] = fill;
    }
    assert_int_equal(kvq_aqua_pred_write(path, L, C, fp, 2, KVQ_RESQ_HIGGS, 1000, A, a, B, b, NULL, NULL, NULL), KVQ_OK);
    for (int l = 0; l < L; l++) { free(A[l]); free(a[l]); free(B[l]); free(b[l]); }
    free(A); free(a); free(B); free(b);
}

static void rope_stub(const void *u, float *k, int n, const int32_t *pos, int nh) {
    (void)u; (void)k; (void)n; (void)pos; (void)nh; /* no rotation: attention is checked on what read() gives */
}

static void test_codec_attention(void **st) {
    (void)st;
    const int L = 3, nh = 4, nkv = 2, hd = 32, C = nkv * hd, n = 700;
    char path[] = "/tmp/kvq_pred_XXXXXX";
    close(mkstemp(path));
    write_pred(path, L, C, 0, 0.05f);
    char spec[2][256];
    snprintf(spec[0], sizeof spec[0], "aqua:pred=%s", path);
    snprintf(spec[1], sizeof spec[1], "aqua:pred=%s,mode=cached", path);
    float outs[2][3][128];
    uint64_t s = 7;
    float *k = malloc((size_t)n * C * 4), *v = malloc((size_t)n * C * 4), q[128];
    for (int i = 0; i < n * C; i++) { k[i] = tu_randn(&s); v[i] = tu_randn(&s); }
    for (int i = 0; i < nh * hd; i++) q[i] = tu_randn(&s);
    for (int m = 0; m < 2; m++) {
        kvq_kv_geom g = {L, nh, nkv, hd, 1024, 64, 0};
        char err[256];
        kvq_kv_cache *c;
        if (kvq_kv_cache_new(&g, spec[m], NULL, &c, err, sizeof err)) fail_msg("%s: %s", spec[m], err);
        c->rope = rope_stub;
        int32_t pos[64];
        float out[64 * 128];
        for (int t0 = 0; t0 < n; t0 += 50) { /* prompt chunks through the step protocol */
            const int cnt = n - t0 < 50 ? n - t0 : 50;
            for (int i = 0; i < cnt; i++) pos[i] = t0 + i;
            kvq_kv_step sp = {.n = cnt, .pos = pos, .mode = KVQ_STEP_PROMPT};
            assert_int_equal(kvq_kv_step_begin(c, &sp), KVQ_OK);
            for (int il = 0; il < L; il++)
                assert_int_equal(kvq_kv_step_layer(c, il, out, k + (size_t)t0 * C, v + (size_t)t0 * C, 0.1f, out, 2), KVQ_OK);
            assert_int_equal(kvq_kv_step_end(c, false), KVQ_OK);
        }
        /* 700 tokens: 4 sinks, 640 compressed in 5 chunks, 56 in the window */
        const uint64_t used = kvq_kv_bytes_used(c);
        kvq_resq q0, q2;
        kvq_resq_init(&q0, KVQ_RESQ_HIGGS, 4, C);
        kvq_resq_init(&q2, KVQ_RESQ_HIGGS, 2, C);
        /* mode=cached also holds the f32 reconstruction (k and v) of every compressed token */
        assert_int_equal(used, 640ull * (2 * q0.row_bytes + 4) + 2 * 640ull * (2 * q2.row_bytes + 4) +
                                   3ull * 60 * (C * 4 + 4) + (m ? 3ull * 640 * C * 2 * 4 : 0));
        for (int il = 0; il < L; il++) {
            const kvq_kv_layer *Ly = &c->layers[il];
            float *K = malloc((size_t)n * C * 4), *V = malloc((size_t)n * C * 4);
            Ly->codec->read(Ly, KVQ_VIEW_FULL, 0, n, K, V);
            if (il == 0) assert_true(tu_nmse(k, K, (size_t)n * C) < 0.02); /* layer 0: 4 bits */
            /* the decode-time attention of a query against dense attention on read() */
            kvq_kv_step sp = {.n = 1, .pos = pos, .mode = KVQ_STEP_DECODE};
            c->step = sp;
            if (Ly->codec->prepare) Ly->codec->prepare((kvq_kv_layer *)Ly, &sp);
            assert_int_equal(kvq_kv_attend(c, il, q, 1, n, 0.2f, KVQ_VIEW_FULL, outs[m][il], 1), KVQ_OK);
            float ref[128];
            for (int h = 0; h < nh; h++) {
                const int gh = h / (nh / nkv);
                double mx = -1e300, z = 0, o[32] = {0}, sc[700];
                for (int t = 0; t < n; t++) {
                    double dd = 0;
                    for (int e = 0; e < hd; e++) dd += (double)q[h * hd + e] * K[(size_t)t * C + gh * hd + e];
                    sc[t] = dd * 0.2;
                    mx = fmax(mx, sc[t]);
                }
                for (int t = 0; t < n; t++) {
                    const double w = exp(sc[t] - mx);
                    z += w;
                    for (int e = 0; e < hd; e++) o[e] += w * V[(size_t)t * C + gh * hd + e];
                }
                for (int e = 0; e < hd; e++) ref[h * hd + e] = (float)(o[e] / z);
            }
            assert_true(tu_nmse(ref, outs[m][il], (size_t)nh * hd) < 1e-8);
            free(K);
            free(V);
        }
        /* A token's reconstruction is the same bits whatever range a read asks for (reads of
         * the same range of each layer in turn, as conversions do, share the layer below's),
         * and truncating into the compressed tokens keeps it: exactly for the whole chunks
         * that stay compressed, to fp16 rounding for the part of a chunk that returns to fp16.
         * The truncation runs top layer first: it rebuilds from the layers below. */
        float *A = malloc((size_t)L * n * C * 4), *AV = malloc((size_t)L * n * C * 4);
        float *B = malloc((size_t)n * C * 4), *BV = malloc((size_t)n * C * 4);
        for (int il = 0; il < L; il++)
            c->layers[il].codec->read(&c->layers[il], KVQ_VIEW_FULL, 0, n, A + (size_t)il * n * C, AV + (size_t)il * n * C);
        for (int il = 0; il < L; il++) {
            c->layers[il].codec->read(&c->layers[il], KVQ_VIEW_FULL, 37, 300, B, BV);
            assert_memory_equal(B, A + ((size_t)il * n + 37) * C, (size_t)300 * C * 4);
            assert_memory_equal(BV, AV + ((size_t)il * n + 37) * C, (size_t)300 * C * 4);
        }
        for (int il = L - 1; il >= 0; il--) { /* no memo to lean on: each read rebuilds the chain below */
            c->layers[il].codec->read(&c->layers[il], KVQ_VIEW_FULL, 130, 5, B, BV);
            assert_memory_equal(B, A + ((size_t)il * n + 130) * C, (size_t)5 * C * 4);
        }
        assert_int_equal(kvq_kv_truncate(c, 300), KVQ_OK); /* 4 sinks, 2 chunks kept, 40 tokens back to fp16 */
        for (int il = 0; il < L; il++) {
            c->layers[il].codec->read(&c->layers[il], KVQ_VIEW_FULL, 0, 300, B, BV);
            assert_memory_equal(B, A + (size_t)il * n * C, (size_t)260 * C * 4);
            assert_memory_equal(BV, AV + (size_t)il * n * C, (size_t)260 * C * 4);
            assert_true(tu_nmse(A + ((size_t)il * n + 260) * C, B + (size_t)260 * C, (size_t)40 * C) < 1e-6);
            assert_true(tu_nmse(AV + ((size_t)il * n + 260) * C, BV + (size_t)260 * C, (size_t)40 * C) < 1e-6);
        }
        free(A); free(AV); free(B); free(BV);
        kvq_kv_cache_free(c);
    }
    /* stream and cached read the same values */
    for (int il = 0; il < L; il++) assert_true(tu_nmse(outs[0][il], outs[1][il], (size_t)nh * hd) < 1e-10);
    free(k);
    free(v);
    unlink(path);
}

static void test_bad_predictors(void **st) {
    (void)st;
    const int L = 2, C = 64;
    kvq_kv_geom g = {L, 4, 2, 32, 256, 0, 0x1234};
    char path[] = "/tmp/kvq_pred_XXXXXX", spec[256], err[256];
    close(mkstemp(path));
    snprintf(spec, sizeof spec, "aqua:pred=%s", path);
    kvq_kv_cache *c = NULL;
    write_pred(path, L, C, 0x9999, 0);
    err[0] = 0;
    assert_int_equal(kvq_kv_cache_new(&g, spec, NULL, &c, err, sizeof err), KVQ_ERR_ARG);
    assert_non_null(strstr(err, "another model"));
    write_pred(path, 3, C, 0x1234, 0); /* the right model, the wrong shape */
    assert_int_equal(kvq_kv_cache_new(&g, spec, NULL, &c, err, sizeof err), KVQ_ERR_ARG);
    assert_non_null(strstr(err, "3 layers"));
    write_pred(path, L, C, 0x1234, NAN);
    assert_int_not_equal(kvq_kv_cache_new(&g, spec, NULL, &c, err, sizeof err), KVQ_OK);
    assert_non_null(strstr(err, "NaN"));
    write_pred(path, L, C, 0x1234, 0);
    assert_int_equal(kvq_kv_cache_new(&g, spec, NULL, &c, err, sizeof err), KVQ_OK);
    kvq_kv_cache_free(c);
    assert_int_equal(truncate(path, 600), 0);
    assert_int_not_equal(kvq_kv_cache_new(&g, spec, NULL, &c, err, sizeof err), KVQ_OK);
    assert_int_equal(kvq_kv_cache_new(&g, "aqua", NULL, &c, err, sizeof err), KVQ_ERR_ARG);
    assert_non_null(strstr(err, "pred="));
    assert_int_equal(kvq_kv_cache_new(&g, "aqua:pred=none,bits=5", NULL, &c, err, sizeof err), KVQ_ERR_ARG);
    assert_int_equal(kvq_kv_cache_new(&g, "aqua:pred=none+snapkv:budget=64", NULL, &c, err, sizeof err),
                     KVQ_ERR_UNSUPPORTED); /* eviction needs positions the generic rebuild does not keep */
    /* a KV width beyond the codec's row buffers (40 KV heads of 128) is refused, not overrun */
    kvq_kv_geom wide = {2, 40, 40, 128, 256, 0, 0};
    assert_int_equal(kvq_kv_cache_new(&wide, "aqua:pred=none", NULL, &c, err, sizeof err), KVQ_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "KV width of 5120"));
    unlink(path);
}

/* Calibration on the real model, and the cold tier: a session saved as aqua
 * restores into f32 holding exactly aqua's reconstruction. */
static void test_calibrate_and_cold_tier(void **st) {
    (void)st;
    const char *mpath = tu_shared("models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    const char *text = tu_shared("corpora/tinystories-valid-head.txt");
    if (!mpath || !text) { skip(); return; }
    kvq_model_params mp = kvq_model_default_params();
    mp.path = mpath;
    kvq_model *m = NULL;
    assert_int_equal(kvq_model_load(&mp, &m), KVQ_OK);
    FILE *f = fopen(text, "rb");
    char *buf = malloc(200000);
    size_t len = fread(buf, 1, 200000, f);
    fclose(f);
    int n = 0;
    kvq_tokenize(m, buf, len, true, NULL, 0, &n);
    kvq_token *toks = malloc((size_t)n * sizeof *toks);
    assert_int_equal(kvq_tokenize(m, buf, len, true, toks, n, &n), KVQ_OK);
    char pred[] = "/tmp/kvq_pred_XXXXXX";
    close(mkstemp(pred));
    kvq_aqua_calib_params p = {.model = m, .tokens = toks, .n_tokens = 100, .ctx = 512, .bits = 2, .quantizer = "higgs"};
    kvq_aqua_calib_report *r = calloc(1, sizeof *r);
    assert_int_equal(kvq_aqua_calibrate(&p, pred, r), KVQ_ERR_ARG); /* too short a text */
    p.n_tokens = n < 12000 ? n : 12000;
    assert_int_equal(kvq_aqua_calibrate(&p, pred, r), KVQ_OK);
    assert_true(r->ev_k[1] > 0.2 && r->relmse_k[1] < 0.5);
    free(r);
    /* a session, saved through aqua */
    kvq_ctx_params cp = kvq_ctx_default_params();
    cp.kv_spec = "f32";
    cp.n_threads = 1;
    kvq_ctx *a = NULL, *b = NULL;
    assert_int_equal(kvq_ctx_new(m, &cp, &a), KVQ_OK);
    float *lg = malloc((size_t)m->hp.n_vocab * 4);
    assert_int_equal(kvq_eval(a, toks, 400, false, lg), KVQ_OK);
    char spec[300], sess[] = "/tmp/kvq_sess_XXXXXX";
    close(mkstemp(sess));
    snprintf(spec, sizeof spec, "aqua:pred=%s", pred);
    assert_int_equal(kvq_ctx_save_as(a, sess, spec), KVQ_OK);
    assert_int_equal(kvq_ctx_new(m, &cp, &b), KVQ_OK);
    assert_int_equal(kvq_ctx_load(b, sess), KVQ_OK);
    assert_int_equal(kvq_ctx_n_past(b), 400);
    /* what aqua reconstructs: the same conversion into an aqua cache, read back */
    kvq_kv_cache *aq = NULL;
    char err[256];
    assert_int_equal(kvq_kv_cache_new(&a->kv->g, spec, NULL, &aq, err, sizeof err), KVQ_OK);
    aq->rope = a->kv->rope;
    aq->rope_user = a->kv->rope_user;
    assert_int_equal(kvq_kv_convert(a->kv, aq), KVQ_OK);
    const int C = m->hp.n_head_kv * m->hp.head_dim;
    float *k1 = malloc((size_t)400 * C * 4), *v1 = malloc((size_t)400 * C * 4), *k2 = malloc((size_t)400 * C * 4),
          *v2 = malloc((size_t)400 * C * 4);
    for (int il = 0; il < m->hp.n_layer; il++) {
        aq->codec->read(&aq->layers[il], KVQ_VIEW_FULL, 0, 400, k1, v1);
        b->kv->codec->read(&b->kv->layers[il], KVQ_VIEW_FULL, 0, 400, k2, v2);
        assert_memory_equal(k1, k2, (size_t)400 * C * 4);
        assert_memory_equal(v1, v2, (size_t)400 * C * 4);
    }
    kvq_kv_cache_free(aq);
    unlink(sess);
    unlink(pred);
    free(k1); free(v1); free(k2); free(v2); free(lg); free(buf); free(toks);
    kvq_ctx_free(a);
    kvq_ctx_free(b);
    kvq_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fwht),           cmocka_unit_test(test_grid_nearest), cmocka_unit_test(test_grids),
        cmocka_unit_test(test_ridge),          cmocka_unit_test(test_codec_attention),
        cmocka_unit_test(test_bad_predictors), cmocka_unit_test(test_calibrate_and_cold_tier),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
