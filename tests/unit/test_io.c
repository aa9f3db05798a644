/* safetensors, llama2.c and HF-folder loaders against malformed input. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "io/safetensors.h"
#include "testutil.h"

static tu_buf st_file(const char *json, size_t data_bytes) {
    tu_buf b = {0};
    tu_u64(&b, strlen(json));
    tu_put(&b, json, strlen(json));
    uint8_t z = 0;
    for (size_t i = 0; i < data_bytes; i++) tu_put(&b, &z, 1);
    return b;
}

static void st_expect(const char *json, size_t data, kvq_status want, const char *needle) {
    tu_buf b = st_file(json, data);
    tu_log l = {0};
    kvq_logger lg = {tu_log_cb, &l};
    kvq_safetensors s;
    kvq_status st = kvq_safetensors_parse(b.p, b.n, &s, &lg);
    if (st == KVQ_OK) kvq_safetensors_free(&s);
    if (st != want) fail_msg("'%s': status %d, want %d (%s)", json, st, want, l.last);
    if (needle && !strstr(l.last, needle)) fail_msg("'%s': error '%s' lacks '%s'", json, l.last, needle);
    free(b.p);
}

static void test_safetensors(void **st) {
    (void)st;
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, KVQ_OK, NULL);
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 8, KVQ_ERR_FORMAT, "outside");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 16, KVQ_ERR_FORMAT, "its shape needs");
    st_expect("{\"a\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, KVQ_ERR_UNSUPPORTED, "unknown dtype");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", 16,
              KVQ_ERR_FORMAT, "invalid shape");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, KVQ_ERR_FORMAT, "overlap");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,16]}}", 16, KVQ_ERR_FORMAT, "invalid shape");
    st_expect("not json at all", 0, KVQ_ERR_FORMAT, "not a JSON object");
    st_expect("{\"a\":{\"dtype\":\"F32\"}}", 0, KVQ_ERR_FORMAT, "lacks");
    /* header length beyond the file */
    tu_buf b = {0};
    tu_u64(&b, 1ull << 62);
    tu_put(&b, "{}", 2);
    kvq_safetensors s;
    assert_int_equal(kvq_safetensors_parse(b.p, b.n, &s, NULL), KVQ_ERR_FORMAT);
    free(b.p);
}

static kvq_status load(const char *path, const char *tok, tu_log *l) {
    kvq_model_params p = kvq_model_default_params();
    p.path = path;
    p.tokenizer_path = tok;
    p.log = tu_log_cb;
    p.log_user = l;
    memset(l, 0, sizeof *l);
    kvq_model *m = NULL;
    kvq_status st = kvq_model_load(&p, &m);
    kvq_model_free(m);
    return st;
}

static void test_llama2c(void **st) {
    (void)st;
    TU_SHARED(model, "models/stories260K/stories260K.bin");
    TU_SHARED(tok, "models/stories260K/tok512.bin");
    tu_log l;
    char path[] = "/tmp/kvq_l2c_XXXXXX", tpath[] = "/tmp/kvq_tok_XXXXXX";
    close(mkstemp(path));
    close(mkstemp(tpath));
    /* absurd header values */
    int32_t hdr[7] = {64, 172, 5, 8, 4, 512, 512};
    int32_t bad[][7] = {{0, 172, 5, 8, 4, 512, 512}, {64, 172, 5, 8, 3, 512, 512}, {64, 172, 5, 7, 7, 512, 512},
                        {64, 172, 5, 8, 4, (int32_t)0x80000000, 512}, {1 << 30, 172, 5, 8, 4, 512, 512}};
    for (int i = 0; i < 5; i++) {
        tu_write_file(path, bad[i], sizeof bad[i]);
        assert_int_not_equal(load(path, tok, &l), KVQ_OK);
        assert_non_null(strstr(l.last, "llama2.c"));
    }
    /* valid header, truncated weights */
    tu_write_file(path, hdr, sizeof hdr);
    assert_int_equal(load(path, tok, &l), KVQ_ERR_FORMAT);
    assert_non_null(strstr(l.last, "truncated"));
    /* tokenizer entries whose length runs past the file */
    uint8_t tk[4 + 8 + 3] = {0};
    int32_t len = 1 << 30;
    memcpy(tk + 8, &len, 4);
    tu_write_file(tpath, tk, sizeof tk);
    assert_int_equal(load(model, tpath, &l), KVQ_ERR_FORMAT);
    assert_non_null(strstr(l.last, "beyond the file"));
    /* too few tokens for the model's vocabulary */
    tu_write_file(tpath, tk, 4);
    assert_int_equal(load(model, tpath, &l), KVQ_ERR_FORMAT);
    assert_non_null(strstr(l.last, "ends at token 0"));
    assert_int_equal(load(model, NULL, &l), KVQ_ERR_ARG);
    assert_non_null(strstr(l.last, "--tokenizer"));
    unlink(path);
    unlink(tpath);
}

