/*
 * kvq: LLM inference in C for CPUs, built around a compressed KV cache.
 *
 * The one public header. Every call returns a kvq_status; nothing here prints
 * or exits. Diagnostics go through the log callback given in the params.
 * Objects are opaque; create them with *_default_params() + *_load/_new.
 */
#ifndef KVQ_H
#define KVQ_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kvq_status {
    KVQ_OK = 0,
    KVQ_ERR_IO,          /* cannot open / read / map a file */
    KVQ_ERR_FORMAT,      /* file is malformed, truncated or inconsistent */
    KVQ_ERR_UNSUPPORTED, /* valid but not supported: architecture, tensor type, ... */
    KVQ_ERR_ARG,         /* invalid argument or option value */
    KVQ_ERR_NOMEM,       /* allocation failed or would be absurdly large */
    KVQ_ERR_CONTEXT_FULL,/* the KV cache cannot hold more tokens */
    KVQ_ERR_INTERNAL
} kvq_status;

const char *kvq_status_str(kvq_status s);

typedef enum kvq_log_level { KVQ_LOG_DEBUG, KVQ_LOG_INFO, KVQ_LOG_WARN, KVQ_LOG_ERROR } kvq_log_level;
typedef void (*kvq_log_fn)(void *user, kvq_log_level level, const char *msg);

typedef int32_t kvq_token;

/* ------------------------------------------------------------------ model */

typedef struct kvq_model kvq_model;

typedef struct kvq_model_params {
    const char *path;           /* .gguf file, llama2.c .bin, or a Hugging Face folder */
    const char *tokenizer_path; /* llama2.c tokenizer .bin (needed for llama2.c checkpoints) */
    bool        vocab_only;     /* load metadata + tokenizer only (tokenizer test vocabularies) */
    /* keep the file's weight layout: no row-interleaved copies (made at load
     * on AVX2 and AVX-512 hosts for the types docs/ARCHITECTURE.md lists;
     * the environment's KVQ_REPACK=0 sets this in the CLI) */
    bool        no_repack;
    kvq_log_fn  log;            /* may be NULL: messages are dropped */
    void       *log_user;
} kvq_model_params;

kvq_model_params kvq_model_default_params(void);
kvq_status kvq_model_load(const kvq_model_params *p, kvq_model **out);
void       kvq_model_free(kvq_model *m);

typedef struct kvq_model_info {
    char     arch[32];          /* "llama", "qwen2" */
    char     format[16];        /* "gguf", "llama2c", "hf" */
    char     name[128];
    int32_t  n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    float    rope_theta, rope_freq_scale, norm_eps;
    int32_t  rope_neox;         /* 1: rotate halves (HF/qwen2); 0: adjacent pairs (GGUF llama, llama2.c) */
    char     rope_scaling[16];  /* "none", "linear", "llama3" */
    bool     qkv_bias, tied_embeddings;
    uint64_t n_params, weight_bytes;
    char     tokenizer[16];     /* "spm", "bpe-merges", "byte-bpe" */
    kvq_token bos, eos;         /* -1 when absent */
    bool     add_bos;
} kvq_model_info;

kvq_status kvq_model_get_info(const kvq_model *m, kvq_model_info *info);

/* A second (third, ...) set of weights for the same model, which a pass can
 * select with kvq_eval_opts.weight_set (QuantSpec's draft). `source` is a
 * tensor type name ("q4_0", "q4_K", "q8_0"): the large matrices are
 * requantized from the model's own weights; or the path of another file of
 * the same model (same architecture and shapes), whose matrices are used.
 * Norms, embeddings and other small tensors are shared, not copied. Call it
 * before creating contexts: it changes the model. *index receives the set's
 * number (1, 2, ...). */
kvq_status kvq_model_add_weight_set(kvq_model *m, const char *source, int32_t n_threads, int32_t *index);
int32_t    kvq_model_n_weight_sets(const kvq_model *m);
/* Bytes the matrices of a weight set read per decode step. */
uint64_t   kvq_model_weight_set_bytes(const kvq_model *m, int32_t set);

