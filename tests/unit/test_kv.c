/* The KV cache interface with the reference codecs: attention against a
 * naive dense implementation, spec parsing, truncation, save/load,
 * accounting. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core/cpu.h"
#include "core/fp16.h"
#include "kernels/types.h"
#include "kv/kv.h"
#include "kv/kv_simd.h"
#include "testutil.h"

/* Naive causal attention for query heads sharing KV heads (GQA). */
static void naive_attn(const float *q, const float *k, const float *v, int n_vis, int nh, int nkv, int hd, float *out) {
    int rep = nh / nkv;
    double *s = malloc(sizeof(double) * (size_t)n_vis);
    for (int h = 0; h < nh; h++) {
        int g = h / rep;
        double mx = -1e300, sum = 0;
        for (int t = 0; t < n_vis; t++) {
            double d = 0;
            for (int i = 0; i < hd; i++) d += (double)q[h * hd + i] * k[((size_t)t * nkv + g) * hd + i];
            s[t] = d / sqrt((double)hd);
            if (s[t] > mx) mx = s[t];
        }
        for (int t = 0; t < n_vis; t++) { s[t] = exp(s[t] - mx); sum += s[t]; }
        for (int i = 0; i < hd; i++) {
            double o = 0;
            for (int t = 0; t < n_vis; t++) o += s[t] * v[((size_t)t * nkv + g) * hd + i];
            out[h * hd + i] = (float)(o / sum);
        }
    }
    free(s);
}

static void check_codec(const char *spec, int n_ctx, int hd, double max_rel, int n_threads) {
    const int nh = 8, nkv = 2, nl = 2, n = n_ctx - 3;
    kvq_kv_geom g = {nl, nh, nkv, hd, n_ctx, 0, 0};
    kvq_kv_cache *c;
    char err[256];
    assert_int_equal(kvq_kv_cache_new(&g, spec, NULL, &c, err, sizeof err), KVQ_OK);
    uint64_t s = 7;
    size_t kvn = (size_t)n * nkv * hd;
    float *k = malloc(kvn * 4), *v = malloc(kvn * 4), *q = malloc((size_t)nh * hd * 4 * 4);
    float *o = malloc((size_t)nh * hd * 4 * 4), *r = malloc((size_t)nh * hd * 4);
    for (size_t i = 0; i < kvn; i++) { k[i] = tu_randn(&s); v[i] = tu_randn(&s); }
    for (int i = 0; i < nh * hd * 4; i++) q[i] = 2 * tu_randn(&s);
    /* append in uneven chunks, as prefill + decode would */
    for (int il = 0; il < nl; il++) {
        int done = 0, step = 1;
        while (done < n) {
            int m = n - done < step ? n - done : step;
            assert_int_equal(kvq_kv_append(c, il, k + (size_t)done * nkv * hd, v + (size_t)done * nkv * hd, m), KVQ_OK);
            done += m;
            step = step * 3 + 1;
        }
    }
    assert_int_equal(kvq_kv_n(c), n);
    /* 4 queries as a causal batch: query i sees n-3+i slots */
    int n_vis0 = n - 3;
    assert_int_equal(kvq_kv_attend(c, 1, q, 4, n_vis0, 1.0f / sqrtf((float)hd), KVQ_VIEW_FULL, o, n_threads), KVQ_OK);
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        naive_attn(q + (size_t)i * nh * hd, k, v, n_vis0 + i, nh, nkv, hd, r);
        double e = sqrt(tu_nmse(r, o + (size_t)i * nh * hd, (size_t)nh * hd));
        if (e > worst) worst = e;
    }
    if (worst > max_rel) fail_msg("%s ctx %d hd %d threads %d: relative error %.3g > %.3g", spec, n_ctx, hd, n_threads, worst, max_rel);
    /* exact accounting: f32 = 8 bytes per value pair, f16 = 4 */
    uint64_t per = !strcmp(spec, "f32") ? 8 : 4;
    assert_int_equal(kvq_kv_bytes_used(c), (uint64_t)n * nkv * hd * per * nl);
    kvq_kv_cache_free(c);
    free(k); free(v); free(q); free(o); free(r);
}

