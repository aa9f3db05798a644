/* The KV step protocol and what it carries: the order of the hooks in every
 * step mode (a recording codec and policy), prefill_end once per layer per
 * prompt, accept flushing only verified tokens, paged memory following what
 * is held (truncate, compact, the window policy), KIVI compaction against a
 * cache built from the kept tokens, sessions (bit-exact continuation,
 * conversion between specs, bad files), two contexts in two threads, and
 * weight sets against the same model requantized on disk. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "context/context.h"
#include "core/fp16.h"
#include "kv/kv.h"
#include "quant/requant.h"
#include "testutil.h"

/* ---- a recording codec (f32 storage underneath) and policy --------------- */

static char rec[4096];
static int rec_sel_layer = -1;
static void logf_rec(const char *fmt, int a, int b) {
    char t[32];
    snprintf(t, sizeof t, fmt, a, b);
    if (rec[0]) strncat(rec, " ", sizeof rec - strlen(rec) - 1);
    strncat(rec, t, sizeof rec - strlen(rec) - 1);
}

extern const kvq_codec kvq_codec_f32;
static kvq_status m_append(kvq_kv_layer *L, const float *k, const float *v, int n, const int32_t *pos) {
    logf_rec("a%d:%d", L->il, pos[0]);
    return kvq_codec_f32.append(L, k, v, n, pos);
}
static kvq_status m_prepare(kvq_kv_layer *L, const kvq_kv_step *s) {
    logf_rec("p%d:%d", L->il, (int)s->mode);
    return KVQ_OK;
}
static void m_commit(kvq_kv_layer *L, int n_final) { logf_rec("c%d:%d", L->il, n_final); }

static kvq_codec mock_codec(void) {
    kvq_codec c = kvq_codec_f32; /* name "f32": its storage functions read the element size from it */
    c.has_draft_view = true;
    c.append = m_append;
    c.prepare = m_prepare;
    c.commit = m_commit;
    return c;
}

static void p_on_append(kvq_kv_cache *c, int il, const float *k, int n, int slot0) { logf_rec("o%d:%d", il, slot0); }
static int p_select(kvq_kv_cache *c, int il, int h, const float *q, int n_q, int n_vis, kvq_span *out, int cap) {
    if (il != rec_sel_layer) { /* once per layer step */
        rec_sel_layer = il;
        logf_rec("s%d:%d", il, n_vis);
    }
    return -1;
}
static kvq_status p_prefill_end(kvq_kv_cache *c, int il) {
    logf_rec("e%d", il, 0);
    return KVQ_OK;
}
static kvq_status p_after(kvq_kv_cache *c, int il) {
    logf_rec("f%d", il, 0);
    return KVQ_OK;
}
static void p_trunc(kvq_kv_cache *c, int il, int n) { logf_rec("t%d:%d", il, n); }

static const kvq_policy MOCK_POLICY = {.name = "mock", .on_append = p_on_append, .select = p_select,
                                       .prefill_end = p_prefill_end, .after_step = p_after,
                                       .on_truncate = p_trunc, .max_spans = 1};

static kvq_kv_cache *mock_cache(const kvq_kv_geom *g, const kvq_codec *codec) {
    kvq_kv_spec spec;
    char err[256];
    assert_int_equal(kvq_kv_spec_parse("f32", &spec, err, sizeof err), KVQ_OK);
    kvq_kv_cache *c = NULL;
    assert_int_equal(kvq_kv_cache_new_with(g, &spec, codec, &MOCK_POLICY, NULL, NULL, &c, err, sizeof err), KVQ_OK);
    return c;
}

static void step(kvq_kv_cache *c, int n, int pos0, kvq_step_mode mode, int view, bool prompt_end) {
    const int nh = c->g.n_head, nkv = c->g.n_head_kv, hd = c->g.head_dim;
    int32_t pos[64];
    float q[64 * 64], k[64 * 64], v[64 * 64], out[64 * 64];
    uint64_t s = (uint64_t)pos0 * 7 + 1;
    for (int i = 0; i < n * nh * hd; i++) q[i] = tu_randn(&s);
    for (int i = 0; i < n * nkv * hd; i++) { k[i] = tu_randn(&s); v[i] = tu_randn(&s); }
    for (int i = 0; i < n; i++) pos[i] = pos0 + i;
    rec_sel_layer = -1;
    kvq_kv_step st = {.n = n, .pos = pos, .mode = mode, .view = view};
    assert_int_equal(kvq_kv_step_begin(c, &st), KVQ_OK);
    for (int il = 0; il < c->g.n_layer; il++)
        assert_int_equal(kvq_kv_step_layer(c, il, q, k, v, 0.5f, out, 1), KVQ_OK);
    assert_int_equal(kvq_kv_step_end(c, prompt_end), KVQ_OK);
}

static void expect_rec(const char *want) {
    if (strcmp(rec, want)) fail_msg("step calls:\n  got  %s\n  want %s", rec, want);
    rec[0] = 0;
}