/* A string from the model file's metadata, such as the GGUF key
 * "tokenizer.chat_template": *s points into the model (not NUL-terminated)
 * and lives as long as it. For a Hugging Face folder, only
 * "tokenizer.chat_template" is known (from tokenizer_config.json). KVQ_ERR_ARG
 * when the key is absent or is not a string. */
kvq_status kvq_model_meta_str(const kvq_model *m, const char *key, const char **s, size_t *n);

/* One line per tensor: name, type and shape. i in [0, count). */
int        kvq_model_tensor_count(const kvq_model *m);
kvq_status kvq_model_tensor_desc(const kvq_model *m, int i, char *buf, size_t cap);

/* ------------------------------------------------------------- tokenizer */

/* Encodes text (len bytes, need not be NUL-terminated), prefixed with the
 * BOS token when add_bos is set and the vocabulary has one (kvq_model_info.add_bos
 * tells whether the model expects it). *n_out receives the
 * number of tokens; if it exceeds cap the call returns KVQ_ERR_ARG and
 * *n_out holds the size needed. */
kvq_status kvq_tokenize(const kvq_model *m, const char *text, size_t len, bool add_bos,
                        kvq_token *out, int cap, int *n_out);

/* The same; with parse_special, special token texts in the input (such as
 * <|im_start|> or <s>) are encoded as those tokens, as llama.cpp's CLI does. */
kvq_status kvq_tokenize_ex(const kvq_model *m, const char *text, size_t len, bool add_bos, bool parse_special,
                           kvq_token *out, int cap, int *n_out);

/* Bytes of one token's text as it should be printed after token `prev`
 * (-1 when there is none). Returns the length written (not NUL-terminated
 * beyond cap), or a negative status on a bad token id. */
int kvq_token_to_piece(const kvq_model *m, kvq_token prev, kvq_token tok, char *buf, int cap);
int kvq_vocab_size(const kvq_model *m);
bool kvq_token_is_eog(const kvq_model *m, kvq_token t);

/* ----------------------------------------------------------- KV + context */

/* Size of the KV cache for a spec, without allocating it. Exact: scales,
 * zero points, full-precision windows and auxiliary data included. */
typedef struct kvq_kv_report {
    char   spec[256];           /* normalized spec */
    double bytes_per_token;     /* all layers, K+V, steady state (amortized over a long context) */
    double bits_per_value;      /* bytes_per_token*8 / (2 * n_layer * n_head_kv * head_dim) */
    uint64_t bytes_reserved;    /* exact bytes of a full context (n_ctx tokens) */
    uint64_t bytes_used;        /* exact bytes of the tokens held right now (contexts only) */
    uint64_t bytes_allocated;   /* memory held right now: pages (a partly filled last page counts
                                   whole) and fixed buffers (contexts only); what a memory cap bounds */
    uint64_t bytes_alloc_max;   /* bytes_allocated at a full context */
    int32_t n_tokens;           /* tokens (slots) cached right now (contexts only) */
    uint64_t aux_bytes;         /* held once, outside the per-token figures: AQUA-KV's predictors
                                   (shared by every context of the spec); 0 for other codecs */
    int32_t held_max;           /* describe: the most tokens the cache ever holds when its policy bounds
                                   it below the context (window), else 0; bytes_reserved and
                                   bytes_alloc_max are then for held_max tokens */
} kvq_kv_report;

kvq_status kvq_kv_describe(const kvq_model *m, const char *spec, int n_ctx, kvq_kv_report *r,
                           char *err, size_t err_cap);

/* A byte budget for KV memory shared by several contexts (a server's
 * sessions). Contexts draw pages from it as tokens arrive and return them on
 * truncation and eviction; a step that would pass the cap fails with
 * KVQ_ERR_CONTEXT_FULL before it changes anything. Thread-safe. */
typedef struct kvq_kv_pool kvq_kv_pool;
kvq_status kvq_kv_pool_new(uint64_t cap_bytes, kvq_kv_pool **out);
void       kvq_kv_pool_free(kvq_kv_pool *p); /* after every context using it */
uint64_t   kvq_kv_pool_used(const kvq_kv_pool *p);
uint64_t   kvq_kv_pool_cap(const kvq_kv_pool *p);

