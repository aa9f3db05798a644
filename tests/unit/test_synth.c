/* kvq synth writes GGUF files kvq (and llama.cpp) can load: every preset's
 * shape, every weight type, and the GGUF writer's layout. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "io/gguf.h"
#include "testutil.h"

static void synth_and_load(const char *preset, const char *type, int layers, const char *tok_from) {
    char path[] = "/tmp/kvq_synth_XXXXXX";
    close(mkstemp(path));
    kvq_synth_params p = kvq_synth_default_params();
    p.preset = preset;
    p.weight_type = type;
    p.out_path = path;
    p.n_layer = layers;
    p.n_ctx = 4096;
    p.tokenizer_from = tok_from;
    assert_int_equal(kvq_synth(&p), KVQ_OK);
    kvq_model_params mp = kvq_model_default_params();
    mp.path = path;
    kvq_model *m;
    assert_int_equal(kvq_model_load(&mp, &m), KVQ_OK);
    kvq_model_info in;
    kvq_model_get_info(m, &in);
    assert_int_equal(in.n_layer, layers);
    assert_int_equal(in.n_ctx_train, 4096);
    if (!strcmp(preset, "llama3.2-1b")) {
        assert_int_equal(in.n_embd, 2048);
        assert_int_equal(in.n_head_kv, 8);
        assert_string_equal(in.rope_scaling, "llama3");
    }
    if (!strcmp(preset, "qwen2.5-0.5b")) {
        assert_true(in.qkv_bias);
        assert_true(in.rope_neox);
    }
    /* the model runs */
    kvq_ctx_params cp = kvq_ctx_default_params();
    cp.n_ctx = 64;
    kvq_ctx *c;
    assert_int_equal(kvq_ctx_new(m, &cp, &c), KVQ_OK);
    kvq_token t[3] = {1, 5, 9};
    float *lg = malloc((size_t)in.n_vocab * sizeof(float));
    assert_int_equal(kvq_eval(c, t, 3, false, lg), KVQ_OK);
    for (int i = 0; i < in.n_vocab; i++) assert_true(lg[i] == lg[i]); /* no NaN */
    free(lg);
    kvq_ctx_free(c);
    kvq_model_free(m);
    unlink(path);
}

static void test_presets_and_types(void **st) {
    (void)st;
    const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_K", "q5_K", "q6_K"};
    for (int i = 0; i < 9; i++) synth_and_load("stories110m", types[i], 1, NULL);
    synth_and_load("llama3.2-1b", "q4_0", 1, NULL);
    synth_and_load("qwen2.5-0.5b", "q8_0", 1, NULL);
    synth_and_load("smollm2-360m", "q4_K", 1, NULL);
}

static void test_tokenizer_copy(void **st) {
    (void)st;
    TU_SHARED(tok, "tokenizers/ggml-vocab-gpt-2.gguf");
    synth_and_load("stories110m", "q8_0", 1, tok);
}

static void test_bad_params(void **st) {
    (void)st;
    kvq_synth_params p = kvq_synth_default_params();
    p.out_path = "/tmp/kvq_never";
    p.preset = "gpt-5";
    assert_int_equal(kvq_synth(&p), KVQ_ERR_ARG);
    p.preset = "stories110m";
    p.weight_type = "q3_X";
    assert_int_equal(kvq_synth(&p), KVQ_ERR_ARG);
    p.weight_type = "q8_0";
    p.n_ctx = 1 << 20;
    assert_int_equal(kvq_synth(&p), KVQ_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets_and_types), cmocka_unit_test(test_tokenizer_copy), cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