static void test_step_order(void **st) {
    (void)st;
    kvq_kv_geom g = {2, 4, 2, 8, 64, 8, 0};
    kvq_codec mc = mock_codec();
    kvq_kv_cache *c = mock_cache(&g, &mc);
    rec[0] = 0;
    /* a prompt: append -> on_append -> prepare -> select -> commit per layer, then prefill_end and after_step */
    step(c, 3, 0, KVQ_STEP_PROMPT, KVQ_VIEW_FULL, true);
    expect_rec("a0:0 o0:0 p0:0 s0:1 c0:3 a1:0 o1:0 p1:0 s1:1 c1:3 e0 e1 f0 f1");
    /* decode: no prefill_end */
    step(c, 1, 3, KVQ_STEP_DECODE, KVQ_VIEW_FULL, false);
    expect_rec("a0:3 o0:3 p0:1 s0:4 c0:4 a1:3 o1:3 p1:1 s1:4 c1:4 f0 f1");
    /* a draft: its tokens stay pending (commit sees 4 verified), no after_step */
    step(c, 2, 4, KVQ_STEP_DRAFT, KVQ_VIEW_DRAFT, false);
    expect_rec("a0:4 o0:4 p0:2 s0:5 c0:4 a1:4 o1:4 p1:2 s1:5 c1:4");
    assert_int_equal(kvq_kv_n_pending(c), 2);
    /* a plain step while tokens are pending is refused */
    int32_t pos[1] = {6};
    kvq_kv_step bad = {.n = 1, .pos = pos, .mode = KVQ_STEP_DECODE};
    assert_int_not_equal(kvq_kv_step_begin(c, &bad), KVQ_OK);
    /* roll the draft back, verify three tokens, accept two */
    assert_int_equal(kvq_kv_truncate(c, 4), KVQ_OK);
    expect_rec("t1:4 t0:4"); /* top layer first: a cross-layer codec rebuilds from the layer below */
    assert_int_equal(kvq_kv_n_pending(c), 0);
    step(c, 3, 4, KVQ_STEP_VERIFY, KVQ_VIEW_FULL, false);
    expect_rec("a0:4 o0:4 p0:3 s0:5 c0:4 a1:4 o1:4 p1:3 s1:5 c1:4");
    assert_int_equal(kvq_kv_accept(c, 2), KVQ_OK);
    expect_rec("t1:6 t0:6 c0:6 c1:6 f0 f1");
    assert_int_equal(kvq_kv_n(c), 6);
    assert_int_equal(kvq_kv_n_pending(c), 0);
    assert_int_not_equal(kvq_kv_accept(c, 1), KVQ_OK); /* nothing pending */
    /* a draft view on a codec without one is refused */
    kvq_codec plain = mock_codec();
    plain.has_draft_view = false;
    kvq_kv_cache *d = mock_cache(&g, &plain);
    kvq_kv_step dv = {.n = 1, .pos = pos, .mode = KVQ_STEP_DRAFT, .view = KVQ_VIEW_DRAFT};
    assert_int_equal(kvq_kv_step_begin(d, &dv), KVQ_ERR_UNSUPPORTED);
    kvq_kv_cache_free(d);
    kvq_kv_cache_free(c);
    rec[0] = 0;
}

static int count(const char *hay, const char *tok) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, tok)); p++)
        if ((p == hay || p[-1] == ' ') && (p[strlen(tok)] == ' ' || !p[strlen(tok)])) n++;
    return n;
}

static const char *model_656k(void) { return tu_shared("models/tinystories-656k/TinyStories-656K-Q8_0.gguf"); }


static kvq_ctx *ctx_for(const kvq_model *m, const char *spec, int n_batch) {
    kvq_ctx_params p = kvq_ctx_default_params();
    p.kv_spec = spec;
    p.n_threads = 1;
    p.n_batch = n_batch;
    kvq_ctx *c = NULL;
    assert_int_equal(kvq_ctx_new(m, &p, &c), KVQ_OK);
    return c;
}

/* A prompt longer than a batch runs as several chunks: prefill_end still
 * runs once per layer, after the last one. */
static void test_prefill_end_once(void **st) {
    (void)st;
    const char *path = model_656k();
    if (!path) { skip(); return; }
    kvq_model *m = tu_load(path);
    kvq_ctx *c = ctx_for(m, "f32", 4);
    kvq_codec mc = mock_codec();
    kvq_kv_cache *mock = mock_cache(&c->kv->g, &mc);
    mock->rope = c->kv->rope;
    mock->rope_user = c->kv->rope_user;
    kvq_kv_cache_free(c->kv);
    c->kv = mock;
    kvq_token toks[10] = {1, 20, 30, 40, 50, 60, 70, 80, 90, 100};
    kvq_eval_opts o = kvq_eval_default_opts();
    o.prompt_end = true;
    rec[0] = 0;
    assert_int_equal(kvq_eval_ex(c, toks, 10, &o, NULL), KVQ_OK);
    assert_int_equal(count(rec, "e0"), 1);
    assert_int_equal(count(rec, "e1"), 1);
    assert_int_equal(count(rec, "a0:8"), 1); /* three chunks: 0, 4, 8 */
    assert_true(strstr(rec, "a1:8") < strstr(rec, "e0")); /* after the last chunk */
    rec[0] = 0;
    assert_int_equal(kvq_eval(c, toks, 3, false, NULL), KVQ_OK); /* a plain eval ends no prompt */
    assert_int_equal(count(rec, "e0"), 0);
    rec[0] = 0;
    kvq_ctx_free(c);
    kvq_model_free(m);
}

