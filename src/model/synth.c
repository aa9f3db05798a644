/* Synthetic GGUF models: real shapes, random weights. Each row's values come
 * from its own seeded generator, so files are identical whatever the thread
 * count. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "../core/cpu.h"
#include "../io/gguf.h"
#include "../io/gguf_write.h"
#include "../kernels/types.h"
#include "kvq.h"

typedef struct preset {
    const char *name, *arch;
    int32_t dim, n_layer, n_head, n_kv, ffn, vocab, ctx;
    float theta, eps;
    bool qkv_bias, llama3_rope;
} preset;

static const preset PRESETS[] = {
    {"stories110m", "llama", 768, 12, 12, 12, 2048, 32000, 1024, 10000.0f, 1e-5f, false, false},
    {"llama3.2-1b", "llama", 2048, 16, 32, 8, 8192, 128256, 131072, 500000.0f, 1e-5f, false, true},
    {"qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 4864, 151936, 32768, 1000000.0f, 1e-6f, true, false},
    {"smollm2-360m", "llama", 960, 32, 15, 5, 2560, 49152, 8192, 100000.0f, 1e-5f, false, false},
};
static const char *const PRESET_NAMES[] = {"stories110m", "llama3.2-1b", "qwen2.5-0.5b", "smollm2-360m", NULL};

const char *const *kvq_synth_presets(void) { return PRESET_NAMES; }

kvq_synth_params kvq_synth_default_params(void) {
    kvq_synth_params p = {0};
    p.weight_type = "q8_0";
    p.seed = 1;
    return p;
}

static int parse_type(const char *s) {
    for (int t = 0; t < KVQ_TYPE_COUNT; t++) {
        const char *n = kvq_type_name(t);
        if (n && !strcasecmp(n, s) && kvq_traits((kvq_type)t) && t != KVQ_TYPE_Q8_1 && t != KVQ_TYPE_Q8_K) return t;
    }
    return -1;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void gauss_row(float *x, int64_t n, float std, uint64_t seed) {
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = ((splitmix(&s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
        double u2 = (splitmix(&s) >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2 * log(u1)) * std;
        x[i] = (float)(r * cos(2 * M_PI * u2));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(2 * M_PI * u2));
    }
}

typedef struct buf_list { void **p; int n, cap; } buf_list;
static void *keep(buf_list *b, void *p) {
    if (!p) return NULL;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->p = realloc(b->p, (size_t)b->cap * sizeof *b->p);
    }
    b->p[b->n++] = p;
    return p;
}

/* Rows whose length does not fit a type's block fall back to q8_0 (or f16),
 * as llama.cpp's quantizer does for k-quants. */
static int fit_type(int t, int64_t cols) {
    if (cols % kvq_type_blck(t) == 0) return t;
    return cols % 32 == 0 ? KVQ_TYPE_Q8_0 : KVQ_TYPE_F16;
}

/* A [rows][cols] matrix of type t with N(0, std) entries. */
static void *matrix(buf_list *bl, int t, int64_t cols, int64_t rows, float std, uint64_t seed, int nth,
                    uint64_t *nbytes) {
    size_t rb = kvq_row_size(t, cols);
    if (!rb) return NULL;
    uint8_t *out = keep(bl, malloc(rb * (size_t)rows));
    if (!out) return NULL;
    const kvq_type_traits *tr = kvq_traits((kvq_type)t);
#pragma omp parallel num_threads(nth)
    {
        float *tmp = malloc((size_t)cols * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            gauss_row(tmp, cols, std, seed * 1000003ull + (uint64_t)r);
            tr->from_float(tmp, out + rb * (size_t)r, cols);
        }
        free(tmp);
    }
    *nbytes = rb * (size_t)rows;
    return out;
}

static float *ones(buf_list *bl, int64_t n) {
    float *v = keep(bl, malloc((size_t)n * sizeof(float)));
    if (v)
        for (int64_t i = 0; i < n; i++) v[i] = 1.0f;
    return v;
}

