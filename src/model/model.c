/* Model loading entry point: picks the loader from what the path is, then
 * checks everything the forward pass relies on. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

kvq_model_params kvq_model_default_params(void) {
    kvq_model_params p = {0};
    return p;
}

kvq_status kvq_model_own(struct kvq_model *m, void *p) {
    if (!p) return kvq_err(&m->lg, KVQ_ERR_NOMEM, "out of memory");
    if (m->n_owned == m->cap_owned) {
        int nc = m->cap_owned ? 2 * m->cap_owned : 16;
        void **no = realloc(m->owned, (size_t)nc * sizeof *no);
        if (!no) {
            free(p);
            return kvq_err(&m->lg, KVQ_ERR_NOMEM, "out of memory");
        }
        m->owned = no;
        m->cap_owned = nc;
    }
    m->owned[m->n_owned++] = p;
    return KVQ_OK;
}

size_t kvq_type_align(int type) {
    if (type == KVQ_TYPE_F32) return 4;
    if (type == KVQ_TYPE_I8) return 1;
    return 2;
}

const void *kvq_model_aligned(struct kvq_model *m, const void *data, size_t bytes, size_t align, const char *name,
                              kvq_status *st) {
    *st = KVQ_OK;
    if (align <= 1 || (uintptr_t)data % align == 0) return data;
    void *copy = malloc(bytes ? bytes : 1);
    if ((*st = kvq_model_own(m, copy))) return NULL;
    memcpy(copy, data, bytes);
    kvq_logf(&m->lg, KVQ_LOG_INFO, "tensor '%s' is not %zu-byte aligned in the file; copied (%zu bytes)", name, align,
             bytes);
    return copy;
}

kvq_status kvq_tensor_view(struct kvq_model *m, kvq_tensor *t, const char *name, kvq_type type, const void *data,
                           int64_t ne0, int64_t ne1, int64_t want0, int64_t want1) {
    snprintf(t->name, sizeof t->name, "%s", name);
    if (ne0 != want0 || ne1 != want1)
        return kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
                       (long long)ne0, (long long)ne1, (long long)want0, (long long)want1);
    if (!kvq_traits(type))
        return kvq_err(&m->lg, KVQ_ERR_UNSUPPORTED, "tensor '%s' has type %s, which kvq cannot compute with", name,
                       kvq_type_name((int)type) ? kvq_type_name((int)type) : "?");
    t->type = type;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->data = data;
    t->row_bytes = kvq_row_size((int)type, ne0);
    if (!t->row_bytes)
        return kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' row of %lld does not fit the %s block", name,
                       (long long)ne0, kvq_type_name((int)type));
    kvq_status st;
    t->data = kvq_model_aligned(m, data, t->row_bytes * (size_t)ne1, kvq_type_align((int)type), name, &st);
    return st;
}

kvq_status kvq_model_validate(struct kvq_model *m) {
    kvq_hparams *h = &m->hp;
    const kvq_logger *lg = &m->lg;
    /* named as a person reads them, whichever format they came from */
