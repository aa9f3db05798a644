/* Tokenizers against independent test vectors and round trips. */
#include <stdlib.h>
#include <string.h>
#include "core/mapfile.h"
#include "model/model.h"
#include "testutil.h"

static kvq_model *load(const char *path, const char *tok, bool vocab_only) {
    kvq_model_params p = kvq_model_default_params();
    p.path = path;
    p.tokenizer_path = tok;
    p.vocab_only = vocab_only;
    kvq_model *m = NULL;
    assert_int_equal(kvq_model_load(&p, &m), KVQ_OK);
    return m;
}

static int encode(kvq_model *m, const char *s, size_t n, bool bos, kvq_token **out) {
    int k = 0;
    kvq_tokenize(m, s, n, bos, NULL, 0, &k);
    *out = malloc(((size_t)k + 1) * sizeof **out);
    assert_int_equal(kvq_tokenize(m, s, n, bos, *out, k, &k), KVQ_OK);
    return k;
}

/* Concatenated pieces of a token list (no BOS). */
static char *decode(kvq_model *m, const kvq_token *t, int n, kvq_token prev, size_t *len) {
    size_t cap = 64 + (size_t)n * 64, o = 0;
    char *s = malloc(cap);
    for (int i = 0; i < n; i++) {
        int l = kvq_token_to_piece(m, i ? t[i - 1] : prev, t[i], s + o, (int)(cap - o));
        assert_true(l >= 0);
        o += (size_t)l;
    }
    *len = o;
    return s;
}

/* llama.cpp's vector format: texts separated by __ggml_vocab_test__ lines,
 * and one line of ids per text; returns the mismatches, all printed. */
#define N_OWN_VECTORS 27

static int run_vectors(kvq_model *m, const char *inp, const char *outp, int want_cases) {
    char *in, *out;
    size_t in_n, out_n;
    assert_int_equal(kvq_read_file(inp, 1 << 20, &in, &in_n, NULL), KVQ_OK);
    assert_int_equal(kvq_read_file(outp, 1 << 20, &out, &out_n, NULL), KVQ_OK);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = in, *o = out;
    int cases = 0, bad = 0;
    while (*p) {
        char *e = strstr(p, sep);
        if (!e) break;
        char *ol = strchr(o, '\n');
        assert_non_null(ol);
        *ol = 0;
        kvq_token *t;
        int n = encode(m, p, (size_t)(e - p), false, &t);
        char got[8192] = "";
        size_t g = 0;
        for (int i = 0; i < n && g < sizeof got; i++) g += (size_t)snprintf(got + g, sizeof got - g, "%s%d", i ? " " : "", t[i]);
        /* expected lines begin with a space per id */
        const char *exp = o[0] == ' ' ? o + 1 : o;
        if (strcmp(got, exp)) {
            fprintf(stderr, "case %d: '%.*s'\n  expected %s\n  got      %s\n", cases, (int)(e - p), p, exp, got);
            bad++;
        }
        free(t);
        cases++;
        p = e + strlen(sep);
        o = ol + 1;
    }
    fprintf(stderr, "%s: %d test vectors, %d mismatches\n", inp, cases, bad);
    assert_int_equal(cases, want_cases);
    free(in);
    free(out);
    return bad;
}

static void test_spm_vectors(void **st) {
    (void)st;
    TU_SHARED(vocab, "tokenizers/ggml-vocab-llama-spm.gguf");
    TU_SHARED(inp, "tokenizers/ggml-vocab-llama-spm.gguf.inp");
    TU_SHARED(outp, "tokenizers/ggml-vocab-llama-spm.gguf.out");
    kvq_model *m = load(vocab, NULL, true);
    assert_int_equal(run_vectors(m, inp, outp, 46), 0);
    kvq_model_free(m);
}

/* The real Llama 3 and Qwen3 tokenizer.json files (a folder holding only
 * the tokenizer loads for tokenizing), against llama.cpp's vectors (made
 * with Hugging Face's tokenizers), then against kvq's own multilingual
 * vectors (tests/data/tokenizer, made with transformers.js: combining marks,
 * CJK, Vietnamese, emoji, Arabic, whitespace runs). */
