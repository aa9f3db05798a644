/* Continuous batching (kvq_batch_eval): sequences run together must give
 * what each gives alone, so no sequence sees another's tokens, and one
 * item's failure must leave the others going. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static const char *model_656k(void) { return tu_shared("models/tinystories-656k"); } /* f32: every kernel path agrees to rounding */


static tu_log LOG;

static kvq_ctx *ctx_for(const kvq_model *m, const char *spec, int n_batch, uint64_t cap) {
    kvq_ctx_params p = kvq_ctx_default_params();
    p.kv_spec = spec;
    p.n_threads = 1;
    p.n_batch = n_batch;
    p.kv_mem_cap = cap;
    p.log = tu_log_cb;
    p.log_user = &LOG;
    kvq_ctx *c = NULL;
    assert_int_equal(kvq_ctx_new(m, &p, &c), KVQ_OK);
    return c;
}

static kvq_batch *batch_for(const kvq_model *m, int n_tokens, int n_seqs) {
    kvq_batch_params p = kvq_batch_default_params();
    p.n_tokens = n_tokens;
    p.n_seqs = n_seqs;
    p.n_threads = 1;
    p.log = tu_log_cb;
    p.log_user = &LOG;
    kvq_batch *b = NULL;
    assert_int_equal(kvq_batch_new(m, &p, &b), KVQ_OK);
    return b;
}

static int argmax(const float *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

/* Products over several rows may take another kernel than one row (the
 * accumulation order differs), so logits agree to float rounding, not bits. */
static void assert_close(const float *ref, const float *x, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += (double)(ref[i] - x[i]) * (ref[i] - x[i]);
        den += (double)ref[i] * ref[i];
    }
    if (num > 1e-8 * den) fprintf(stderr, "nmse %g\n", num / den);
    assert_true(num <= 1e-8 * den);
    assert_int_equal(argmax(ref, n), argmax(x, n));
}

#define NS 3
#define STEPS 12
static const char *SPECS[NS] = {"f16", "kivi:k4v2", "kivi:k2v2+snapkv:budget=24,window=8"};
static const char *PROMPTS[NS] = {"Once upon a time, there was a little girl named Lily.",
                                  "The dog ran to the park and saw a big red ball.",
                                  "Tom and his mom went to the store to buy some apples and a cake for the party."};

/* Greedy continuation of each prompt alone, with kvq_eval. */
static void reference(kvq_model *m, float *logits /* [NS][STEPS][V] */, kvq_token *toks /* [NS][STEPS] */) {
    const int V = kvq_vocab_size(m);
    for (int s = 0; s < NS; s++) {
        kvq_ctx *c = ctx_for(m, SPECS[s], 64, 0);
        kvq_token p[128];
        int n = 0;
        assert_int_equal(kvq_tokenize(m, PROMPTS[s], strlen(PROMPTS[s]), true, p, 128, &n), KVQ_OK);
        kvq_eval_opts o = kvq_eval_default_opts();
        o.prompt_end = true;
        float *lg = logits + (size_t)s * STEPS * V;
        assert_int_equal(kvq_eval_ex(c, p, n, &o, lg), KVQ_OK);
        for (int t = 0; t < STEPS; t++) {
            toks[s * STEPS + t] = argmax(lg + (size_t)t * V, V);
            if (t + 1 < STEPS) assert_int_equal(kvq_eval(c, &toks[s * STEPS + t], 1, false, lg + (size_t)(t + 1) * V), KVQ_OK);
        }
        kvq_ctx_free(c);
    }
}

/* Three sequences with different caches, their prompts prefilled in chunks
 * of 5 beside the others' decode steps, then decoding together. */
static void test_batch_equals_alone(void **st) {
    (void)st;
    const char *path = model_656k();
    if (!path) { skip(); return; }
    kvq_model *m = tu_load(path);
    const int V = kvq_vocab_size(m);
    float *ref = malloc((size_t)NS * STEPS * V * sizeof(float)), *lg = malloc((size_t)NS * V * sizeof(float));
    kvq_token rt[NS * STEPS];
    reference(m, ref, rt);
    kvq_ctx *c[NS];
    kvq_token p[NS][128];
    int np[NS], done[NS] = {0}, step[NS] = {0};
    for (int s = 0; s < NS; s++) {
        c[s] = ctx_for(m, SPECS[s], 64, 0);
        assert_int_equal(kvq_tokenize(m, PROMPTS[s], strlen(PROMPTS[s]), true, p[s], 128, &np[s]), KVQ_OK);
    }
    kvq_batch *b = batch_for(m, 32, 8);
    /* sequence s starts s passes late, so prompt chunks and decode steps mix */
    for (int pass = 0; pass < 64; pass++) {
        kvq_batch_item it[NS];
        int ni = 0, who[NS];
        kvq_token next[NS];
        for (int s = 0; s < NS; s++) {
            if (pass < s || step[s] >= STEPS) continue;
            kvq_batch_item x = {.ctx = c[s], .logits = lg + (size_t)s * V};
            if (done[s] < np[s]) {
                x.tokens = p[s] + done[s];
                x.n = np[s] - done[s] < 5 ? np[s] - done[s] : 5;
                x.prompt_end = done[s] + x.n == np[s];
                if (!x.prompt_end) x.logits = NULL;
            } else {
                next[s] = rt[s * STEPS + step[s] - 1]; /* the token the reference chose */
                x.tokens = &next[s];
                x.n = 1;
            }
            who[ni] = s;
            it[ni++] = x;
        }
        if (!ni) break;
        assert_int_equal(kvq_batch_eval(b, it, ni), KVQ_OK);
        for (int i = 0; i < ni; i++) {
            const int s = who[i];
            assert_int_equal(it[i].status, KVQ_OK);
            if (done[s] < np[s]) {
                done[s] += it[i].n;
                if (!it[i].prompt_end) continue;
            }
            assert_close(ref + ((size_t)s * STEPS + step[s]) * V, lg + (size_t)s * V, V);
            step[s]++;
        }
    }
    for (int s = 0; s < NS; s++) {
        assert_int_equal(step[s], STEPS);
        assert_int_equal(kvq_ctx_n_past(c[s]), np[s] + STEPS - 1);
        kvq_ctx_free(c[s]);
    }
    kvq_batch_free(b);
    free(ref);
    free(lg);
    kvq_model_free(m);
}