static void test_attention_matches_naive(void **st) {
    (void)st;
    int hds[] = {8, 16, 64, 128};
    for (int i = 0; i < 4; i++) {
        check_codec("f32", 300, hds[i], 1e-5, 1);
        check_codec("f32", 3000, hds[i], 1e-5, 2); /* several chunks merged */
        check_codec("f16", 300, hds[i], 2e-3, 2);
    }
}

/* A batch of consecutive query positions (a verify pass, a prompt chunk)
 * must give each query, bit for bit, what it gets alone: the speculative
 * decoder's greedy output equals plain decoding only if it does. Across
 * codecs, views, a block of queries longer than the driver's (16), chunked
 * ranges (2 KV heads on 2 threads), and, for hier, positions on both sides
 * of a block flush (128 | 2560). */
static void test_batched_equals_single(void **st) {
    (void)st;
    const char *specs[] = {"f32", "f16", "q8_0", "q4_0", "q4_0:rot", "kivi:k4v2", "kivi:k2v2,g=64", "pertoken:k4v4", "hier",
                           "hier:g=32", "f16+window:sink=4,win=700"};
    const int nh = 8, nkv = 2, hd = 64, n = 2570, nq = 20, n_vis0 = n - nq + 1;
    for (size_t si = 0; si < sizeof specs / sizeof *specs; si++)
        for (int view = 0; view < 2; view++) {
            if (view == KVQ_VIEW_DRAFT && strncmp(specs[si], "hier", 4)) continue;
            kvq_kv_geom g = {1, nh, nkv, hd, n, 300, 0};
            kvq_kv_cache *c;
            char err[256];
            assert_int_equal(kvq_kv_cache_new(&g, specs[si], NULL, &c, err, sizeof err), KVQ_OK);
            uint64_t r = 11;
            const size_t kvn = (size_t)n * nkv * hd;
            float *k = malloc(kvn * 4), *v = malloc(kvn * 4), *q = malloc((size_t)nq * nh * hd * 4);
            float *ob = malloc((size_t)nq * nh * hd * 4), *o1 = malloc((size_t)nh * hd * 4);
            for (size_t i = 0; i < kvn; i++) { k[i] = tu_randn(&r); v[i] = tu_randn(&r); }
            for (int i = 0; i < nq * nh * hd; i++) q[i] = 2 * tu_randn(&r);
            /* the queries' tokens after the first are pending, as in a verify pass:
             * hier then keeps block [2304, 2432) in both forms, and the queries
             * before and after 2560 read it differently */
            for (int done = 0, m; done < n; done += m) {
                m = n_vis0 - done < 300 ? n_vis0 - done : 300;
                if (done == n_vis0) m = n - n_vis0;
                assert_int_equal(kvq_kv_append(c, 0, k + (size_t)done * nkv * hd, v + (size_t)done * nkv * hd, m), KVQ_OK);
                if (done + m <= n_vis0) kvq_kv_commit(c, 0);
            }
            assert_int_equal(kvq_kv_attend(c, 0, q, nq, n_vis0, 0.125f, view, ob, 2), KVQ_OK);
            for (int i = 0; i < nq; i++) {
                assert_int_equal(kvq_kv_attend(c, 0, q + (size_t)i * nh * hd, 1, n_vis0 + i, 0.125f, view, o1, 2), KVQ_OK);
                if (memcmp(o1, ob + (size_t)i * nh * hd, (size_t)nh * hd * sizeof(float)))
                    fail_msg("%s view %d: query %d of the batch differs from the same query alone", specs[si], view, i);
            }
            kvq_kv_cache_free(c);
            free(k); free(v); free(q); free(ob); free(o1);
        }
}

/* The per-token codecs keep a row and a batch of queries on the stack:
 * a head_dim they cannot hold is refused with a message, never overrun. */