static void hf_vectors(const char *dir, const char *name, int n_llamacpp, int n_own) {
    char path[512], inp[600], outp[600];
    snprintf(path, sizeof path, "tokenizers/%s", dir);
    const char *folder = tu_shared(path);
    if (!folder) { skip(); return; }
    kvq_model *m = load(folder, NULL, true);
    snprintf(inp, sizeof inp, "%s/ggml-vocab-%s.gguf.inp", folder, name);
    snprintf(outp, sizeof outp, "%s/ggml-vocab-%s.gguf.out", folder, name);
    int bad = run_vectors(m, inp, outp, n_llamacpp);
    snprintf(inp, sizeof inp, "tests/data/tokenizer/multilingual.inp");
    snprintf(outp, sizeof outp, "tests/data/tokenizer/%s.out", dir);
    bad += run_vectors(m, inp, outp, n_own);
    assert_int_equal(bad, 0);
    kvq_model_free(m);
}

/* Long texts are encoded in pieces, cut where no token or merge can span
 * (SPM, BPE) or after a newline that starts a word (byte-level): the ids
 * must be those of the whole text in one piece. */
static void test_chunked_equals_whole(void **st) {
    (void)st;
    TU_SHARED(corpus, "corpora/wikitext-2-raw-test.txt");
    TU_SHARED(spm, "tokenizers/ggml-vocab-llama-spm.gguf");
    TU_SHARED(ts, "models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    const char *qwen = tu_shared("tokenizers/qwen3");
    char *text;
    size_t n;
    assert_int_equal(kvq_read_file(corpus, 1 << 30, &text, &n, NULL), KVQ_OK);
    if (n > 600000) n = 600000;
    const char *paths[] = {spm, ts, qwen};
    for (int k = 0; k < 3; k++) {
        if (!paths[k]) continue;
        kvq_model *m = load(paths[k], NULL, true);
        kvq_vocab *v = &((struct kvq_model *)m)->vocab;
        v->chunk = 4096; /* many cuts */
        kvq_token *a, *b;
        const int na = encode(m, text, n, false, &a);
        v->chunk = (size_t)1 << 40; /* none */
        const int nb = encode(m, text, n, false, &b);
        fprintf(stderr, "%s: %d tokens in pieces, %d whole\n", paths[k], na, nb);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, (size_t)na * sizeof *a);
        free(a);
        free(b);
        kvq_model_free(m);
    }
    free(text);
}

static void test_llama3_vectors(void **st) { (void)st; hf_vectors("llama3", "llama-bpe", 46, N_OWN_VECTORS); }
static void test_qwen3_vectors(void **st) { (void)st; hf_vectors("qwen3", "qwen2", 46, N_OWN_VECTORS); }

static void roundtrip(kvq_model *m, const char *text, size_t n) {
    kvq_token *t;
    int k = encode(m, text, n, false, &t);
    size_t len;
    char *back = decode(m, t, k, -1, &len);
    /* SPM vocabularies prefix a space that is part of the text after decoding */
    const char *b = back;
    if (len == n + 1 && back[0] == ' ') { b++; len--; }
    if (len != n || memcmp(b, text, n)) fail_msg("round trip differs for '%.40s' (%zu vs %zu bytes)", text, len, n);
    free(back);
    free(t);
}

static const char *SAMPLES[] = {
    "Hello world", " Hello World!", "Once upon a time, there was a little girl named Lily.\n\nShe said: \"hi!\"",
    "\t tabs  and   spaces \n", "numbers 1234567 3.14159 and ½", "Äpfel, naïve café – “quotes”",
    "нещо на Български", "日本語のテキスト 🦙.cpp", "don't won't I'll we've they're", "",
};

static void test_byte_bpe_roundtrip(void **st) {
    (void)st;
    TU_SHARED(vocab, "tokenizers/ggml-vocab-gpt-2.gguf");
    kvq_model *m = load(vocab, NULL, true);
    for (size_t i = 0; i < sizeof SAMPLES / sizeof *SAMPLES; i++) roundtrip(m, SAMPLES[i], strlen(SAMPLES[i]));
    TU_SHARED(wiki, "corpora/wikitext-2-raw-test.txt");
    char *w;
    size_t wn;
    assert_int_equal(kvq_read_file(wiki, 1 << 22, &w, &wn, NULL), KVQ_OK);
    roundtrip(m, w, wn > 200000 ? 200000 : wn);
    /* GPT-2's own merges: " the" is one token */
    kvq_token *t;
    int k = encode(m, " the", 4, false, &t);
    assert_int_equal(k, 1);
    free(t);
    free(w);
    kvq_model_free(m);
}