static void test_hf_folder(void **st) {
    (void)st;
    TU_SHARED(src, "models/tinystories-656k/config.json");
    tu_log l;
    char dir[] = "/tmp/kvq_hf_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[256];
    assert_int_equal(load(dir, NULL, &l), KVQ_ERR_IO);
    assert_non_null(strstr(l.last, "config.json"));
    snprintf(p, sizeof p, "%s/config.json", dir);
    tu_write_file(p, "{\"model_type\": \"gpt_neox\"}", 26);
    assert_int_equal(load(dir, NULL, &l), KVQ_ERR_UNSUPPORTED);
    assert_non_null(strstr(l.last, "gpt_neox"));
    const char *cfg = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 1, "
                      "\"num_attention_heads\": 4, \"intermediate_size\": 128, \"vocab_size\": 1e12}";
    tu_write_file(p, cfg, strlen(cfg));
    assert_int_equal(load(dir, NULL, &l), KVQ_ERR_FORMAT);
    assert_non_null(strstr(l.last, "vocab_size is 1000000000000; it must be an integer"));
    tu_write_file(p, "{broken", 7);
    assert_int_equal(load(dir, NULL, &l), KVQ_ERR_FORMAT);
    unlink(p);
    rmdir(dir);
    (void)src;
}

/* Chat templates as metadata: a GGUF key, and an HF folder's
 * tokenizer_config.json (here the 656K folder's files linked beside a config
 * that carries a template). */
static void test_chat_template_meta(void **st) {
    (void)st;
    TU_SHARED(gguf, "models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    TU_SHARED(hf, "models/tinystories-656k/config.json");
    kvq_model_params mp = kvq_model_default_params();
    mp.vocab_only = true;
    mp.path = gguf;
    kvq_model *m = NULL;
    assert_int_equal(kvq_model_load(&mp, &m), KVQ_OK);
    const char *s;
    size_t n;
    assert_int_equal(kvq_model_meta_str(m, "general.architecture", &s, &n), KVQ_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "llama", 5);
    assert_int_equal(kvq_model_meta_str(m, "tokenizer.chat_template", &s, &n), KVQ_ERR_ARG); /* it has none */
    assert_int_equal(kvq_model_meta_str(m, "llama.block_count", &s, &n), KVQ_ERR_ARG);     /* not a string */
    kvq_model_free(m);

    char dir[] = "/tmp/kvq_tpl_XXXXXX", p[512], src[512];
    assert_non_null(mkdtemp(dir));
    const char *files[] = {"config.json", "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%.*s%s", (int)(strlen(hf) - strlen("config.json")), hf, files[i]);
        char abs[PATH_MAX];
        assert_non_null(realpath(src, abs));
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        assert_int_equal(symlink(abs, p), 0);
    }
    const char *tc = "{\"chat_template\": \"{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}\"}";
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    tu_write_file(p, tc, strlen(tc));
    mp.path = dir;
    assert_int_equal(kvq_model_load(&mp, &m), KVQ_OK);
    assert_int_equal(kvq_model_meta_str(m, "tokenizer.chat_template", &s, &n), KVQ_OK);
    assert_int_equal(n, strlen("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}"));
    assert_memory_equal(s, "{% for m in messages %}<|im_start|>", 35);
    kvq_model_free(m);
    unlink(p);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors), cmocka_unit_test(test_llama2c), cmocka_unit_test(test_hf_folder),
        cmocka_unit_test(test_chat_template_meta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