typedef struct kvq_ctx kvq_ctx;

typedef struct kvq_ctx_params {
    int32_t     n_ctx;       /* 0: the model's training context */
    int32_t     n_batch;     /* max tokens per forward pass chunk (prefill) */
    int32_t     n_threads;   /* 0: all cores (or OMP_NUM_THREADS when set) */
    bool        fixed_threads; /* decode steps always use n_threads; by default they drop to one
                                  thread while other processes hold the cores, and come back */
    const char *kv_spec;     /* "f32", "f16", ... (NULL: "f16") */
    uint64_t    kv_mem_cap;  /* bytes of KV memory this context may hold (0: no cap) */
    kvq_kv_pool *kv_pool;    /* shared KV budget (NULL: none) */
    kvq_log_fn  log;
    void       *log_user;
} kvq_ctx_params;

kvq_ctx_params kvq_ctx_default_params(void);
kvq_status kvq_ctx_new(const kvq_model *m, const kvq_ctx_params *p, kvq_ctx **out);
void       kvq_ctx_free(kvq_ctx *c);

/* Runs tokens through the model at the next positions and appends them to
 * the KV cache. logits: NULL, or room for n_vocab floats per requested row:
 * all_logits=false gives only the last token's row; true gives n rows. */
kvq_status kvq_eval(kvq_ctx *c, const kvq_token *tokens, int n, bool all_logits, float *logits);

/* KV read views: the full cache, or QuantSpec's cheaper draft view (the
 * upper 4-bit plane of the `hier` codec). */
enum { KVQ_VIEW_FULL = 0, KVQ_VIEW_DRAFT = 1 };

typedef struct kvq_eval_opts {
    int32_t view;       /* KVQ_VIEW_FULL or KVQ_VIEW_DRAFT */
    int32_t weight_set; /* 0: the model's weights; 1..: sets added with kvq_model_add_weight_set */
    bool prompt_end;    /* these tokens end a prompt: eviction policies (SnapKV) run after them */
    bool speculative;   /* the tokens stay pending until kvq_ctx_accept (draft / verify passes) */
    bool all_logits;    /* n rows of logits instead of the last one */
} kvq_eval_opts;

kvq_eval_opts kvq_eval_default_opts(void);
/* kvq_eval with the step spelled out. logits: NULL, or room for the rows
 * all_logits asks for. */
kvq_status kvq_eval_ex(kvq_ctx *c, const kvq_token *tokens, int n, const kvq_eval_opts *o, float *logits);
/* Of the pending speculative tokens, the first n are verified (a codec with a
 * full-precision buffer may now compress them) and the rest are dropped. */
kvq_status kvq_ctx_accept(kvq_ctx *c, int32_t n);
int32_t    kvq_ctx_n_pending(const kvq_ctx *c);

/* Continuous batching: several contexts (sequences) of one model advance in
 * one forward pass, so the weights are read once per step however many
 * sequences decode. Each item gives a context its next tokens: one decode
 * token, or a chunk of a prompt (prompt_end on its last chunk). A batch owns
 * the work buffers for n_tokens rows in all; its contexts need none of their
 * own. Not for speculative passes or weight sets other than 0. */
typedef struct kvq_batch kvq_batch;
typedef struct kvq_batch_params {
    int32_t    n_tokens;   /* max rows per pass, all items together (default 256) */
    int32_t    n_seqs;     /* max items per pass (default 64) */
    int32_t    n_threads;  /* 0: all cores */
    kvq_log_fn log;
    void      *log_user;
} kvq_batch_params;
typedef struct kvq_batch_item {
    kvq_ctx         *ctx;
    const kvq_token *tokens;
    int32_t          n;          /* 1..the context's n_batch */
    bool             prompt_end;
    float           *logits;     /* NULL, or room for n_vocab floats: the last token's row */
    kvq_status       status;     /* out: this item's result */
} kvq_batch_item;
kvq_batch_params kvq_batch_default_params(void);
kvq_status kvq_batch_new(const kvq_model *m, const kvq_batch_params *p, kvq_batch **out);
void       kvq_batch_free(kvq_batch *b);
/* Items are independent: one that is invalid or cannot get KV memory gets
 * its status and is left as it was, while the others advance. Returns
 * KVQ_OK when every item succeeded, else the first item failure (or an
 * argument error for the call as a whole, with no item run). */
