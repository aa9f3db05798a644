/* The GGUF reader against each class of malformed or malicious file: every
 * one must fail with a clear error, never crash or allocate absurdly (run
 * under ASan/UBSan in CI). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "io/gguf.h"
#include "testutil.h"

/* kv: key + type + value written by the caller */
static void kv_str(tu_buf *b, const char *k, const char *v) { tu_str(b, k); tu_u32(b, KVQ_GGUF_STRING); tu_str(b, v); }
static void kv_u32(tu_buf *b, const char *k, uint32_t v) { tu_str(b, k); tu_u32(b, KVQ_GGUF_U32); tu_u32(b, v); }

static void header(tu_buf *b, uint64_t n_tensors, uint64_t n_kv) {
    tu_put(b, "GGUF", 4);
    tu_u32(b, 3);
    tu_u64(b, n_tensors);
    tu_u64(b, n_kv);
}

static void tensor_info(tu_buf *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    tu_str(b, name);
    tu_u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) tu_u64(b, ne[i]);
    tu_u32(b, type);
    tu_u64(b, off);
}

static void pad_to(tu_buf *b, size_t align) {
    static const uint8_t z[64] = {0};
    while (b->n % align) tu_put(b, z, 1);
}

/* Two f32 tensors of 8 elements, valid. */
static tu_buf valid_file(void) {
    tu_buf b = {0};
    header(&b, 2, 1);
    kv_str(&b, "general.architecture", "llama");
    uint64_t ne[1] = {8};
    tensor_info(&b, "a", 1, ne, 0, 0);
    tensor_info(&b, "b", 1, ne, 0, 32);
    pad_to(&b, 32);
    float data[16] = {0};
    tu_put(&b, data, sizeof data);
    return b;
}

static kvq_status parse(const tu_buf *b, tu_log *l) {
    kvq_gguf g;
    kvq_logger lg = {tu_log_cb, l};
    memset(l, 0, sizeof *l);
    kvq_status st = kvq_gguf_parse(b->p, b->n, &g, &lg);
    if (st == KVQ_OK) {
        free(g.kv);
        free(g.tensors);
    }
    return st;
}

static void expect_err(const tu_buf *b, const char *needle) {
    tu_log l;
    kvq_status st = parse(b, &l);
    if (st == KVQ_OK) fail_msg("accepted a bad file (expected '%s')", needle);
    if (!strstr(l.last, needle)) fail_msg("error '%s' does not mention '%s'", l.last, needle);
}

static void test_valid(void **s) {
    (void)s;
    tu_buf b = valid_file();
    tu_log l;
    assert_int_equal(parse(&b, &l), KVQ_OK);
    free(b.p);
}

static void test_every_truncation(void **s) {
    (void)s;
    tu_buf b = valid_file();
    for (size_t n = 0; n < b.n; n++) {
        tu_buf t = {b.p, n, n};
        tu_log l;
        if (parse(&t, &l) == KVQ_OK) fail_msg("truncated at %zu bytes of %zu accepted", n, b.n);
        assert_true(l.last[0] != 0);
    }
    free(b.p);
}

static void test_bad_magic(void **s) {
    (void)s;
    tu_buf b = valid_file();
    b.p[0] = 'X';
    expect_err(&b, "bad magic");
    b.p[0] = 'G';
    b.p[4] = 1; /* version 1 */
    expect_err(&b, "version 1");
    free(b.p);
}

static void test_string_longer_than_file(void **s) {
    (void)s;
    tu_buf b = {0};
    header(&b, 0, 1);
    tu_u64(&b, 1ull << 40); /* key length */
    tu_put(&b, "abcdefghijklmnop", 16);
    expect_err(&b, "string of 1099511627776 bytes");
    free(b.p);
    tu_buf c = {0};
    header(&c, 0, 1);
    tu_str(&c, "general.name");
    tu_u32(&c, KVQ_GGUF_STRING);
    tu_u64(&c, UINT64_MAX);
    expect_err(&c, "string of");
    free(c.p);
}

static void test_array_longer_than_file(void **s) {
    (void)s;
    tu_buf b = {0};
    header(&b, 0, 1);
    tu_str(&b, "tokenizer.ggml.scores");
    tu_u32(&b, KVQ_GGUF_ARRAY);
    tu_u32(&b, KVQ_GGUF_F32);
    tu_u64(&b, 1ull << 61); /* 2^61 * 4 overflows 64 bits */
    tu_u32(&b, 0);
    expect_err(&b, "more than the file holds");
    free(b.p);
    tu_buf c = {0};
    header(&c, 0, 1);
    tu_str(&c, "tokenizer.ggml.tokens");
    tu_u32(&c, KVQ_GGUF_ARRAY);
    tu_u32(&c, KVQ_GGUF_STRING);
    tu_u64(&c, 1ull << 62);
    expect_err(&c, "strings, more than the file holds");
    free(c.p);
}