#define RANGE(v, name, lo, hi)                                                                                    \
    if ((v) < (lo) || (v) > (hi))                                                                                 \
        return kvq_err(lg, KVQ_ERR_FORMAT, "the model's %s is %lld; it must be between %lld and %lld", name,      \
                       (long long)(v), (long long)(lo), (long long)(hi));
    RANGE(h->n_vocab, "vocabulary size", 1, 1 << 22);
    if (!m->vocab_only) {
        RANGE(h->n_embd, "hidden size (embedding length)", 1, 1 << 16);
        RANGE(h->n_layer, "layer count", 1, 1024);
        RANGE(h->n_head, "attention head count", 1, 1024);
        if (h->n_head_kv > h->n_head)
            return kvq_err(lg, KVQ_ERR_FORMAT, "the model has more KV heads (%d) than attention heads (%d)",
                           h->n_head_kv, h->n_head);
        RANGE(h->n_head_kv, "KV head count", 1, h->n_head);
        RANGE(h->head_dim, "head dimension", 2, 1024);
        RANGE(h->n_ff, "feed-forward size", 1, 1 << 20);
        RANGE(h->n_ctx_train, "training context length", 1, 1 << 24);
        RANGE(h->n_rot, "rotary dimension count", 2, h->head_dim);
        if (h->n_head % h->n_head_kv)
            return kvq_err(lg, KVQ_ERR_FORMAT, "%d attention heads cannot be grouped over %d KV heads (not a multiple)",
                           h->n_head, h->n_head_kv);
        if (h->head_dim % 2 || h->n_rot % 2)
            return kvq_err(lg, KVQ_ERR_FORMAT, "head dimension %d and rotary dimensions %d must be even", h->head_dim,
                           h->n_rot);
        if (!(h->rope_theta > 0) || !isfinite(h->rope_theta))
            return kvq_err(lg, KVQ_ERR_FORMAT, "the RoPE base (rope_theta) %g must be a finite positive number",
                           h->rope_theta);
        if (!(h->rope_freq_scale > 0) || !isfinite(h->rope_freq_scale))
            return kvq_err(lg, KVQ_ERR_FORMAT, "the RoPE frequency scale %g must be a finite positive number",
                           h->rope_freq_scale);
        if (!(h->norm_eps >= 0) || !isfinite(h->norm_eps))
            return kvq_err(lg, KVQ_ERR_FORMAT, "the RMSNorm epsilon %g must be a finite non-negative number",
                           h->norm_eps);
    }
#undef RANGE
    if (m->has_vocab && m->vocab.n != h->n_vocab) {
        if (m->vocab.n > h->n_vocab)
            return kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer has %d tokens but the model's vocabulary is %d", m->vocab.n,
                           h->n_vocab);
        kvq_logf(lg, KVQ_LOG_INFO, "model vocabulary %d is larger than the tokenizer's %d (padding rows)", h->n_vocab,
                 m->vocab.n);
    }
    return KVQ_OK;
}

/* What an unrecognised file looks like, so the error says more than "bad
 * header". */