/* KIVI's window flushes a block only when verified tokens fill R + G. */
static void test_accept_flushes_only_verified(void **st) {
    (void)st;
    const int hd = 16, nkv = 2, nh = 4;
    kvq_kv_geom g = {1, nh, nkv, hd, 256, 16, 0};
    char err[256];
    kvq_kv_cache *c;
    assert_int_equal(kvq_kv_cache_new(&g, "kivi:k4v4,g=32,r=32", NULL, &c, err, sizeof err), KVQ_OK);
    const int row = nkv * hd;
    float k[80 * 32], v[80 * 32], q[16 * 64], out[16 * 64], kr[80 * 32];
    uint64_t s = 11;
    for (int i = 0; i < 80 * row; i++) { k[i] = tu_randn(&s); v[i] = tu_randn(&s); }
    for (int i = 0; i < 16 * nh * hd; i++) q[i] = tu_randn(&s);
    int32_t pos[80];
    for (int i = 0; i < 80; i++) pos[i] = i;
    /* 63 verified tokens in chunks of 9: one short of R + G = 64 */
    for (int t0 = 0; t0 < 63; t0 += 9) {
        kvq_kv_step sp = {.n = 9, .pos = pos + t0, .mode = KVQ_STEP_PROMPT};
        assert_int_equal(kvq_kv_step_begin(c, &sp), KVQ_OK);
        assert_int_equal(kvq_kv_step_layer(c, 0, q, k + t0 * row, v + t0 * row, 0.25f, out, 1), KVQ_OK);
        assert_int_equal(kvq_kv_step_end(c, false), KVQ_OK);
    }
    const uint64_t fp16_all = 2ull * nkv * hd * 2;
    assert_int_equal(kvq_kv_bytes_used(c), 63 * fp16_all); /* nothing quantized yet */
    /* 8 speculative tokens: 71 held, still no flush */
    kvq_kv_step vs = {.n = 8, .pos = pos + 63, .mode = KVQ_STEP_VERIFY};
    assert_int_equal(kvq_kv_step_begin(c, &vs), KVQ_OK);
    assert_int_equal(kvq_kv_step_layer(c, 0, q, k + 63 * row, v + 63 * row, 0.25f, out, 1), KVQ_OK);
    assert_int_equal(kvq_kv_step_end(c, false), KVQ_OK);
    assert_int_equal(kvq_kv_n(c), 71);
    assert_int_equal(kvq_kv_bytes_used(c), 71 * fp16_all);
    /* accept 3: 66 verified -> the first block of 32 is quantized, the other 5 are gone */
    assert_int_equal(kvq_kv_accept(c, 3), KVQ_OK);
    assert_int_equal(kvq_kv_n(c), 66);
    const uint64_t block = (uint64_t)nkv * (hd * 32 * 4 / 8 + hd * 4 + 32 * (hd * 4 / 8 + 4));
    assert_int_equal(kvq_kv_bytes_used(c), block + 34 * fp16_all);
    c->codec->read(&c->layers[0], KVQ_VIEW_FULL, 0, 66, kr, NULL);
    for (int i = 32 * row; i < 66 * row; i++) /* the window, accepted tokens included, is exact fp16 */
        assert_float_equal(kr[i], kvq_f16_to_f32(kvq_f32_to_f16(k[i])), 0);
    assert_true(tu_nmse(k, kr, 32 * row) > 1e-4);
    kvq_kv_cache_free(c);
}

static float *dense_rows(int n, int row, uint64_t seed) {
    float *x = malloc((size_t)n * row * sizeof(float));
    for (int i = 0; i < n * row; i++) x[i] = tu_randn(&seed);
    return x;
}