static void test_pertoken_head_dim_bound(void **st) {
    (void)st;
    const char *specs[] = {"q8_0", "q4_0", "pertoken:k4v4"};
    for (int i = 0; i < 3; i++) {
        kvq_kv_geom g = {1, 2, 2, 2048, 64, 0, 0};
        kvq_kv_cache *c = NULL;
        char err[256] = "";
        assert_int_equal(kvq_kv_cache_new(&g, specs[i], NULL, &c, err, sizeof err), KVQ_ERR_UNSUPPORTED);
        assert_null(c);
        assert_non_null(strstr(err, "head_dim 2048"));
        g.head_dim = 1024; /* the largest it takes */
        assert_int_equal(kvq_kv_cache_new(&g, specs[i], NULL, &c, err, sizeof err), KVQ_OK);
        kvq_kv_cache_free(c);
    }
}

static void test_spec_parsing(void **st) {
    (void)st;
    kvq_kv_spec s;
    char err[256], buf[512];
    assert_int_equal(kvq_kv_spec_parse("f16", &s, err, sizeof err), KVQ_OK);
    assert_string_equal(s.codec, "f16");
    assert_string_equal(s.policy, "full");
    assert_int_equal(kvq_kv_spec_parse(NULL, &s, err, sizeof err), KVQ_OK);
    assert_string_equal(s.codec, "f16");
    assert_int_equal(kvq_kv_spec_parse("f32+full", &s, err, sizeof err), KVQ_OK);
    kvq_kv_spec_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "f32");
    const char *bad[] = {"nope", "f16+nope", "f16:", "f16:a,,b", "f16:a,", ":x", "f16+full+full", "f16:=3", "f16:k="};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        if (kvq_kv_spec_parse(bad[i], &s, err, sizeof err) == KVQ_OK) fail_msg("accepted '%s'", bad[i]);
        assert_true(err[0] != 0);
    }
    kvq_kv_geom g = {2, 4, 2, 16, 64, 0, 0};
    kvq_kv_cache *c = NULL;
    assert_int_equal(kvq_kv_cache_new(&g, "f16:k4v2", NULL, &c, err, sizeof err), KVQ_ERR_ARG);
    assert_non_null(strstr(err, "takes no options"));
    assert_null(c);
}

/* KIVI's packed state (key blocks, quad-interleaved value rows, fp16 window)
 * survives save and load exactly. */
/* llama.cpp's q8_0 / q4_0 caches hold keys in tiles of 8 tokens
 * (blk_kernels.h): a key reads back as ggml's own quantizer gives it, at any
 * slot of any page; a session file round-trips exactly; compaction moves
 * keys and values between lanes and tiles exactly. */