const char *kvq_sniff_describe(const uint8_t *b, size_t n) {
    if (n < 8) return "a file too short to be a model";
    int same = 0;
    for (int i = 0; i < 4; i++) same += b[i] == (uint8_t)"GGUF"[i];
    if (same == 3) return "a GGUF file with a damaged magic (its first 4 bytes are not \"GGUF\")";
    uint64_t hl;
    memcpy(&hl, b, 8);
    if (n > 9 && hl >= 2 && hl < (100u << 20) && b[8] == '{')
        return "a single safetensors file (give the Hugging Face folder that holds it with config.json)";
    if (b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) return "a ZIP archive (a PyTorch checkpoint?)";
    if (b[0] == 0x80 && b[1] <= 5) return "a Python pickle (a PyTorch checkpoint?)";
    size_t text = 0;
    for (size_t i = 0; i < n; i++) text += (b[i] >= 32 && b[i] < 127) || b[i] == '\n' || b[i] == '\r' || b[i] == '\t' || b[i] >= 0x80;
    if (text == n) return b[0] == '{' ? "a JSON text file" : "a text file";
    return "none of them (unknown binary data)";
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static kvq_status own_buffer(void *m, void *p) { return kvq_model_own(m, p); }

kvq_status kvq_model_load(const kvq_model_params *p, kvq_model **out) {
    *out = NULL;
    kvq_logger lg = {p ? p->log : NULL, p ? p->log_user : NULL};
    if (!p || !p->path || !*p->path) return kvq_err(&lg, KVQ_ERR_ARG, "no model path given");
    struct kvq_model *m = calloc(1, sizeof *m);
    if (!m) return kvq_err(&lg, KVQ_ERR_NOMEM, "out of memory");
    m->lg = lg;
    m->vocab_only = p->vocab_only;
    kvq_status st;
    const bool tok_given = p->tokenizer_path && *p->tokenizer_path;
    if (is_dir(p->path)) {
        st = kvq_load_hf(m, p->path);
    } else {
        uint8_t head[64] = {0};
        kvq_status ost;
        FILE *f = kvq_fopen_read(p->path, &lg, &ost);
        if (!f) {
            free(m);
            return ost;
        }
        size_t got = fread(head, 1, sizeof head, f);
        fclose(f);
        if (got >= 4 && memcmp(head, "GGUF", 4) == 0) st = kvq_load_gguf(m, p->path);
        else if (kvq_llama2c_plausible(head, got)) st = kvq_load_llama2c(m, p->path, p->tokenizer_path);
        else st = kvq_err(&lg, KVQ_ERR_FORMAT,
                          "'%s' is not a model kvq can read: it looks like %s. kvq reads GGUF files, Hugging Face "
                          "folders (config.json, tokenizer.json, *.safetensors) and llama2.c checkpoints (with "
                          "--tokenizer FILE.bin)", p->path, kvq_sniff_describe(head, got));
    }
    /* silently using the model's own tokenizer would hide a user's mistake */
    if (st == KVQ_OK && tok_given && strcmp(m->format, "llama2c"))
        st = kvq_err(&lg, KVQ_ERR_ARG,
                     "--tokenizer '%s' is for llama2.c checkpoints; '%s' is a %s model with its own tokenizer (drop "
                     "--tokenizer)", p->tokenizer_path, p->path, !strcmp(m->format, "hf") ? "Hugging Face" : "GGUF");
    m->no_repack = p->no_repack;
    if (st == KVQ_OK && !m->vocab_only && m->layers && !m->no_repack)
        st = kvq_model_pack_set(m, m->layers, &m->output, own_buffer, m);
    if (st != KVQ_OK) {
        kvq_model_free(m);
        return st;
    }
    *out = m;
    return KVQ_OK;
}

void kvq_model_free(kvq_model *m) {
    if (!m) return;
    kvq_model_free_sets(m);
    free(m->layers);
    kvq_vocab_free(&m->vocab);
    kvq_gguf_close(&m->gguf);
    kvq_mapfile_close(&m->map);
    for (int i = 0; i < m->n_shards; i++) kvq_mapfile_close(&m->shards[i]);
    free(m->shards);
    free(m->hp.rope_freq_factors);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m);
}

static uint64_t tensor_elems(const kvq_tensor *t) { return t->data ? (uint64_t)(t->ne[0] * t->ne[1]) : 0; }
/* codes and the companions (a mixed-precision type's bit map, scales, zeros) */
static uint64_t tensor_bytes(const kvq_tensor *t) {
    if (!t->data) return 0;
    uint64_t b = t->row_bytes * (uint64_t)t->ne[1];
    for (int i = 0; i < KVQ_TENSOR_AUX; i++) b += t->aux_bytes[i];
    return b;
}

/* Visits every weight tensor, including the output head when it is not tied. */
static int all_tensors(const kvq_model *m, const kvq_tensor **list, int cap) {
    int n = 0;
#define ADD(t) do { if ((t)->data && n < cap) list[n++] = (t); } while (0)
    ADD(&m->tok_embd);
    for (int l = 0; m->layers && l < m->hp.n_layer; l++) {
        const kvq_layer_weights *w = &m->layers[l];
        ADD(&w->attn_norm); ADD(&w->wq); ADD(&w->wk); ADD(&w->wv); ADD(&w->bq); ADD(&w->bk); ADD(&w->bv);
        ADD(&w->wo); ADD(&w->ffn_norm); ADD(&w->w_gate); ADD(&w->w_up); ADD(&w->w_down);
    }
    ADD(&m->out_norm);
    if (m->output.data != m->tok_embd.data) ADD(&m->output);
#undef ADD
    return n;
}

