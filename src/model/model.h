/* The in-memory model: hyperparameters, weight views and the vocabulary.
 * Weights point into the mapped file whenever its layout is usable as is. */
#ifndef KVQ_MODEL_MODEL_H
#define KVQ_MODEL_MODEL_H
#include <stdbool.h>
#include <stdint.h>
#include "../core/log.h"
#include "../core/mapfile.h"
#include "../io/gguf.h"
#include "../kernels/ops.h"
#include "../kernels/types.h"
#include "../tokenizer/vocab.h"

typedef struct kvq_tensor {
    kvq_type type;
    int64_t ne[2];       /* ne[0]: row length (inputs), ne[1]: rows (outputs) */
    const void *data;    /* NULL: absent (optional tensors) */
    size_t row_bytes;
    char name[64];
    /* companion tensors of a type that declares them (kvq_type_traits.companions) */
    const void *aux[KVQ_TENSOR_AUX];
    uint64_t aux_bytes[KVQ_TENSOR_AUX];
    /* a row-interleaved copy that replaces data in every product (pack.c),
     * and its kernels; NULL when the matrix is used as stored */
    const void *packed;
    const struct kvq_packed_kernel *pk;
} kvq_tensor;

/* A tensor as the products take it (its packed copy, if any, included). */
static inline kvq_matw kvq_tensor_matw(const kvq_tensor *t) {
    return (kvq_matw){t->type, t->ne[0], t->ne[1], t->data, t->row_bytes, t->aux, t->aux_bytes, t->packed, t->pk};
}

typedef struct kvq_layer_weights {
    kvq_tensor attn_norm, wq, wk, wv, wo, bq, bk, bv;
    kvq_tensor ffn_norm, w_gate, w_up, w_down;
} kvq_layer_weights;

/* The large matrices of a layer, in one order: the tensors weight sets
 * requantize and repacking copies. */
#define KVQ_LAYER_MATS 7
static inline void kvq_layer_mats(kvq_layer_weights *w, kvq_tensor *out[KVQ_LAYER_MATS]) {
    kvq_tensor *m[KVQ_LAYER_MATS] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
    for (int i = 0; i < KVQ_LAYER_MATS; i++) out[i] = m[i];
}

typedef enum kvq_rope_scaling { KVQ_ROPE_NONE, KVQ_ROPE_LINEAR, KVQ_ROPE_LLAMA3 } kvq_rope_scaling;

typedef struct kvq_hparams {
    int32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    int32_t n_rot;           /* rotated dims per head (== head_dim for this family) */
    float rope_theta, rope_freq_scale, norm_eps;
    bool rope_neox;
    kvq_rope_scaling rope_scaling;
    float *rope_freq_factors; /* [n_rot/2] divisors of the base frequencies, or NULL */
} kvq_hparams;

/* A further set of weights for the same model (QuantSpec's draft). Only the
 * large matrices are its own; the layer's norms and biases are copies of the
 * views in set 0 (pointing at the same data). tok_embd differs from set 0's
 * only when the output head is tied to it and was requantized. */
typedef struct kvq_weight_set {
    kvq_layer_weights *layers;
    kvq_tensor tok_embd, output;
    struct kvq_model *src;   /* the other file it was read from (owned), or NULL */
    void **owned;            /* requantized matrices */
    int n_owned;
} kvq_weight_set;

#define KVQ_MAX_WEIGHT_SETS 4

struct kvq_model {
    kvq_logger lg;
    char arch[32], format[16], name[128];
    kvq_hparams hp;
    kvq_tensor tok_embd, out_norm, output;
    kvq_layer_weights *layers;
    kvq_vocab vocab;
    bool has_vocab, vocab_only;
    kvq_gguf gguf;           /* GGUF source (kept open: weights point into it) */
    const char *chat_template; /* an HF folder's tokenizer_config.json template (owned), or NULL */
    size_t chat_template_len;
    kvq_mapfile map;         /* llama2.c source */
    kvq_mapfile *shards;     /* safetensors sources (HF folder) */
    int n_shards;
    void **owned;            /* heap buffers freed with the model (converted weights) */
    int n_owned, cap_owned;
    kvq_weight_set sets[KVQ_MAX_WEIGHT_SETS - 1]; /* sets 1.. (set 0 is the fields above) */
    int n_extra_sets;
    bool no_repack;          /* kvq_model_params.no_repack: products read the file's layout */
};

/* The views of weight set `set` (0: the model's own). */
const kvq_layer_weights *kvq_model_set_layers(const struct kvq_model *m, int set);
const kvq_tensor *kvq_model_set_output(const struct kvq_model *m, int set);
const kvq_tensor *kvq_model_set_tok_embd(const struct kvq_model *m, int set);
void kvq_model_free_sets(struct kvq_model *m);

/* Loaders fill m (already zeroed, with lg set). */
kvq_status kvq_load_gguf(struct kvq_model *m, const char *path);
kvq_status kvq_load_llama2c(struct kvq_model *m, const char *path, const char *tok_path);
bool       kvq_llama2c_plausible(const uint8_t *head, size_t n);
const char *kvq_sniff_describe(const uint8_t *head, size_t n);
kvq_status kvq_load_hf(struct kvq_model *m, const char *dir);

/* Shared checks once a loader has filled hyperparameters and tensors. */
kvq_status kvq_model_validate(struct kvq_model *m);
/* Fills a tensor view and checks its shape; missing + !required leaves data NULL. */
/* data, or an owned copy when data is not aligned to `align` bytes: a
 * safetensors header of any length, or a GGUF with a small general.alignment,
 * can place tensors anywhere, and the kernels load whole elements. NULL
 * (status set) when out of memory. */
const void *kvq_model_aligned(struct kvq_model *m, const void *data, size_t bytes, size_t align, const char *name,
                              kvq_status *st);
/* the alignment a tensor of this type needs: its widest element (f32) or
 * the fp16 fields of its blocks */
size_t      kvq_type_align(int type);
kvq_status kvq_tensor_view(struct kvq_model *m, kvq_tensor *t, const char *name, kvq_type type, const void *data,
                           int64_t ne0, int64_t ne1, int64_t want0, int64_t want1);
/* Repacks the large matrices of one weight set for this host's decode
 * kernels when it has any (pack.c), into one new buffer that `own` takes
 * (and frees itself if it fails). */
kvq_status kvq_model_pack_set(struct kvq_model *m, kvq_layer_weights *layers, kvq_tensor *output,
                              kvq_status (*own)(void *ctx, void *p), void *ctx);
/* Takes ownership of a heap buffer freed with the model. */
kvq_status kvq_model_own(struct kvq_model *m, void *p);

#endif