static void test_blk_key_tiles(void **st) {
    (void)st;
    enum { N = 600, NKV = 2, HD = 64, KEEP = 77 };
    static float k[N * NKV * HD], v[N * NKV * HD], ka[N * NKV * HD], va[N * NKV * HD], kb[N * NKV * HD], vb[N * NKV * HD];
    uint64_t r = 9;
    for (int i = 0; i < N * NKV * HD; i++) { k[i] = 3 * tu_randn(&r); v[i] = tu_randn(&r); }
    const char *specs[] = {"q8_0", "q4_0"};
    for (int si = 0; si < 2; si++) {
        kvq_kv_geom g = {1, 4, NKV, HD, N, 0, 0};
        char err[256];
        kvq_kv_cache *a, *b;
        assert_int_equal(kvq_kv_cache_new(&g, specs[si], NULL, &a, err, sizeof err), KVQ_OK);
        assert_int_equal(kvq_kv_cache_new(&g, specs[si], NULL, &b, err, sizeof err), KVQ_OK);
        for (int done = 0, m; done < N; done += m) { /* appends that straddle tiles and pages */
            m = N - done < 37 ? N - done : 37;
            assert_int_equal(kvq_kv_append(a, 0, k + (size_t)done * NKV * HD, v + (size_t)done * NKV * HD, m), KVQ_OK);
            kvq_kv_commit(a, 0);
        }
        a->codec->read(&a->layers[0], KVQ_VIEW_FULL, 0, N, ka, va);
        const kvq_type_traits *tr = kvq_traits_isa(si ? KVQ_TYPE_Q4_0 : KVQ_TYPE_Q8_0, KVQ_ISA_SCALAR);
        for (int i = 0; i < N * NKV; i++) {
            uint8_t blk[HD / 32 * 34];
            float ref[HD];
            tr->from_float(k + (size_t)i * HD, blk, HD);
            tr->to_float(blk, ref, HD);
            if (memcmp(ref, ka + (size_t)i * HD, sizeof ref)) fail_msg("%s: key row %d is not ggml's", specs[si], i);
        }
        char path[] = "/tmp/kvq_blk_XXXXXX";
        close(mkstemp(path));
        assert_int_equal(kvq_kv_save(a, path), KVQ_OK);
        assert_int_equal(kvq_kv_load(b, path), KVQ_OK);
        b->codec->read(&b->layers[0], KVQ_VIEW_FULL, 0, N, kb, vb);
        assert_memory_equal(ka, kb, sizeof ka);
        assert_memory_equal(va, vb, sizeof va);
        /* a file cut inside the rows the tiles are read from is an error, and leaves the cache empty */
        kvq_kv_cache *c;
        assert_int_equal(kvq_kv_cache_new(&g, specs[si], NULL, &c, err, sizeof err), KVQ_OK);
        assert_int_equal(kvq_kv_save(a, path), KVQ_OK);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        const long size = ftell(f);
        fclose(f);
        assert_int_equal(truncate(path, size - 1000), 0);
        assert_int_equal(kvq_kv_load(c, path), KVQ_ERR_FORMAT);
        assert_int_equal(kvq_kv_n(c), 0);
        kvq_kv_cache_free(c);
        unlink(path);
        int32_t keep[NKV * KEEP];
        for (int h = 0; h < NKV; h++)
            for (int j = 0; j < KEEP; j++) keep[h * KEEP + j] = j * 7 + 3 * h + (j > 40 ? 2 : 0);
        assert_int_equal(kvq_kv_compact(a, 0, keep, KEEP), KVQ_OK);
        a->codec->read(&a->layers[0], KVQ_VIEW_FULL, 0, KEEP, kb, vb);
        for (int h = 0; h < NKV; h++)
            for (int j = 0; j < KEEP; j++) {
                const size_t to = ((size_t)j * NKV + h) * HD, from = ((size_t)keep[h * KEEP + j] * NKV + h) * HD;
                if (memcmp(kb + to, ka + from, HD * sizeof(float)) || memcmp(vb + to, va + from, HD * sizeof(float)))
                    fail_msg("%s: compacted token %d of head %d differs", specs[si], j, h);
            }
        kvq_kv_cache_free(a);
        kvq_kv_cache_free(b);
    }
}

static void test_kivi_save_load(void **st) {
    (void)st;
    kvq_kv_geom g = {1, 4, 2, 64, 256, 0, 0};
    char err[256];
    kvq_kv_cache *a, *b;
    assert_int_equal(kvq_kv_cache_new(&g, "kivi:k4v2", NULL, &a, err, sizeof err), KVQ_OK);
    assert_int_equal(kvq_kv_cache_new(&g, "kivi:k4v2", NULL, &b, err, sizeof err), KVQ_OK);
    static float k[150 * 128], v[150 * 128];
    uint64_t s = 5;
    for (int i = 0; i < 150 * 128; i++) { k[i] = tu_randn(&s); v[i] = tu_randn(&s); }
    assert_int_equal(kvq_kv_append(a, 0, k, v, 150), KVQ_OK);
    kvq_kv_commit(a, 0);
    char path[] = "/tmp/kvq_kivi_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    assert_int_equal(kvq_kv_save(a, path), KVQ_OK);
    assert_int_equal(kvq_kv_load(b, path), KVQ_OK);
    unlink(path);
    static float ka[150 * 128], kb[150 * 128], va[150 * 128], vb[150 * 128];
    a->codec->read(&a->layers[0], KVQ_VIEW_FULL, 0, 150, ka, va);
    b->codec->read(&b->layers[0], KVQ_VIEW_FULL, 0, 150, kb, vb);
    assert_memory_equal(ka, kb, sizeof ka);
    assert_memory_equal(va, vb, sizeof va);
    assert_true(tu_nmse(v, va, 150 * 128) > 1e-4); /* the values were really quantized */
    kvq_kv_cache_free(a);
    kvq_kv_cache_free(b);
}