static void test_spm_roundtrip(void **st) {
    (void)st;
    TU_SHARED(vocab, "tokenizers/ggml-vocab-llama-spm.gguf");
    kvq_model *m = load(vocab, NULL, true);
    for (size_t i = 0; i < sizeof SAMPLES / sizeof *SAMPLES; i++) roundtrip(m, SAMPLES[i], strlen(SAMPLES[i]));
    kvq_model_free(m);
}

static void test_llama2c_tokenizer(void **st) {
    (void)st;
    TU_SHARED(model, "models/stories260K/stories260K.bin");
    TU_SHARED(tok, "models/stories260K/tok512.bin");
    kvq_model *m = load(model, tok, false);
    for (size_t i = 0; i < sizeof SAMPLES / sizeof *SAMPLES; i++) roundtrip(m, SAMPLES[i], strlen(SAMPLES[i]));
    kvq_token *t;
    int k = encode(m, "", 0, true, &t);
    assert_int_equal(k, 1); /* empty prompt: BOS only */
    assert_int_equal(t[0], 1);
    free(t);
    kvq_model_free(m);
}

/* The HF tokenizer (BPE merges) and the GGUF one (scores repaired from -1000
 * to token order) must agree on in-domain text. */
static void test_hf_and_gguf_agree(void **st) {
    (void)st;
    TU_SHARED(hf, "models/tinystories-656k");
    TU_SHARED(gguf, "models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    TU_SHARED(corpus, "corpora/tinystories-valid-head.txt");
    kvq_model *a = load(hf, NULL, true), *b = load(gguf, NULL, true);
    char *txt;
    size_t n;
    assert_int_equal(kvq_read_file(corpus, 1 << 21, &txt, &n, NULL), KVQ_OK);
    if (n > 50000) n = 50000;
    kvq_token *ta, *tb;
    int na = encode(a, txt, n, true, &ta), nb = encode(b, txt, n, true, &tb);
    assert_int_equal(na, nb);
    int diff = 0;
    for (int i = 0; i < na; i++) diff += ta[i] != tb[i];
    assert_int_equal(diff, 0);
    kvq_model_info ia;
    kvq_model_get_info(a, &ia);
    assert_true(ia.add_bos);
    assert_int_equal(ia.bos, 1);
    free(ta); free(tb); free(txt);
    kvq_model_free(a);
    kvq_model_free(b);
}

/* Special tokens in a prompt are matched literally when asked for. */
static void test_parse_special(void **st) {
    (void)st;
    TU_SHARED(gpt2, "tokenizers/ggml-vocab-gpt-2.gguf");
    TU_SHARED(spm, "tokenizers/ggml-vocab-llama-spm.gguf");
    kvq_model *m = load(gpt2, NULL, true);
    kvq_token t[16];
    int n;
    assert_int_equal(kvq_tokenize_ex(m, "hi<|endoftext|>there", 20, false, true, t, 16, &n), KVQ_OK);
    assert_int_equal(n, 3);
    assert_int_equal(t[1], 50256);
    assert_int_equal(kvq_tokenize_ex(m, "hi<|endoftext|>there", 20, false, false, t, 16, &n), KVQ_OK);
    assert_true(n > 3); /* as plain text */
    kvq_model_free(m);
    m = load(spm, NULL, true);
    assert_int_equal(kvq_tokenize_ex(m, "<s>Hello", 8, false, true, t, 16, &n), KVQ_OK);
    assert_int_equal(t[0], 1);
    assert_int_equal(t[1], 15043); /* "▁Hello": text after a special gets the space prefix, as in llama.cpp */
    kvq_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_vectors),       cmocka_unit_test(test_byte_bpe_roundtrip),
        cmocka_unit_test(test_spm_roundtrip),     cmocka_unit_test(test_llama2c_tokenizer),
        cmocka_unit_test(test_hf_and_gguf_agree), cmocka_unit_test(test_parse_special),
        cmocka_unit_test(test_llama3_vectors),    cmocka_unit_test(test_qwen3_vectors),
        cmocka_unit_test(test_chunked_equals_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