kvq_status kvq_batch_eval(kvq_batch *b, kvq_batch_item *items, int32_t n_items);

/* Research hook: called after each layer's attention with its output rows
 * ([n_rows][row_len], n_head*head_dim each) for the chunk being evaluated.
 * kvq tune uses it to measure attention-output error per layer. */
typedef void (*kvq_attn_tap_fn)(void *user, int layer, const float *out, int n_rows, int row_len);
void kvq_ctx_set_attn_tap(kvq_ctx *c, kvq_attn_tap_fn fn, void *user);
/* Research hook: each layer's keys and values before RoPE ([n_rows][row_len],
 * n_head_kv*head_dim each) as the projections give them. kvq calibrate uses
 * it to collect AQUA-KV's training data. */
typedef void (*kvq_kv_tap_fn)(void *user, int layer, const float *k, const float *v, int n_rows, int row_len);
void kvq_ctx_set_kv_tap(kvq_ctx *c, kvq_kv_tap_fn fn, void *user);
/* Research hook: the input rows of each layer's linear products
 * ([n_rows][row_len]): which 0 feeds Q/K/V, 1 the output projection, 2
 * gate/up, 3 down. kvq quantize collects GPTQ's Hessians with it. */
typedef enum kvq_linear_input { KVQ_LIN_QKV, KVQ_LIN_O, KVQ_LIN_GATE_UP, KVQ_LIN_DOWN } kvq_linear_input;
typedef void (*kvq_linear_tap_fn)(void *user, int layer, kvq_linear_input which, const float *x, int n_rows,
                                  int row_len);
void kvq_ctx_set_linear_tap(kvq_ctx *c, kvq_linear_tap_fn fn, void *user);

int32_t    kvq_ctx_n_past(const kvq_ctx *c);
int32_t    kvq_ctx_n_ctx(const kvq_ctx *c);
/* Forgets every token at position >= n (speculative rollback, new prompt). */
kvq_status kvq_ctx_truncate(kvq_ctx *c, int32_t n);
kvq_status kvq_ctx_kv_report(const kvq_ctx *c, kvq_kv_report *r);
/* Where decode time goes: attention (the KV cache's whole share of a step,
 * selection included) and the policy's selection, summed since the context
 * was made. */
typedef struct kvq_kv_timing { double attn_seconds, select_seconds; uint64_t layer_attentions; } kvq_kv_timing;
void kvq_ctx_kv_timing(const kvq_ctx *c, kvq_kv_timing *t);

/* The tokens at positions [0, n_past): *out points into the context. */
int32_t    kvq_ctx_tokens(const kvq_ctx *c, const kvq_token **out);

/* Sessions: the KV cache in its compressed form, the position and token
 * history, the spec and a fingerprint of the model. Loading into a context
 * with another spec converts the cache through the codecs (a session saved
 * in f16 can be restored as kivi). A session file is untrusted input: a
 * wrong model, version, truncation or absurd count is a clear error, and the
 * context is left empty. */
kvq_status kvq_ctx_save(const kvq_ctx *c, const char *path);
kvq_status kvq_ctx_load(kvq_ctx *c, const char *path);
/* Saves the cache converted into another KV spec (the context keeps its
 * own): AQUA-KV's cold tier, `aqua:pred=P.gguf`, stores a session at about 2
 * bits per value, and kvq_ctx_load restores it into any codec. */