kvq_status kvq_synth(const kvq_synth_params *p) {
    kvq_logger lgr = {p->log, p->log_user}, *lg = &lgr;
    const preset *ps = NULL;
    for (size_t i = 0; p->preset && i < sizeof PRESETS / sizeof *PRESETS; i++)
        if (!strcmp(p->preset, PRESETS[i].name)) ps = &PRESETS[i];
    if (!ps)
        return kvq_err(lg, KVQ_ERR_ARG, "unknown preset '%s' (stories110m, llama3.2-1b, qwen2.5-0.5b, smollm2-360m)",
                       p->preset ? p->preset : "");
    int wt = parse_type(p->weight_type ? p->weight_type : "q8_0");
    if (wt < 0)
        return kvq_err(lg, KVQ_ERR_ARG, "unknown weight type '%s' (f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl q2_K q3_K q4_K q5_K q6_K iq4_xs)",
                       p->weight_type);
    if (p->n_ctx < 0 || p->n_ctx > 131072) return kvq_err(lg, KVQ_ERR_ARG, "--ctx %d is out of range (1..131072)", p->n_ctx);
    if (!p->out_path) return kvq_err(lg, KVQ_ERR_ARG, "no output path");
    if (p->n_layer < 0 || p->n_layer > 1024) return kvq_err(lg, KVQ_ERR_ARG, "layer count %d is out of range", p->n_layer);
    const int n_layer = p->n_layer ? p->n_layer : ps->n_layer;
    const int nth = p->n_threads > 0 ? p->n_threads : kvq_n_cores();
    const int hd = ps->dim / ps->n_head;
    const int64_t E = ps->dim, Q = (int64_t)ps->n_head * hd, KV = (int64_t)ps->n_kv * hd;
    int32_t vocab = ps->vocab;
    kvq_gguf tokf;
    bool have_tok = false;
    kvq_status st = KVQ_OK;
    if (p->tokenizer_from) {
        if ((st = kvq_gguf_open(p->tokenizer_from, &tokf, lg))) return st;
        have_tok = true;
        uint64_t n;
        const uint8_t *first;
        if ((st = kvq_gguf_get_arr(&tokf, "tokenizer.ggml.tokens", KVQ_GGUF_STRING, true, &n, &first, lg))) goto out_tok;
        vocab = (int32_t)n;
    }
    kvq_gguf_writer *w = kvq_gguf_writer_new();
    buf_list bl = {0};
    if (!w) { st = KVQ_ERR_NOMEM; goto out_tok; }
    char key[128], name[128];
    const char *a = ps->arch;
    kvq_gguf_set_str(w, "general.architecture", a);
    snprintf(name, sizeof name, "kvq synthetic %s %s (random weights)", ps->name, kvq_type_name(wt));
    kvq_gguf_set_str(w, "general.name", name);
    kvq_gguf_set_u32(w, "general.alignment", 32);
#define SETU(k, v) do { snprintf(key, sizeof key, "%s." k, a); kvq_gguf_set_u32(w, key, (uint32_t)(v)); } while (0)
#define SETF(k, v) do { snprintf(key, sizeof key, "%s." k, a); kvq_gguf_set_f32(w, key, (v)); } while (0)
    SETU("context_length", p->n_ctx ? p->n_ctx : ps->ctx);
    SETU("embedding_length", E);
    SETU("block_count", n_layer);
    SETU("feed_forward_length", ps->ffn);
    SETU("attention.head_count", ps->n_head);
    SETU("attention.head_count_kv", ps->n_kv);
    SETU("rope.dimension_count", hd);
    SETU("vocab_size", vocab);
    SETF("rope.freq_base", ps->theta);
    SETF("attention.layer_norm_rms_epsilon", ps->eps);
#undef SETU
#undef SETF
    if (have_tok) {
        for (uint64_t i = 0; i < tokf.n_kv; i++)
            if (tokf.kv[i].key.n > 10 && !memcmp(tokf.kv[i].key.s, "tokenizer.", 10)) kvq_gguf_copy_kv(w, &tokf.kv[i]);
    } else {
        /* placeholder SentencePiece vocabulary: specials, 256 byte tokens, then filler pieces */
        char **txt = keep(&bl, malloc((size_t)vocab * sizeof *txt));
        char *arena = keep(&bl, malloc((size_t)vocab * 16));
        float *sc = keep(&bl, malloc((size_t)vocab * sizeof *sc));
        int32_t *ty = keep(&bl, malloc((size_t)vocab * sizeof *ty));
        if (!txt || !arena || !sc || !ty) { st = KVQ_ERR_NOMEM; goto out; }
        for (int32_t i = 0; i < vocab; i++) {
            txt[i] = arena + (size_t)i * 16;
            if (i < 3) snprintf(txt[i], 16, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
            else if (i < 259) snprintf(txt[i], 16, "<0x%02X>", i - 3);
            else snprintf(txt[i], 16, "\xe2\x96\x81t%d", i);
            sc[i] = -(float)i;
            ty[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
        }
        kvq_gguf_set_str(w, "tokenizer.ggml.model", "llama");
        kvq_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)txt, NULL, (uint64_t)vocab);
        kvq_gguf_set_arr(w, "tokenizer.ggml.scores", KVQ_GGUF_F32, sc, (uint64_t)vocab);
        kvq_gguf_set_arr(w, "tokenizer.ggml.token_type", KVQ_GGUF_I32, ty, (uint64_t)vocab);
        kvq_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
        kvq_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    }
    kvq_logf(lg, KVQ_LOG_INFO, "synth: %s, %s weights, vocab %d", ps->name, kvq_type_name(wt), vocab);
    uint64_t nb;
    int64_t ne[2];
    uint64_t seed = p->seed * 7919ull;
    void *d;
#define MAT(NAME, COLS, ROWS, STD)                                                         \
    do {                                                                                   \
        int ty = fit_type(wt, COLS);                                                       \
        if (!(d = matrix(&bl, ty, COLS, ROWS, STD, ++seed, nth, &nb))) { st = KVQ_ERR_NOMEM; goto out; } \
        ne[0] = COLS; ne[1] = ROWS;                                                        \
        kvq_gguf_add_tensor(w, NAME, (uint32_t)ty, 2, ne, d, nb);                         \
    } while (0)
#define VEC(NAME, N, PTR)                                                                  \
    do {                                                                                   \
        if (!(PTR)) { st = KVQ_ERR_NOMEM; goto out; }                                      \
        ne[0] = N;                                                                         \
        kvq_gguf_add_tensor(w, NAME, KVQ_TYPE_F32, 1, ne, PTR, (uint64_t)(N) * 4);         \
    } while (0)
    MAT("token_embd.weight", E, vocab, 1.0f);
    VEC("output_norm.weight", E, ones(&bl, E));
    if (ps->llama3_rope) {
        /* llama3 scaling (factor 32, low 1, high 4, original context 8192) as llama.cpp stores it */
        float *ff = keep(&bl, malloc((size_t)(hd / 2) * sizeof(float)));
        if (ff)
            for (int i = 0; i < hd / 2; i++) {
                double freq = 1.0 / pow((double)ps->theta, 2.0 * i / hd), wl = 2 * M_PI / freq;
                double lo_wl = 8192 / 1.0, hi_wl = 8192 / 4.0;
                ff[i] = wl < hi_wl ? 1.0f : wl > lo_wl ? 32.0f
                                                       : (float)(1 / ((1 - (8192 / wl - 1) / 3) / 32 + (8192 / wl - 1) / 3));
            }
        VEC("rope_freqs.weight", hd / 2, ff);
    }
    for (int l = 0; l < n_layer; l++) {
        char n[64];
        const float s_in = 1.0f / sqrtf((float)E), s_ff = 1.0f / sqrtf((float)ps->ffn);
#define LN(suffix) (snprintf(n, sizeof n, "blk.%d.%s", l, suffix), n)
        VEC(LN("attn_norm.weight"), E, ones(&bl, E));
        MAT(LN("attn_q.weight"), E, Q, s_in);
        MAT(LN("attn_k.weight"), E, KV, s_in);
        MAT(LN("attn_v.weight"), E, KV, s_in);
        if (ps->qkv_bias) {
            float *z = keep(&bl, calloc((size_t)(Q + 2 * KV), sizeof(float)));
            VEC(LN("attn_q.bias"), Q, z);
            VEC(LN("attn_k.bias"), KV, z ? z + Q : NULL);
            VEC(LN("attn_v.bias"), KV, z ? z + Q + KV : NULL);
        }
        MAT(LN("attn_output.weight"), Q, E, s_in);
        VEC(LN("ffn_norm.weight"), E, ones(&bl, E));
        MAT(LN("ffn_gate.weight"), E, ps->ffn, s_in);
        MAT(LN("ffn_up.weight"), E, ps->ffn, s_in);
        MAT(LN("ffn_down.weight"), ps->ffn, E, s_ff);
#undef LN
    }
#undef MAT
#undef VEC
    st = kvq_gguf_write(w, p->out_path, lg);
out:
    for (int i = 0; i < bl.n; i++) free(bl.p[i]);
    free(bl.p);
    kvq_gguf_writer_free(w);
out_tok:
    if (have_tok) kvq_gguf_close(&tokf);
    return st;
}