static void test_huge_counts(void **s) {
    (void)s;
    tu_buf b = {0};
    header(&b, 0, 1ull << 63);
    expect_err(&b, "key count 9223372036854775808 is impossible");
    free(b.p);
    tu_buf c = {0};
    header(&c, 1ull << 63, 0);
    expect_err(&c, "tensor count 9223372036854775808 is impossible");
    free(c.p);
}

static void test_nested_and_bad_types(void **s) {
    (void)s;
    tu_buf b = {0};
    header(&b, 0, 1);
    tu_str(&b, "x");
    tu_u32(&b, KVQ_GGUF_ARRAY);
    tu_u32(&b, KVQ_GGUF_ARRAY);
    tu_u64(&b, 1);
    expect_err(&b, "nested arrays");
    free(b.p);
    tu_buf c = {0};
    header(&c, 0, 1);
    tu_str(&c, "x");
    tu_u32(&c, 77);
    tu_u32(&c, 0);
    expect_err(&c, "invalid value type 77");
    free(c.p);
}

static void test_dims_overflow(void **s) {
    (void)s;
    tu_buf b = {0};
    header(&b, 1, 0);
    uint64_t ne[3] = {1ull << 32, 1ull << 32, 1ull << 32};
    tensor_info(&b, "w", 3, ne, 0, 0);
    pad_to(&b, 32);
    expect_err(&b, "element count overflows");
    free(b.p);
    tu_buf c = {0};
    header(&c, 1, 0);
    uint64_t ne2[2] = {1ull << 31, 1ull << 31}; /* 2^62 elements: bytes overflow for f32 */
    tensor_info(&c, "w", 2, ne2, 0, 0);
    pad_to(&c, 32);
    expect_err(&c, "byte size overflows");
    free(c.p);
    tu_buf d = {0};
    header(&d, 1, 0);
    uint64_t ne3[5] = {1, 1, 1, 1, 1};
    tensor_info(&d, "w", 5, ne3, 0, 0);
    expect_err(&d, "5 dimensions");
    free(d.p);
}

static void test_offsets(void **s) {
    (void)s;
    tu_buf b = {0};
    header(&b, 1, 0);
    uint64_t ne[1] = {8};
    tensor_info(&b, "w", 1, ne, 0, 1ull << 40);
    pad_to(&b, 32);
    float data[8] = {0};
    tu_put(&b, data, sizeof data);
    expect_err(&b, "past the end of the file");
    free(b.p);
    tu_buf c = {0};
    header(&c, 2, 0);
    tensor_info(&c, "a", 1, ne, 0, 0);
    uint64_t ne16[1] = {16};
    tensor_info(&c, "b", 1, ne16, 0, 0); /* overlaps a */
    pad_to(&c, 32);
    float d2[16] = {0};
    tu_put(&c, d2, sizeof d2);
    expect_err(&c, "overlap");
    free(c.p);
    tu_buf d = {0};
    header(&d, 1, 0);
    tensor_info(&d, "a", 1, ne, 0, 4); /* not aligned */
    pad_to(&d, 32);
    tu_put(&d, d2, sizeof d2);
    expect_err(&d, "not aligned");
    free(d.p);
}

static void test_alignment(void **s) {
    (void)s;
    uint32_t bad[] = {0, 3, 1u << 30};
    for (int i = 0; i < 3; i++) {
        tu_buf b = {0};
        header(&b, 0, 1);
        kv_u32(&b, "general.alignment", bad[i]);
        expect_err(&b, "general.alignment");
        free(b.p);
    }
    tu_buf c = {0};
    header(&c, 0, 1);
    kv_str(&c, "general.alignment", "32");
    expect_err(&c, "expected an integer");
    free(c.p);
}

static void test_unknown_tensor_type_and_block(void **s) {
    (void)s;
    tu_buf b = {0};
    header(&b, 1, 0);
    uint64_t ne[1] = {32};
    tensor_info(&b, "w", 1, ne, 99, 0);
    expect_err(&b, "unknown type id 99");
    free(b.p);
    tu_buf c = {0};
    header(&c, 1, 0);
    uint64_t ne2[1] = {33};
    tensor_info(&c, "w", 1, ne2, 8 /* q8_0 */, 0);
    expect_err(&c, "not a multiple of the q8_0 block");
    free(c.p);
}