kvq_status kvq_ctx_save_as(const kvq_ctx *c, const char *path, const char *spec);
/* The logits of the last evaluated (or restored) position, or NULL. */
const float *kvq_ctx_logits(const kvq_ctx *c);
/* A 64-bit fingerprint of the model: hyperparameters and tensor table. */
uint64_t   kvq_model_fingerprint(const kvq_model *m);

/* ---------------------------------------------------------------- sampler */

typedef struct kvq_sampler_params {
    float    temp;   /* 0: greedy */
    int32_t  top_k;  /* 0: off */
    float    top_p;  /* 1: off */
    uint64_t seed;
} kvq_sampler_params;

typedef struct kvq_sampler kvq_sampler;
kvq_sampler_params kvq_sampler_default_params(void);
kvq_status kvq_sampler_new(const kvq_sampler_params *p, int n_vocab, kvq_sampler **out);
void       kvq_sampler_free(kvq_sampler *s);
kvq_token  kvq_sample(kvq_sampler *s, const float *logits);
/* The distribution kvq_sample draws from (probs[n_vocab]; one-hot when greedy). */
void       kvq_sampler_dist(kvq_sampler *s, const float *logits, float *probs);
/* A draw from a distribution (probs need not be normalized), with the sampler's generator. */
kvq_token  kvq_sampler_draw(kvq_sampler *s, const float *probs);
float      kvq_sampler_uniform(kvq_sampler *s);
/* The repetition penalty of llama.cpp and CTRL: each distinct token among
 * recent[0..n) has its logit divided by penalty when positive, multiplied
 * when negative (penalty 1: nothing). Ids outside the vocabulary are skipped. */
void       kvq_repeat_penalty(float *logits, int n_vocab, const kvq_token *recent, int n, float penalty);

/* ------------------------------------------------- speculative decoding */

/* QuantSpec: the same model drafts gamma tokens on a cheaper weight set,
 * reading the KV cache's draft view (the `hier` codec's upper 4-bit plane),
 * and verifies them in one batched pass of its own weights over the full
 * view. Greedy output is the output of plain greedy decoding with the same
 * cache, token for token; sampled output follows the target's distribution
 * (speculative sampling: accept with min(1, p/q), else resample from the
 * normalized max(0, p - q)). */
typedef struct kvq_spec_params {
    int32_t gamma;      /* tokens drafted per round (0: 6) */
    bool    adaptive;   /* choose gamma in [0, 2*gamma] each round for the most tokens per second,
                         * from the running acceptance and the measured draft and verify times
                         * (0: plain steps, with a round now and then to re-measure) */
    int32_t draft_set;  /* the weight set drafts run on (kvq_model_add_weight_set); 0: the model's own */
} kvq_spec_params;

typedef struct kvq_spec_stats {
    int64_t rounds, drafted, accepted, emitted;
    int64_t plain_steps; /* single-token steps taken instead of rounds (adaptive, or no room to draft) */
    double  draft_seconds, verify_seconds;
} kvq_spec_stats;

/* One verification step of speculative sampling: the draft d (drawn from q)
 * is accepted with probability min(1, p[d] / q[d]) (true returned); if not,
 * *bonus is drawn from the normalized max(0, p - q). tmp holds V floats. The
 * token this yields (d, or the bonus) is distributed as p. */
bool kvq_spec_judge(kvq_sampler *s, const float *p, const float *q, kvq_token d, int V, float *tmp, kvq_token *bonus);

/* Called for every generated token in order; return false to stop. */
typedef bool (*kvq_token_fn)(void *user, kvq_token t);

/* Generates up to n_max tokens after the context's last position, the first
 * sampled from its logits (kvq_ctx_logits). Every token but the last
 * emitted one is in the context when it returns. */
kvq_status kvq_generate_speculative(kvq_ctx *c, kvq_sampler *s, const kvq_spec_params *p, int32_t n_max,
                                    kvq_token_fn emit, void *user, kvq_spec_stats *stats);

/* ------------------------------------------------------- synthetic models */

/* Writes a GGUF with random weights in a realistic shape, for measuring speed
 * and memory only (random weights say nothing about quality).
 * presets: "stories110m", "llama3.2-1b", "qwen2.5-0.5b", "smollm2-360m". */