static int max_tensors(const kvq_model *m) { return 4 + 12 * (m->layers ? m->hp.n_layer : 0); }

int kvq_model_tensor_count(const kvq_model *m) {
    const kvq_tensor **list = malloc((size_t)max_tensors(m) * sizeof *list);
    if (!list) return 0;
    int n = all_tensors(m, list, max_tensors(m));
    free(list);
    return n;
}

kvq_status kvq_model_tensor_desc(const kvq_model *m, int i, char *buf, size_t cap) {
    int total = max_tensors(m);
    const kvq_tensor **list = malloc((size_t)total * sizeof *list);
    if (!list) return KVQ_ERR_NOMEM;
    int n = all_tensors(m, list, total);
    kvq_status st = KVQ_ERR_ARG;
    if (i >= 0 && i < n) {
        const kvq_tensor *t = list[i];
        snprintf(buf, cap, "%-28s %-5s [%lld, %lld]", t->name, kvq_type_name((int)t->type), (long long)t->ne[0],
                 (long long)t->ne[1]);
        st = KVQ_OK;
    }
    free(list);
    return st;
}

kvq_status kvq_model_get_info(const kvq_model *m, kvq_model_info *info) {
    memset(info, 0, sizeof *info);
    const kvq_hparams *h = &m->hp;
    snprintf(info->arch, sizeof info->arch, "%s", m->arch);
    snprintf(info->format, sizeof info->format, "%s", m->format);
    snprintf(info->name, sizeof info->name, "%s", m->name);
    info->n_vocab = h->n_vocab;
    info->n_embd = h->n_embd;
    info->n_layer = h->n_layer;
    info->n_head = h->n_head;
    info->n_head_kv = h->n_head_kv;
    info->head_dim = h->head_dim;
    info->n_ff = h->n_ff;
    info->n_ctx_train = h->n_ctx_train;
    info->rope_theta = h->rope_theta;
    info->rope_freq_scale = h->rope_freq_scale;
    info->norm_eps = h->norm_eps;
    info->rope_neox = h->rope_neox;
    snprintf(info->rope_scaling, sizeof info->rope_scaling, "%s",
             h->rope_scaling == KVQ_ROPE_LINEAR ? "linear" : h->rope_scaling == KVQ_ROPE_LLAMA3 ? "llama3" : "none");
    info->qkv_bias = m->layers && m->layers[0].bq.data;
    info->tied_embeddings = m->output.data == m->tok_embd.data;
    const kvq_tensor **list = malloc((size_t)max_tensors(m) * sizeof *list);
    if (!list) return KVQ_ERR_NOMEM;
    int n = all_tensors(m, list, max_tensors(m));
    for (int i = 0; i < n; i++) {
        info->n_params += tensor_elems(list[i]);
        info->weight_bytes += tensor_bytes(list[i]);
    }
    free(list);
    static const char *kinds[] = {"spm", "bpe-merges", "byte-bpe"};
    snprintf(info->tokenizer, sizeof info->tokenizer, "%s", m->has_vocab ? kinds[m->vocab.kind] : "none");
    info->bos = m->vocab.bos;
    info->eos = m->vocab.eos;
    info->add_bos = m->vocab.add_bos;
    return KVQ_OK;
}

uint64_t kvq_model_weight_bytes(const kvq_model *m) {
    uint64_t b = tensor_bytes(&m->output) + tensor_bytes(&m->out_norm);
    for (int l = 0; m->layers && l < m->hp.n_layer; l++) {
        const kvq_layer_weights *w = &m->layers[l];
        const kvq_tensor *t[] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->bq, &w->bk, &w->bv,
                                 &w->wo, &w->ffn_norm, &w->w_gate, &w->w_up, &w->w_down};
        for (int i = 0; i < 12; i++) b += tensor_bytes(t[i]);
    }
    return b;
}