static void test_truncate_save_load(void **st) {
    (void)st;
    kvq_kv_geom g = {2, 4, 2, 16, 64, 0, 0};
    char err[256];
    kvq_kv_cache *a, *b;
    assert_int_equal(kvq_kv_cache_new(&g, "f16", NULL, &a, err, sizeof err), KVQ_OK);
    assert_int_equal(kvq_kv_cache_new(&g, "f16", NULL, &b, err, sizeof err), KVQ_OK);
    float k[40 * 32], v[40 * 32];
    uint64_t s = 3;
    for (int i = 0; i < 40 * 32; i++) { k[i] = tu_randn(&s); v[i] = tu_randn(&s); }
    for (int il = 0; il < 2; il++) assert_int_equal(kvq_kv_append(a, il, k, v, 40), KVQ_OK);
    assert_int_equal(kvq_kv_truncate(a, 30), KVQ_OK);
    assert_int_equal(kvq_kv_n(a), 30);
    char path[] = "/tmp/kvq_kv_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    assert_int_equal(kvq_kv_save(a, path), KVQ_OK);
    assert_int_equal(kvq_kv_load(b, path), KVQ_OK);
    assert_int_equal(kvq_kv_n(b), 30);
    float ka[30 * 32], kb[30 * 32], va[30 * 32], vb[30 * 32];
    for (int il = 0; il < 2; il++) {
        a->codec->read(&a->layers[il], KVQ_VIEW_FULL, 0, 30, ka, va);
        b->codec->read(&b->layers[il], KVQ_VIEW_FULL, 0, 30, kb, vb);
        assert_memory_equal(ka, kb, sizeof ka);
        assert_memory_equal(va, vb, sizeof va);
    }
    /* a cache of another spec converts the file through the codecs (f16 -> f32 is exact) */
    kvq_kv_cache *d, *e;
    assert_int_equal(kvq_kv_cache_new(&g, "f32", NULL, &d, err, sizeof err), KVQ_OK);
    assert_int_equal(kvq_kv_load(d, path), KVQ_OK);
    assert_int_equal(kvq_kv_n(d), 30);
    for (int il = 0; il < 2; il++) {
        a->codec->read(&a->layers[il], KVQ_VIEW_FULL, 0, 30, ka, va);
        d->codec->read(&d->layers[il], KVQ_VIEW_FULL, 0, 30, kb, vb);
        assert_memory_equal(ka, kb, sizeof ka);
        assert_memory_equal(va, vb, sizeof va);
    }
    /* a cache of another geometry refuses it */
    kvq_kv_geom g2 = {2, 4, 2, 8, 64, 0, 0};
    assert_int_equal(kvq_kv_cache_new(&g2, "f16", NULL, &e, err, sizeof err), KVQ_OK);
    assert_int_equal(kvq_kv_load(e, path), KVQ_ERR_ARG);
    kvq_kv_cache_free(e);
    /* a file of an older format version is refused, not misread */
    kvq_kv_save(a, path);
    FILE *vf = fopen(path, "r+b");
    uint32_t old_ver = 1;
    assert_non_null(vf);
    fseek(vf, 4, SEEK_SET);
    fwrite(&old_ver, 4, 1, vf);
    fclose(vf);
    assert_int_equal(kvq_kv_load(b, path), KVQ_ERR_FORMAT);
    kvq_kv_save(a, path);
    /* a truncated file is an error and leaves the cache empty */
    truncate(path, 100);
    assert_int_equal(kvq_kv_load(b, path), KVQ_ERR_FORMAT);
    assert_int_equal(kvq_kv_n(b), 0);
    unlink(path);
    /* appending past the context is a clean error */
    assert_int_equal(kvq_kv_append(a, 0, k, v, 40), KVQ_ERR_CONTEXT_FULL);
    kvq_kv_cache_free(a);
    kvq_kv_cache_free(b);
    kvq_kv_cache_free(d);
}