typedef struct kvq_synth_params {
    const char *preset;
    const char *out_path;
    const char *weight_type;    /* f32 f16 bf16 q8_0 q4_0 q4_1 q4_K q5_K q6_K */
    int32_t     n_ctx;          /* 0: the preset's; up to 131072 */
    const char *tokenizer_from; /* GGUF whose tokenizer is copied (NULL: a placeholder vocabulary) */
    uint64_t    seed;
    int32_t     n_threads;
    int32_t     n_layer;        /* 0: the preset's; fewer layers make small test models */
    kvq_log_fn  log;
    void       *log_user;
} kvq_synth_params;

kvq_synth_params kvq_synth_default_params(void);
kvq_status kvq_synth(const kvq_synth_params *p);
/* Names of the presets, NULL-terminated. */
const char *const *kvq_synth_presets(void);

/* Benchmark helper: appends n tokens of random K/V to every layer of the cache
 * (and advances the position) without running the model, so decode speed can
 * be measured at a depth without a long prefill. */
kvq_status kvq_ctx_fill_random(kvq_ctx *c, int32_t n, uint64_t seed);
/* Bytes of weights one decode step reads (every matrix once). */
uint64_t kvq_model_weight_bytes(const kvq_model *m);

/* ---------------------------------------------------------------- quality */

/* Log-probabilities of a logits row. */
void   kvq_log_softmax(const float *logits, int n, float *out);
/* KL(base || cur) of two log-probability rows; *same_top1 (may be NULL)
 * tells whether their argmaxes agree. */
double kvq_kl_div(const float *base, const float *cur, int n, bool *same_top1);

/* KVTuner's offline search for per-layer (key bits, value bits) of a KV
 * codec (kivi or pertoken), on calibration tokens in decode mode:
 * sensitivity of each layer to each of the 9 pairs (2/4/8 bits), Pareto
 * pruning, clustering of layers, and a search under the average-bits budget
 * whose proxy front is measured for real. */
typedef struct kvq_tune_params {
    const kvq_model *model;
    const kvq_token *tokens;  /* calibration tokens */
    int32_t n_tokens;
    int32_t ctx;              /* window length (capped at the model's training context) */
    double  budget;           /* average bits per value, in [2, 8] */
    const char *codec;        /* "kivi" or "pertoken" */
    int32_t evals;            /* front points measured for real (default 12) */
    int32_t n_threads;
    kvq_log_fn log;
    void   *log_user;
    /* stage 1..4, done of total, and a line describing the last step */
    void  (*progress)(void *user, int stage, int done, int total, const char *msg);
    void   *progress_user;
} kvq_tune_params;

typedef struct kvq_tune_report kvq_tune_report;
kvq_status kvq_tune_kv(const kvq_tune_params *p, kvq_tune_report **out);
void       kvq_tune_report_free(kvq_tune_report *r);
/* The chosen table: n_layer pairs. */
int32_t    kvq_tune_chosen(const kvq_tune_report *r, int8_t *k_bits, int8_t *v_bits, double *nominal_bits, double *kl,
                           double *top1);
/* Calibration KL of the uniform pair (k, v), or a negative value. */
double     kvq_tune_uniform_kl(const kvq_tune_report *r, int k, int v);
/* Writes the table (kvq text format, usable as CODEC:layers=PATH) and PATH.json
 * (sensitivities, measured Pareto set, uniform baselines). */
kvq_status kvq_tune_write(const kvq_tune_report *r, const char *path, const char *model_name);

/* AQUA-KV calibration: fits, layer by layer, linear predictors of each
 * layer's keys from the layer below's reconstructed keys, and of its values
 * from its own reconstructed keys and the layer below's values (ridge
 * regression, solved with LAPACK), on calibration tokens in windows of ctx;
 * residuals are quantized as the codec will (bits, quantizer "higgs" or
 * "uniform"). Writes the predictors to a GGUF side file carrying the
 * model's fingerprint; the report gives held-out relMSE and explained
 * variance per layer. */