static void test_duplicates(void **s) {
    (void)s;
    tu_buf b = {0};
    header(&b, 0, 2);
    kv_u32(&b, "k", 1);
    kv_u32(&b, "k", 2);
    expect_err(&b, "duplicate key 'k'");
    free(b.p);
    tu_buf c = {0};
    header(&c, 2, 0);
    uint64_t ne[1] = {8};
    tensor_info(&c, "a", 1, ne, 0, 0);
    tensor_info(&c, "a", 1, ne, 0, 32);
    pad_to(&c, 32);
    float d[16] = {0};
    tu_put(&c, d, sizeof d);
    expect_err(&c, "duplicate tensor 'a'");
    free(c.p);
}

/* A vocabulary-only file whose metadata is well-formed GGUF but wrong for a
 * tokenizer: each must be refused by the model loader. */
static void vocab_file(tu_buf *b, const char *arch, uint32_t scores_type, const char *tok3, int32_t tok3_type) {
    header(b, 0, 5);
    kv_str(b, "general.architecture", arch);
    kv_str(b, "tokenizer.ggml.model", "llama");
    const char *toks[4] = {"<unk>", "<s>", "</s>", tok3};
    tu_str(b, "tokenizer.ggml.tokens");
    tu_u32(b, KVQ_GGUF_ARRAY);
    tu_u32(b, KVQ_GGUF_STRING);
    tu_u64(b, 4);
    for (int i = 0; i < 4; i++) tu_str(b, toks[i]);
    tu_str(b, "tokenizer.ggml.scores");
    tu_u32(b, KVQ_GGUF_ARRAY);
    tu_u32(b, scores_type);
    tu_u64(b, 4);
    for (int i = 0; i < 4; i++) {
        if (scores_type == KVQ_GGUF_F32) { float f = -(float)i; tu_put(b, &f, 4); }
        else { uint8_t u = (uint8_t)i; tu_put(b, &u, 1); }
    }
    tu_str(b, "tokenizer.ggml.token_type");
    tu_u32(b, KVQ_GGUF_ARRAY);
    tu_u32(b, KVQ_GGUF_I32);
    tu_u64(b, 4);
    int32_t ty[4] = {2, 3, 3, tok3_type};
    tu_put(b, ty, sizeof ty);
}

static kvq_status load_vocab(const tu_buf *b, bool vocab_only, tu_log *l) {
    char path[] = "/tmp/kvq_test_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(tu_write_file(path, b->p, b->n), 0);
    kvq_model_params p = kvq_model_default_params();
    p.path = path;
    p.vocab_only = vocab_only;
    p.log = tu_log_cb;
    p.log_user = l;
    memset(l, 0, sizeof *l);
    kvq_model *m = NULL;
    kvq_status st = kvq_model_load(&p, &m);
    kvq_model_free(m);
    unlink(path);
    return st;
}

static void test_loader_semantics(void **s) {
    (void)s;
    tu_log l;
    tu_buf ok = {0};
    vocab_file(&ok, "llama", KVQ_GGUF_F32, "a", 1);
    assert_int_equal(load_vocab(&ok, true, &l), KVQ_OK);
    free(ok.p);

    tu_buf u8 = {0};
    vocab_file(&u8, "llama", KVQ_GGUF_U8, "a", 1);
    assert_int_equal(load_vocab(&u8, true, &l), KVQ_ERR_FORMAT);
    assert_non_null(strstr(l.last, "is an array of uint8, expected an array of float32"));
    free(u8.p);

    tu_buf bt = {0};
    vocab_file(&bt, "llama", KVQ_GGUF_F32, "<0x-1>", 6);
    assert_int_equal(load_vocab(&bt, true, &l), KVQ_ERR_FORMAT);
    assert_non_null(strstr(l.last, "not <0xHH>"));
    free(bt.p);

    tu_buf ar = {0};
    vocab_file(&ar, "gpt-j", KVQ_GGUF_F32, "a", 1);
    assert_int_equal(load_vocab(&ar, false, &l), KVQ_ERR_UNSUPPORTED);
    assert_non_null(strstr(l.last, "architecture 'gpt-j' is not supported"));
    free(ar.p);

    tu_buf tt = {0};
    vocab_file(&tt, "llama", KVQ_GGUF_F32, "a", 9);
    assert_int_equal(load_vocab(&tt, true, &l), KVQ_ERR_FORMAT);
    assert_non_null(strstr(l.last, "invalid type 9"));
    free(tt.p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_bad_magic),       cmocka_unit_test(test_string_longer_than_file),
        cmocka_unit_test(test_array_longer_than_file), cmocka_unit_test(test_huge_counts),
        cmocka_unit_test(test_nested_and_bad_types),   cmocka_unit_test(test_dims_overflow),
        cmocka_unit_test(test_offsets),         cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_unknown_tensor_type_and_block), cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_loader_semantics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