static void test_bytes_for(void **st) {
    (void)st;
    kvq_kv_geom g = {5, 8, 4, 8, 512, 0, 0}; /* stories260K */
    uint64_t b;
    char err[128];
    assert_int_equal(kvq_kv_bytes_for(&g, "f16", 512, &b, err, sizeof err), KVQ_OK);
    assert_int_equal(b, 512ull * 5 * 4 * 8 * 2 * 2);
    assert_int_equal(kvq_kv_bytes_for(&g, "f32", 1, &b, err, sizeof err), KVQ_OK);
    assert_int_equal(b, 5ull * 4 * 8 * 2 * 4);
}

/* Every SIMD attention kernel against its scalar reference. */
static void test_attn_kernels_isa(void **st) {
    (void)st;
    const kvq_attn_kernels *ref = kvq_attn_kernels_isa(KVQ_ISA_SCALAR);
    uint64_t s = 11;
    enum { HD = 128, NQ = 7, N = 100 };
    float kt32[HD * KVQ_KT], q[NQ * HD], w[NQ * N], v32[N * HD];
    uint16_t kt16[HD * KVQ_KT], v16[N * HD];
    for (int i = 0; i < HD * KVQ_KT; i++) { kt32[i] = tu_randn(&s); kt16[i] = kvq_f32_to_f16(kt32[i]); }
    for (int i = 0; i < N * HD; i++) { v32[i] = tu_randn(&s); v16[i] = kvq_f32_to_f16(v32[i]); }
    for (int i = 0; i < NQ * HD; i++) q[i] = tu_randn(&s);
    for (int i = 0; i < NQ * N; i++) w[i] = fabsf(tu_randn(&s));
    int hds[] = {8, 16, 40, 64, 80, 128}; /* 40: registers of 16 channels, then one of 8 */
    for (int isa = 1; isa < KVQ_ISA_COUNT; isa++) {
        if (!kvq_isa_supported(isa)) continue;
        const kvq_attn_kernels *k = kvq_attn_kernels_isa(isa);
        for (int hi = 0; hi < 6; hi++) {
            int hd = hds[hi];
            for (int nq = 1; nq <= NQ; nq += 3) {
                float a[NQ * KVQ_KT], b[NQ * KVQ_KT];
                ref->qk_tile_f16(kt16, hd, q, nq, a, KVQ_KT);
                k->qk_tile_f16(kt16, hd, q, nq, b, KVQ_KT);
                if (tu_nmse(a, b, (size_t)nq * KVQ_KT) > 1e-10) fail_msg("qk f16 isa %d hd %d nq %d", isa, hd, nq);
                ref->qk_tile_f32(kt32, hd, q, nq, a, KVQ_KT);
                k->qk_tile_f32(kt32, hd, q, nq, b, KVQ_KT);
                if (tu_nmse(a, b, (size_t)nq * KVQ_KT) > 1e-10) fail_msg("qk f32 isa %d hd %d nq %d", isa, hd, nq);
                float oa[NQ * HD] = {0}, ob[NQ * HD] = {0};
                ref->av_f16(v16, N, hd, w, N, nq, oa);
                k->av_f16(v16, N, hd, w, N, nq, ob);
                if (tu_nmse(oa, ob, (size_t)nq * hd) > 1e-10) fail_msg("av f16 isa %d hd %d nq %d", isa, hd, nq);
                memset(oa, 0, sizeof oa);
                memset(ob, 0, sizeof ob);
                ref->av_f32(v32, N, hd, w, N, nq, oa);
                k->av_f32(v32, N, hd, w, N, nq, ob);
                if (tu_nmse(oa, ob, (size_t)nq * hd) > 1e-10) fail_msg("av f32 isa %d hd %d nq %d", isa, hd, nq);
            }
        }
        for (int n = 1; n <= N; n += 13) {
            float sa[N], sb[N];
            for (int i = 0; i < n; i++) sa[i] = sb[i] = 10 * tu_randn(&s);
            float ma = 0.5f, la = 2, mb = 0.5f, lb = 2;
            float ca = ref->softmax_step(sa, n, 0.3f, &ma, &la), cb = k->softmax_step(sb, n, 0.3f, &mb, &lb);
            assert_float_equal(ma, mb, 0);
            assert_float_equal(ca, cb, 1e-6 * ca);
            assert_float_equal(la, lb, 1e-5 * la);
            if (tu_nmse(sa, sb, (size_t)n) > 1e-10) /* polynomial exp: relative error below 1e-5 */ fail_msg("softmax isa %d n %d nmse %g", isa, n, tu_nmse(sa, sb, (size_t)n));
        }
    }
}