/* FNV-1a over the hyperparameters and every tensor's name, type and shape:
 * what a saved session depends on. It does not hash the weights themselves
 * (reading a whole model to restore a session would cost more than the
 * prefill it saves); two files with the same table and different values
 * are not told apart. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t kvq_model_fingerprint(const kvq_model *m) {
    const kvq_hparams *hp = &m->hp;
    int32_t dims[] = {hp->n_vocab, hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_ff,
                      hp->n_rot, hp->rope_neox, (int32_t)hp->rope_scaling};
    float f[] = {hp->rope_theta, hp->rope_freq_scale, hp->norm_eps};
    uint64_t h = fnv(0xcbf29ce484222325ull, m->arch, strlen(m->arch));
    h = fnv(h, dims, sizeof dims);
    h = fnv(h, f, sizeof f);
    const int cap = max_tensors(m);
    const kvq_tensor **list = malloc((size_t)cap * sizeof *list);
    if (!list) return h;
    int n = all_tensors(m, list, cap);
    for (int i = 0; i < n; i++) {
        int32_t t = (int32_t)list[i]->type;
        h = fnv(h, list[i]->name, strlen(list[i]->name));
        h = fnv(h, &t, sizeof t);
        h = fnv(h, list[i]->ne, sizeof list[i]->ne);
    }
    free(list);
    return h;
}

kvq_status kvq_tokenize(const kvq_model *m, const char *text, size_t len, bool add_bos, kvq_token *out, int cap,
                        int *n_out) {
    if (!m->has_vocab) return kvq_err(&m->lg, KVQ_ERR_ARG, "model has no tokenizer");
    if (!text && len) return KVQ_ERR_ARG;
    return kvq_tokenize_ex(m, text, len, add_bos, false, out, cap, n_out);
}

kvq_status kvq_tokenize_ex(const kvq_model *m, const char *text, size_t len, bool add_bos, bool parse_special,
                           kvq_token *out, int cap, int *n_out) {
    if (!m->has_vocab) return kvq_err(&m->lg, KVQ_ERR_ARG, "model has no tokenizer");
    if (!text && len) return KVQ_ERR_ARG;
    int n_unk = 0;
    const kvq_status st =
        kvq_vocab_encode_unk(&m->vocab, text ? text : "", len, add_bos, parse_special, out, cap, n_out, &n_unk);
    /* said once, by the call that fills the tokens (callers often count first) */
    if (st == KVQ_OK && n_unk)
        kvq_logf(&m->lg, KVQ_LOG_WARN, "%d character(s) of the text are not in the vocabulary and became <unk>%s",
                 n_unk, m->vocab.fuse_unk ? " (runs of them fused into one, as the tokenizer asks)" : "");
    return st;
}

int kvq_token_to_piece(const kvq_model *m, kvq_token prev, kvq_token tok, char *buf, int cap) {
    if (!m->has_vocab) return -(int)KVQ_ERR_ARG;
    return kvq_vocab_piece(&m->vocab, prev, tok, buf, cap);
}

int kvq_vocab_size(const kvq_model *m) { return m->hp.n_vocab; }

bool kvq_token_is_eog(const kvq_model *m, kvq_token t) {
    return t >= 0 && (t == m->vocab.eos || t == m->vocab.eot);
}

kvq_status kvq_model_meta_str(const kvq_model *m, const char *key, const char **s, size_t *n) {
    *s = NULL;
    *n = 0;
    if (!strcmp(m->format, "hf") && !strcmp(key, "tokenizer.chat_template") && m->chat_template) {
        *s = m->chat_template;
        *n = m->chat_template_len;
        return KVQ_OK;
    }
    if (strcmp(m->format, "gguf")) return KVQ_ERR_ARG;
    kvq_gguf_str v = {0};
    kvq_logger quiet = {0}; /* an absent key is an answer, not an error to log */
    if (kvq_gguf_get_str(&m->gguf, key, false, &v, &quiet) || !v.s) return KVQ_ERR_ARG;
    *s = v.s;
    *n = (size_t)v.n;
    return KVQ_OK;
}
