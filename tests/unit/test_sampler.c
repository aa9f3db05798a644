/* The sampler's top-k / top-p cut: the sorted path (many candidates) keeps
 * exactly the set the definition gives, and a top-p over a large flat
 * vocabulary (a server request's) completes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

enum { V = 5000 };

static int desc(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* The distribution kvq_sampler_dist gives keeps the top-k ids, or the fewest
 * most probable ids whose mass reaches top_p, renormalized. */
static void check_cut(int top_k, float top_p) {
    float *logits = malloc(V * sizeof(float)), *probs = malloc(V * sizeof(float)), *sorted = malloc(V * sizeof(float));
    uint64_t r = 11;
    for (int i = 0; i < V; i++) logits[i] = tu_randn(&r) * 0.3f;
    kvq_sampler_params sp = kvq_sampler_default_params();
    sp.temp = 1.0f;
    sp.top_k = top_k;
    sp.top_p = top_p;
    kvq_sampler *s = NULL;
    assert_int_equal(kvq_sampler_new(&sp, V, &s), KVQ_OK);
    kvq_sampler_dist(s, logits, probs);
    /* the expected count from the definition */
    double mx = -1e30, sum = 0;
    for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < V; i++) sum += (sorted[i] = expf(logits[i] - (float)mx));
    qsort(sorted, V, sizeof *sorted, desc);
    int want = top_k > 0 ? top_k : V;
    double cum = 0;
    for (int i = 0; i < want; i++) {
        cum += sorted[i];
        if (top_p < 1 && cum / sum >= top_p) { want = i + 1; break; }
    }
    int kept = 0;
    float least = 1e30f;
    double tot = 0;
    for (int i = 0; i < V; i++)
        if (probs[i] > 0) {
            kept++;
            tot += probs[i];
            float e = expf(logits[i] - (float)mx);
            least = e < least ? e : least;
        }
    assert_int_equal(kept, want);
    assert_true(fabs(tot - 1.0) < 1e-4);
    assert_true(least >= sorted[want - 1] * (1 - 1e-6f)); /* the kept ones are the most probable */
    for (int d = 0; d < 50; d++) assert_true(probs[kvq_sampler_draw(s, probs)] > 0);
    kvq_sampler_free(s);
    free(logits);
    free(probs);
    free(sorted);
}

static void test_top_k_small(void **st) { (void)st; check_cut(40, 1.0f); }
static void test_top_k_large(void **st) { (void)st; check_cut(1000, 1.0f); }
static void test_top_p(void **st) { (void)st; check_cut(0, 0.9f); }
static void test_top_k_and_p(void **st) { (void)st; check_cut(2000, 0.5f); }

/* Top-p over a 128K vocabulary of equal logits: the mass is reached only
 * after 90% of the ids, which the O(n*k) selection would take minutes over. */
/* Against its definition: positive logits shrink, negative ones grow, each
 * distinct recent token once, the rest untouched. */
static void test_repeat_penalty(void **st) {
    (void)st;
    float l[6] = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f};
    const kvq_token recent[] = {0, 1, 0, 4, 99, -3};
    kvq_repeat_penalty(l, 6, recent, 6, 2.0f);
    const float want[6] = {1.0f, -2.0f, 0.5f, 3.0f, -4.0f, 1.0f};
    for (int i = 0; i < 6; i++) assert_float_equal(l[i], want[i], 0);
    kvq_repeat_penalty(l, 6, recent, 6, 1.0f);
    for (int i = 0; i < 6; i++) assert_float_equal(l[i], want[i], 0);
}

static void test_top_p_flat_vocab(void **st) {
    (void)st;
    const int n = 128256;
    float *logits = calloc((size_t)n, sizeof(float));
    kvq_sampler_params sp = kvq_sampler_default_params();
    sp.temp = 1.0f;
    sp.top_k = 0;
    sp.top_p = 0.9f;
    kvq_sampler *s = NULL;
    assert_int_equal(kvq_sampler_new(&sp, n, &s), KVQ_OK);
    for (int i = 0; i < 3; i++) {
        kvq_token t = kvq_sample(s, logits);
        assert_true(t >= 0 && t < (kvq_token)(0.9 * n) + 1); /* ties keep the lowest ids */
    }
    kvq_sampler_free(s);
    free(logits);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_k_small), cmocka_unit_test(test_top_k_large), cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_top_k_and_p), cmocka_unit_test(test_top_p_flat_vocab),
        cmocka_unit_test(test_repeat_penalty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