static void test_memory_follows_held(void **st) {
    (void)st;
    kvq_kv_geom g = {2, 4, 2, 32, 4096, 0, 0};
    char err[256];
    const char *specs[] = {"f16", "f32", "kivi:k4v2", "pertoken:k4v4", "q4_0"};
    const int row = 2 * 32;
    float *k = dense_rows(1000, row, 1), *v = dense_rows(1000, row, 2);
    for (size_t si = 0; si < sizeof specs / sizeof *specs; si++) {
        kvq_kv_cache *c;
        assert_int_equal(kvq_kv_cache_new(&g, specs[si], NULL, &c, err, sizeof err), KVQ_OK);
        const uint64_t fixed = kvq_kv_bytes_allocated(c);
        for (int il = 0; il < 2; il++) {
            assert_int_equal(kvq_kv_append(c, il, k, v, 1000), KVQ_OK);
            kvq_kv_commit(c, il);
        }
        const uint64_t used0 = kvq_kv_bytes_used(c), alloc0 = kvq_kv_bytes_allocated(c);
        assert_true(alloc0 > fixed);
        uint64_t bound;
        assert_int_equal(kvq_kv_alloc_bound(&g, specs[si], &bound, err, sizeof err), KVQ_OK);
        assert_true(alloc0 <= bound);
        assert_int_equal(kvq_kv_truncate(c, 300), KVQ_OK);
        const uint64_t used1 = kvq_kv_bytes_used(c), alloc1 = kvq_kv_bytes_allocated(c);
        if (!(used1 < used0 && alloc1 < alloc0)) fail_msg("%s: truncate kept %llu of %llu bytes", specs[si],
                                                          (unsigned long long)alloc1, (unsigned long long)alloc0);
        int32_t keep[2 * 40];
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 40; j++) keep[h * 40 + j] = j * 7 + h;
        for (int il = 0; il < 2; il++) assert_int_equal(kvq_kv_compact(c, il, keep, 40), KVQ_OK);
        assert_int_equal(kvq_kv_n(c), 40);
        if (!(kvq_kv_bytes_used(c) < used1 && kvq_kv_bytes_allocated(c) < alloc1))
            fail_msg("%s: compact did not free memory", specs[si]);
        assert_int_equal(kvq_kv_truncate(c, 0), KVQ_OK);
        assert_int_equal(kvq_kv_bytes_allocated(c), fixed);
        kvq_kv_cache_free(c);
    }
    free(k);
    free(v);
}

/* A memory cap refuses a step up front; the cache is unchanged and usable. */
static void test_memory_cap(void **st) {
    (void)st;
    kvq_kv_geom g = {2, 4, 2, 32, 4096, 0, 0};
    char err[256];
    kvq_kv_pool *pool;
    assert_int_equal(kvq_kv_pool_new(2 * 2 * 65536 + 1000, &pool), KVQ_OK); /* two f16 pages per layer fit, not three */
    kvq_kv_mem_opts mo = {0, pool};
    kvq_kv_cache *a, *b;
    assert_int_equal(kvq_kv_cache_new_ex(&g, "f16", &mo, NULL, &a, err, sizeof err), KVQ_OK);
    assert_int_equal(kvq_kv_cache_new_ex(&g, "f16", &mo, NULL, &b, err, sizeof err), KVQ_OK);
    assert_int_equal(kvq_kv_reserve(a, 300), KVQ_OK);      /* 2 pages x 2 layers */
    assert_int_equal(kvq_kv_reserve(b, 10), KVQ_ERR_CONTEXT_FULL); /* the pool is spent */
    assert_int_equal(kvq_kv_bytes_allocated(b), 0);
    assert_int_equal(kvq_kv_truncate(a, 0), KVQ_OK);      /* a returns its pages */
    assert_int_equal(kvq_kv_pool_used(pool), 0);
    assert_int_equal(kvq_kv_reserve(b, 10), KVQ_OK);
    assert_int_equal(kvq_kv_pool_used(pool), kvq_kv_bytes_allocated(b));
    kvq_kv_cache_free(a);
    kvq_kv_cache_free(b);
    assert_int_equal(kvq_kv_pool_used(pool), 0);
    kvq_kv_pool_free(pool);
}

/* Attention error of a cache against dense f32 attention over given K/V rows. */
static double attn_err(kvq_kv_cache *c, const float *q, const float *k, const float *v, int n) {
    const int nh = c->g.n_head, nkv = c->g.n_head_kv, hd = c->g.head_dim, rep = nh / nkv;
    float *o = malloc((size_t)nh * hd * sizeof(float)), *r = malloc((size_t)nh * hd * sizeof(float));
    assert_int_equal(kvq_kv_attend(c, 0, q, 1, n, 1.0f / sqrtf((float)hd), KVQ_VIEW_FULL, o, 1), KVQ_OK);
    double *sc = malloc(sizeof(double) * (size_t)n);
    for (int h = 0; h < nh; h++) {
        int gh = h / rep;
        double mx = -1e300, sum = 0;
        for (int t = 0; t < n; t++) {
            double d = 0;
            for (int i = 0; i < hd; i++) d += (double)q[h * hd + i] * k[((size_t)t * nkv + gh) * hd + i];
            sc[t] = d / sqrt((double)hd);
            mx = sc[t] > mx ? sc[t] : mx;
        }
        for (int t = 0; t < n; t++) { sc[t] = exp(sc[t] - mx); sum += sc[t]; }
        for (int i = 0; i < hd; i++) {
            double a = 0;
            for (int t = 0; t < n; t++) a += sc[t] * v[((size_t)t * nkv + gh) * hd + i];
            r[h * hd + i] = (float)(a / sum);
        }
    }
    double e = sqrt(tu_nmse(r, o, (size_t)nh * hd));
    free(o); free(r); free(sc);
    return e;
}