#define KVQ_AQUA_MAX_LAYERS 256
typedef struct kvq_aqua_calib_params {
    const kvq_model *model;
    const kvq_token *tokens;
    int32_t n_tokens, ctx, bits, n_threads;
    const char *quantizer;
    kvq_log_fn log;
    void *log_user;
    void (*progress)(void *user, int stage, int done, int total, const char *msg);
    void *progress_user;
} kvq_aqua_calib_params;
typedef struct kvq_aqua_calib_report {
    int32_t n_layer, n_train, n_heldout;
    float relmse_k[KVQ_AQUA_MAX_LAYERS], relmse_v[KVQ_AQUA_MAX_LAYERS];
    float ev_k[KVQ_AQUA_MAX_LAYERS];      /* explained variance: keys from the layer below's keys */
    float ev_v[KVQ_AQUA_MAX_LAYERS];      /* values from this layer's keys and the layer below's values */
    float ev_v_keys[KVQ_AQUA_MAX_LAYERS]; /* values from this layer's keys alone (the paper's figure) */
} kvq_aqua_calib_report;
kvq_status kvq_aqua_calibrate(const kvq_aqua_calib_params *p, const char *out_path, kvq_aqua_calib_report *r);

/* Writes a copy of a GGUF model whose large matrices are requantized to
 * `type` by round-to-nearest (matrices whose rows do not divide into its
 * blocks keep their type). */
kvq_status kvq_quantize_gguf(const char *in, const char *out, const char *type, int32_t n_threads, kvq_log_fn log,
                             void *log_user);

/* Weight quantization (kvq quantize --method rtn|gptq|slim): each layer's
 * seven matrices into SliM-LLM's group-wise mixed-precision type (average
 * exactly `bits`; docs/weight-quantization.md), with GPTQ's Hessians (and
 * SBA's KL rows) collected from the model on the calibration tokens in
 * windows of ctx. Writes a GGUF of the whole model (tokenizer included when
 * the input is a GGUF). rtn needs no tokens. */
#define KVQ_WQUANT_MAX_LAYERS 256
typedef struct kvq_wquant_params {
    const kvq_model *model;
    const kvq_token *tokens;
    int32_t n_tokens, ctx;
    const char *method; /* "rtn", "gptq", "slim" */
    int32_t bits, group, n_threads;
    /* NULL: the slim type; "q4_0" or "q4_1": standard blocks (GGUF input only), whose
     * codes GPTQ (or RTN) chooses, so other engines load the file unchanged */
    const char *std_type;
    kvq_log_fn log;
    void *log_user;
    /* stage 0: calibration (done/total tokens); 1: matrices quantized */
    void (*progress)(void *user, int stage, int done, int total, const char *what);
    void *progress_user;
} kvq_wquant_params;
typedef struct kvq_wquant_layer {
    float rel_err; /* ||dW X^T||^2 / ||W X^T||^2 on 256 sampled calibration rows; -1 without */
    float kl;      /* SBA's KL proxy at the chosen allocation (slim); -1 otherwise */
    int32_t p;     /* groups at bits-1 (as many at bits+1) */
    int32_t group; /* the group size used */
    bool kept;     /* rows that do not divide into groups of 32: kept in their type */
} kvq_wquant_layer;
typedef struct kvq_wquant_report {
    int32_t n_layer;
    kvq_wquant_layer mat[KVQ_WQUANT_MAX_LAYERS][7]; /* q, k, v, o, gate, up, down */
    uint64_t bytes_in, bytes_out, values;           /* of the layer matrices */
    uint64_t quant_bytes, quant_values;             /* of those quantized (not kept) */
} kvq_wquant_report;
kvq_status kvq_wquantize(const kvq_wquant_params *p, const char *out_path, kvq_wquant_report *r);

/* ------------------------------------------------------------------ misc */

/* The instruction set the kernels use ("scalar", "avx2", "avx512"); chosen
 * once from CPUID, overridable with KVQ_ISA=scalar|avx2|avx512. */
const char *kvq_isa_name(void);

#ifdef __cplusplus
}
#endif
#endif