/* A sequence that runs out of KV memory fails alone; a bad item is refused
 * alone; a call over capacity is refused whole. */
static void test_item_failures_are_local(void **st) {
    (void)st;
    const char *path = model_656k();
    if (!path) { skip(); return; }
    kvq_model *m = tu_load(path);
    const int V = kvq_vocab_size(m);
    kvq_ctx *ok = ctx_for(m, "f16", 16, 0), *alone = ctx_for(m, "f16", 16, 0);
    kvq_kv_report r;
    assert_int_equal(kvq_kv_describe(m, "f16", 0, &r, NULL, 0), KVQ_OK);
    kvq_ctx *small = ctx_for(m, "f16", 16, (uint64_t)(r.bytes_per_token * 4)); /* room for about 4 tokens */
    kvq_batch *b = batch_for(m, 16, 4);
    kvq_token t8[8] = {1, 400, 401, 402, 403, 404, 405, 406};
    float *lg = malloc(2 * (size_t)V * sizeof(float)), *ref = malloc((size_t)V * sizeof(float));
    assert_int_equal(kvq_eval(alone, t8, 3, false, ref), KVQ_OK);
    kvq_batch_item it[2] = {{.ctx = ok, .tokens = t8, .n = 3, .logits = lg},
                            {.ctx = small, .tokens = t8, .n = 8, .logits = lg + V}};
    kvq_status s = kvq_batch_eval(b, it, 2);
    assert_int_not_equal(s, KVQ_OK);
    assert_int_equal(it[0].status, KVQ_OK);
    assert_int_not_equal(it[1].status, KVQ_OK);
    assert_int_equal(kvq_ctx_n_past(small), 0);
    assert_int_equal(kvq_ctx_n_past(ok), 3);
    assert_close(ref, lg, V);

    kvq_token bad = 1 << 20;
    kvq_batch_item dup[3] = {{.ctx = ok, .tokens = t8 + 3, .n = 1}, {.ctx = ok, .tokens = t8 + 4, .n = 1},
                             {.ctx = alone, .tokens = &bad, .n = 1}};
    assert_int_equal(kvq_batch_eval(b, dup, 3), KVQ_ERR_ARG);
    assert_int_equal(dup[0].status, KVQ_OK);
    assert_int_equal(dup[1].status, KVQ_ERR_ARG);
    assert_non_null(strstr(LOG.last, "outside the vocabulary"));
    assert_int_equal(dup[2].status, KVQ_ERR_ARG);
    assert_int_equal(kvq_ctx_n_past(ok), 4);
    assert_int_equal(kvq_ctx_n_past(alone), 3);

    kvq_batch_item big[2] = {{.ctx = ok, .tokens = t8, .n = 8}, {.ctx = alone, .tokens = t8, .n = 9}};
    assert_int_equal(kvq_batch_eval(b, big, 2), KVQ_ERR_ARG); /* 17 rows > 16 */
    assert_non_null(strstr(LOG.last, "exceeds its capacity"));
    assert_int_equal(kvq_ctx_n_past(ok), 4);
    kvq_ctx *tiny = ctx_for(m, "f16", 2, 0);
    kvq_batch_item over = {.ctx = tiny, .tokens = t8, .n = 3};
    assert_int_equal(kvq_batch_eval(b, &over, 1), KVQ_ERR_ARG); /* more than the context's own batch */
    assert_int_equal(over.status, KVQ_ERR_ARG);
    kvq_ctx_free(tiny);
    kvq_ctx_free(ok);
    kvq_ctx_free(alone);
    kvq_ctx_free(small);
    kvq_batch_free(b);
    free(lg);
    free(ref);
    kvq_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_alone),
        cmocka_unit_test(test_item_failures_are_local),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