/* KIVI compaction regroups key blocks and requantizes them once. Its
 * attention error against f32 on the kept tokens must stay within 1.35x of
 * a KIVI cache built from the kept tokens alone (docs/ARCHITECTURE.md). */
static void test_kivi_compact(void **st) {
    (void)st;
    const int nh = 8, nkv = 2, hd = 64, n = 600, n_keep = 250, row = nkv * hd;
    kvq_kv_geom g = {1, nh, nkv, hd, 1024, 0, 0};
    char err[256];
    float *k = dense_rows(n, row, 3), *v = dense_rows(n, row, 4), *q = dense_rows(1, nh * hd, 5);
    int32_t *keep = malloc(sizeof(int32_t) * nkv * n_keep);
    uint64_t s = 9;
    for (int h = 0; h < nkv; h++) { /* a random ascending subset per head, as SnapKV picks */
        int j = 0;
        for (int t = 0; t < n && j < n_keep; t++)
            if ((int)(tu_rng(&s) % (uint64_t)(n - t)) < n_keep - j) keep[h * n_keep + j++] = t;
    }
    /* the kept tokens as dense rows (each head its own) */
    float *kk = malloc(sizeof(float) * n_keep * row), *vk = malloc(sizeof(float) * n_keep * row);
    for (int h = 0; h < nkv; h++)
        for (int j = 0; j < n_keep; j++) {
            memcpy(kk + (size_t)j * row + h * hd, k + (size_t)keep[h * n_keep + j] * row + h * hd, hd * 4);
            memcpy(vk + (size_t)j * row + h * hd, v + (size_t)keep[h * n_keep + j] * row + h * hd, hd * 4);
        }
    const char *specs[] = {"kivi:k4v4", "kivi:k2v2", "kivi:k4v2,g=64"};
    for (int si = 0; si < 3; si++) {
        kvq_kv_cache *a, *b;
        assert_int_equal(kvq_kv_cache_new(&g, specs[si], NULL, &a, err, sizeof err), KVQ_OK);
        assert_int_equal(kvq_kv_cache_new(&g, specs[si], NULL, &b, err, sizeof err), KVQ_OK);
        assert_int_equal(kvq_kv_append(a, 0, k, v, n), KVQ_OK);
        kvq_kv_commit(a, 0);
        assert_int_equal(kvq_kv_compact(a, 0, keep, n_keep), KVQ_OK);
        assert_int_equal(kvq_kv_append(b, 0, kk, vk, n_keep), KVQ_OK);
        kvq_kv_commit(b, 0);
        assert_int_equal(kvq_kv_bytes_used(a), kvq_kv_bytes_used(b));
        double ea = attn_err(a, q, kk, vk, n_keep), eb = attn_err(b, q, kk, vk, n_keep);
        fprintf(stderr, "%s compact 600 -> 250: attention error %.4f (a cache of the kept tokens: %.4f)\n", specs[si],
                ea, eb);
        if (ea > 1.35 * eb + 1e-3) fail_msg("%s: compacted error %.4f > 1.35 x %.4f", specs[si], ea, eb);
        kvq_kv_cache_free(a);
        kvq_kv_cache_free(b);
    }
    free(k); free(v); free(q); free(keep); free(kk); free(vk);
}

/* The window policy frees the middle: memory stays bounded over a long
 * generation, and attention is that of the sinks + window alone. */