/* window policy: a query reads the sinks and the recent window only. */
static void test_window_policy(void **st) {
    (void)st;
    const int hd = 16, nkv = 1, nh = 1, n = 100;
    kvq_kv_geom g = {1, nh, nkv, hd, 128, 0, 0};
    char err[256];
    kvq_kv_cache *c;
    assert_int_equal(kvq_kv_cache_new(&g, "f32+window:sink=2,win=10", NULL, &c, err, sizeof err), KVQ_OK);
    float k[100 * 16], v[100 * 16], q[16], out[16], ref[16];
    uint64_t s = 5;
    for (int i = 0; i < n * hd; i++) { k[i] = tu_randn(&s); v[i] = tu_randn(&s); }
    for (int i = 0; i < hd; i++) q[i] = tu_randn(&s);
    assert_int_equal(kvq_kv_append(c, 0, k, v, n), KVQ_OK);
    assert_int_equal(kvq_kv_attend(c, 0, q, 1, n, 0.25f, KVQ_VIEW_FULL, out, 1), KVQ_OK);
    /* reference over slots {0,1} U {90..99} */
    float kk[12 * 16], vv[12 * 16];
    memcpy(kk, k, 2 * 16 * 4); memcpy(vv, v, 2 * 16 * 4);
    memcpy(kk + 32, k + 90 * 16, 10 * 16 * 4); memcpy(vv + 32, v + 90 * 16, 10 * 16 * 4);
    double sc[12], mx = -1e9, sum = 0;
    for (int t = 0; t < 12; t++) {
        double d = 0;
        for (int i = 0; i < hd; i++) d += q[i] * kk[t * hd + i];
        sc[t] = d * 0.25;
        mx = sc[t] > mx ? sc[t] : mx;
    }
    for (int t = 0; t < 12; t++) { sc[t] = exp(sc[t] - mx); sum += sc[t]; }
    for (int i = 0; i < hd; i++) {
        double o = 0;
        for (int t = 0; t < 12; t++) o += sc[t] * vv[t * hd + i];
        ref[i] = (float)(o / sum);
    }
    assert_true(tu_nmse(ref, out, hd) < 1e-10);
    kvq_kv_cache_free(c);
    assert_int_equal(kvq_kv_cache_new(&g, "f32+window:size=3", NULL, &c, err, sizeof err), KVQ_ERR_ARG);
    assert_non_null(strstr(err, "unknown option"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_matches_naive),
        cmocka_unit_test(test_batched_equals_single), cmocka_unit_test(test_pertoken_head_dim_bound), cmocka_unit_test(test_spec_parsing),
        cmocka_unit_test(test_truncate_save_load),      cmocka_unit_test(test_kivi_save_load), cmocka_unit_test(test_blk_key_tiles),      cmocka_unit_test(test_bytes_for),
        cmocka_unit_test(test_attn_kernels_isa),        cmocka_unit_test(test_window_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