static void test_window_bounded(void **st) {
    (void)st;
    const int nh = 4, nkv = 2, hd = 16, row = nkv * hd, sink = 4, win = 64, n = 3000;
    kvq_kv_geom g = {1, nh, nkv, hd, 4096, 0, 0};
    char err[256];
    kvq_kv_cache *c;
    assert_int_equal(kvq_kv_cache_new(&g, "f32+window:sink=4,win=64", NULL, &c, err, sizeof err), KVQ_OK);
    float *k = dense_rows(n, row, 21), *v = dense_rows(n, row, 22), *q = dense_rows(n, nh * hd, 23);
    float out[64];
    int32_t pos[1];
    uint64_t most = 0;
    for (int t = 0; t < n; t++) {
        pos[0] = t;
        kvq_kv_step sp = {.n = 1, .pos = pos, .mode = KVQ_STEP_DECODE};
        assert_int_equal(kvq_kv_step_begin(c, &sp), KVQ_OK);
        assert_int_equal(kvq_kv_step_layer(c, 0, q + (size_t)t * nh * hd, k + (size_t)t * row, v + (size_t)t * row,
                                           0.25f, out, 1),
                         KVQ_OK);
        assert_int_equal(kvq_kv_step_end(c, false), KVQ_OK);
        if (kvq_kv_bytes_allocated(c) > most) most = kvq_kv_bytes_allocated(c);
    }
    /* sinks rounded up to a page, the window, less than a page: 3 pages of 256 slots at most */
    assert_true(kvq_kv_n(c) < 256 + win + 256);
    assert_true(most <= 3ull * 256 * row * 4 * 2);
    /* the next query reads exactly the sinks and the last win tokens */
    float sk[(4 + 64) * 32], sv[(4 + 64) * 32];
    memcpy(sk, k, sink * row * 4);
    memcpy(sv, v, sink * row * 4);
    memcpy(sk + sink * row, k + (size_t)(n - win) * row, (size_t)win * row * 4);
    memcpy(sv + sink * row, v + (size_t)(n - win) * row, (size_t)win * row * 4);
    const kvq_kv_layer *L = &c->layers[0];
    float *o = malloc(nh * hd * 4);
    /* dense attention over sinks + window vs the policy's read of the compacted cache */
    int n_vis = L->n;
    assert_int_equal(kvq_kv_attend(c, 0, q, 1, n_vis, 0.25f, KVQ_VIEW_FULL, o, 1), KVQ_OK);
    kvq_kv_cache *d;
    assert_int_equal(kvq_kv_cache_new(&g, "f32", NULL, &d, err, sizeof err), KVQ_OK);
    assert_int_equal(kvq_kv_append(d, 0, sk, sv, sink + win), KVQ_OK);
    float *r = malloc(nh * hd * 4);
    assert_int_equal(kvq_kv_attend(d, 0, q, 1, sink + win, 0.25f, KVQ_VIEW_FULL, r, 1), KVQ_OK);
    assert_true(tu_nmse(r, o, nh * hd) < 1e-10);
    kvq_kv_cache_free(c);
    kvq_kv_cache_free(d);
    free(k); free(v); free(q); free(o); free(r);
}

/* ---- sessions on the real model ------------------------------------------ */

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) b = x[i] > x[b] ? i : b;
    return b;
}

/* Greedy: `steps` tokens after the prompt (or from the restored logits). */
static void greedy(kvq_ctx *c, const kvq_token *prompt, int n_prompt, int steps, float *logit_rows, kvq_token *out) {
    const int V = c->m->hp.n_vocab;
    float *lg = malloc((size_t)V * 4);
    if (n_prompt) {
        kvq_eval_opts o = kvq_eval_default_opts();
        o.prompt_end = true;
        assert_int_equal(kvq_eval_ex(c, prompt, n_prompt, &o, lg), KVQ_OK);
    } else {
        assert_non_null(kvq_ctx_logits(c));
        memcpy(lg, kvq_ctx_logits(c), (size_t)V * 4);
    }
    for (int i = 0; i < steps; i++) {
        kvq_token t = argmax(lg, V);
        out[i] = t;
        assert_int_equal(kvq_eval(c, &t, 1, false, lg), KVQ_OK);
        memcpy(logit_rows + (size_t)i * V, lg, (size_t)V * 4);
    }
    free(lg);
}

static int prompt_tokens(const kvq_model *m, kvq_token *t, int cap) {
    const char *text = "Once upon a time, there was a little dog named Max. Max liked to run in the park with his "
                       "friend Sue. One day, Sue found a big red ball under a tree. She threw the ball and Max ran "
                       "after it. The ball went into the pond, and Max jumped in to get it.";
    int n = 0;
    assert_int_equal(kvq_tokenize(m, text, strlen(text), true, t, cap, &n), KVQ_OK);
    return n;
}

static void test_session_bit_exact(void **st) {
    (void)st;
    const char *path = model_656k();
    if (!path) { skip(); return; }
    kvq_model *m = tu_load(path);
    const int V = m->hp.n_vocab, A = 40, B = 50;
    kvq_token prompt[256], ta[128], tb[128];
    const int np = prompt_tokens(m, prompt, 256);
    float *ref = malloc((size_t)(A + B) * V * 4), *got = malloc((size_t)(A + B) * V * 4);
    char file[] = "/tmp/kvq_session_XXXXXX";
    close(mkstemp(file));
    const char *specs[] = {"f32", "f16", "kivi:k4v2"};
    for (int si = 0; si < 3; si++) {
        kvq_ctx *a = ctx_for(m, specs[si], 32); /* prompt in chunks: KIVI quantizes at every commit */
        greedy(a, prompt, np, A + B, ref, ta);
        kvq_ctx *b = ctx_for(m, specs[si], 32);
        greedy(b, prompt, np, A, got, tb);
        assert_int_equal(kvq_ctx_save(b, file), KVQ_OK);
        kvq_ctx_free(b);
        kvq_ctx *c = ctx_for(m, specs[si], 32);
        assert_int_equal(kvq_ctx_load(c, file), KVQ_OK);
        assert_int_equal(kvq_ctx_n_past(c), np + A);
        greedy(c, NULL, 0, B, got + (size_t)A * V, tb + A);
        if (memcmp(ref, got, (size_t)(A + B) * V * 4)) fail_msg("%s: logits after save/load differ", specs[si]);
        kvq_ctx_free(a);
        kvq_ctx_free(c);
    }
    unlink(file);
    free(ref);
    free(got);
    kvq_model_free(m);
}

/* Mean KL(p || q) over rows of logits. */
static double mean_kl(const float *p, const float *q, int rows, int V) {
    double kl = 0;
    for (int r = 0; r < rows; r++) {
        const float *a = p + (size_t)r * V, *b = q + (size_t)r * V;
        double ma = a[argmax(a, V)], mb = b[argmax(b, V)], za = 0, zb = 0;
        for (int i = 0; i < V; i++) { za += exp(a[i] - ma); zb += exp(b[i] - mb); }
        for (int i = 0; i < V; i++) {
            double la = a[i] - ma - log(za), lb = b[i] - mb - log(zb);
            kl += exp(la) * (la - lb);
        }
    }
    return kl / rows;
}

/* Teacher-forced logits of `toks` after whatever the context holds. */
static void forced(kvq_ctx *c, const kvq_token *toks, int n, float *rows) {
    for (int i = 0; i < n; i++) assert_int_equal(kvq_eval(c, &toks[i], 1, false, rows + (size_t)i * c->m->hp.n_vocab), KVQ_OK);
}

static void test_session_converts(void **st) {
    (void)st;
    const char *path = model_656k();
    if (!path) { skip(); return; }
    kvq_model *m = tu_load(path);
    const int V = m->hp.n_vocab, N = 30;
    kvq_token prompt[256], cont[N];
    const int np = prompt_tokens(m, prompt, 256);
    for (int i = 0; i < N; i++) cont[i] = prompt[1 + i]; /* any fixed text */
    float *r32 = malloc((size_t)N * V * 4), *rk = malloc((size_t)N * V * 4), *rc = malloc((size_t)N * V * 4);
    kvq_ctx *a = ctx_for(m, "f32", 256);
    assert_int_equal(kvq_eval(a, prompt, np, false, NULL), KVQ_OK);
    forced(a, cont, N, r32);
    kvq_ctx *b = ctx_for(m, "kivi:k4v2", 256);
    assert_int_equal(kvq_eval(b, prompt, np, false, NULL), KVQ_OK);
    forced(b, cont, N, rk);
    /* the same prompt saved from f16, restored as kivi:k4v2 */
    kvq_ctx *f = ctx_for(m, "f16", 256);
    assert_int_equal(kvq_eval(f, prompt, np, false, NULL), KVQ_OK);
    char file[] = "/tmp/kvq_session_XXXXXX";
    close(mkstemp(file));
    assert_int_equal(kvq_ctx_save(f, file), KVQ_OK);
    kvq_ctx *c = ctx_for(m, "kivi:k4v2", 256);
    assert_int_equal(kvq_ctx_load(c, file), KVQ_OK);
    forced(c, cont, N, rc);
    double kl_k = mean_kl(r32, rk, N, V), kl_c = mean_kl(r32, rc, N, V);
    fprintf(stderr, "KL vs f32: kivi:k4v2 run %.3g, f16 session restored as kivi:k4v2 %.3g\n", kl_k, kl_c);
    /* within KIVI's own error: the restored cache is KIVI of f16 values */
    assert_true(kl_c <= 1.5 * kl_k + 1e-6);
    assert_true(kl_k > 0);
    /* bad session files leave the context empty, with a clear status */
    kvq_model_params mp = kvq_model_default_params();
    const char *other = tu_shared("models/stories260K/stories260K.bin"), *tok = tu_shared("models/stories260K/tok512.bin");
    if (other && tok) {
        mp.path = other;
        mp.tokenizer_path = tok;
        kvq_model *m2 = NULL;
        assert_int_equal(kvq_model_load(&mp, &m2), KVQ_OK);
        kvq_ctx *o = ctx_for(m2, "f16", 64);
        assert_int_equal(kvq_ctx_load(o, file), KVQ_ERR_ARG);
        assert_int_equal(kvq_ctx_n_past(o), 0);
        kvq_ctx_free(o);
        kvq_model_free(m2);
    }
    FILE *fp = fopen(file, "r+b");
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fputs("xyz", fp); /* bytes after the checksum: the reader must stop at the checksum, not ignore them */
    fclose(fp);
    assert_int_not_equal(kvq_ctx_load(c, file), KVQ_OK);
    assert_int_equal(kvq_ctx_n_past(c), 0);
    for (long cut = 0; cut < size; cut += size / 37 + 1) {
        assert_int_equal(truncate(file, cut), 0);
        assert_int_not_equal(kvq_ctx_load(c, file), KVQ_OK);
        assert_int_equal(kvq_ctx_n_past(c), 0);
        assert_int_equal(kvq_kv_n(c->kv), 0);
    }
    unlink(file);
    kvq_ctx_free(a); kvq_ctx_free(b); kvq_ctx_free(f); kvq_ctx_free(c);
    free(r32); free(rk); free(rc);
    kvq_model_free(m);
}

/* ---- two contexts on one model in two threads ---------------------------- */

typedef struct job { const kvq_model *m; const char *spec; int first; kvq_token out[40]; } job;

static void *run_job(void *arg) {
    job *j = arg;
    kvq_ctx_params p = kvq_ctx_default_params();
    p.kv_spec = j->spec;
    p.n_threads = 1;
    kvq_ctx *c = NULL;
    if (kvq_ctx_new(j->m, &p, &c)) return NULL;
    const int V = j->m->hp.n_vocab;
    float *lg = malloc((size_t)V * 4);
    kvq_token t[2] = {1, (kvq_token)j->first};
    kvq_eval(c, t, 2, false, lg);
    for (int i = 0; i < 40; i++) {
        kvq_token x = argmax(lg, V);
        j->out[i] = x;
        kvq_eval(c, &x, 1, false, lg);
    }
    free(lg);
    kvq_ctx_free(c);
    return NULL;
}

static void test_two_threads(void **st) {
    (void)st;
    const char *path = model_656k();
    if (!path) { skip(); return; }
    kvq_model *m = tu_load(path);
    job seq[2] = {{m, "kivi:k4v2", 100, {0}}, {m, "f16", 200, {0}}}, par[2];
    memcpy(par, seq, sizeof seq);
    run_job(&seq[0]);
    run_job(&seq[1]);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, run_job, &par[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) assert_memory_equal(seq[i].out, par[i].out, sizeof seq[i].out);
    assert_memory_not_equal(seq[0].out, seq[1].out, sizeof seq[0].out);
    kvq_model_free(m);
}

/* ---- weight sets ----------------------------------------------------------- */

static void test_weight_set_equals_file(void **st) {
    (void)st;
    const char *path = model_656k();
    if (!path) { skip(); return; }
    char file[] = "/tmp/kvq_q4_XXXXXX";
    close(mkstemp(file));
    assert_int_equal(kvq_quantize_rtn_gguf(path, file, KVQ_TYPE_Q4_0, 2, NULL), KVQ_OK);
    kvq_model *m = tu_load(path), *q = tu_load(file);
    int32_t set = 0;
    assert_int_equal(kvq_model_add_weight_set(m, "q4_0", 2, &set), KVQ_OK);
    assert_int_equal(set, 1);
    assert_true(kvq_model_weight_set_bytes(m, 1) < kvq_model_weight_set_bytes(m, 0));
    /* the norms are shared, not copied */
    assert_ptr_equal(kvq_model_set_layers(m, 1)[0].attn_norm.data, m->layers[0].attn_norm.data);
    const int V = m->hp.n_vocab;
    float *l1 = malloc((size_t)V * 4), *l2 = malloc((size_t)V * 4);
    kvq_ctx *a = ctx_for(m, "f32", 64), *b = ctx_for(q, "f32", 64);
    kvq_token ta = 1, tb = 1;
    kvq_eval_opts o = kvq_eval_default_opts();
    o.weight_set = 1;
    for (int i = 0; i < 60; i++) {
        assert_int_equal(kvq_eval_ex(a, &ta, 1, &o, l1), KVQ_OK);
        assert_int_equal(kvq_eval(b, &tb, 1, false, l2), KVQ_OK);
        assert_memory_equal(l1, l2, (size_t)V * 4);
        ta = tb = argmax(l1, V);
    }
    o.weight_set = 2;
    assert_int_equal(kvq_eval_ex(a, &ta, 1, &o, l1), KVQ_ERR_ARG);
    assert_int_equal(kvq_model_add_weight_set(m, "q9_9", 1, NULL), KVQ_ERR_IO); /* neither a type nor a file */
    kvq_ctx_free(a); kvq_ctx_free(b);
    free(l1); free(l2);
    kvq_model_free(m);
    kvq_model_free(q);
    unlink(file);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_order),           cmocka_unit_test(test_prefill_end_once),
        cmocka_unit_test(test_accept_flushes_only_verified), cmocka_unit_test(test_memory_follows_held),
        cmocka_unit_test(test_memory_cap),           cmocka_unit_test(test_kivi_compact),
        cmocka_unit_test(test_window_bounded),       cmocka_unit_test(test_session_bit_exact),
        cmocka_unit_test(test_session_converts),     cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_weight_set_equals_file),
    };
    /* make tsan runs the thread test alone: the others fork OpenMP teams,
     * whose uninstrumented barriers ThreadSanitizer would report */
    if (getenv("KVQ_TEST_FILTER")) cmocka_set_test_filter(getenv("KVQ_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
