/* GGUF -> kvq_model: hyperparameters from "<arch>.*" keys, weights by their
 * llama.cpp names, vocabulary from "tokenizer.ggml.*". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

typedef struct arch_desc { const char *name; bool neox; } arch_desc;

/* The Llama family as llama.cpp names it. qwen2 differs by Q/K/V biases and
 * by rotating halves (its converter does not permute Q/K rows). */
static const arch_desc ARCHS[] = {{"llama", false}, {"mistral", false}, {"qwen2", true}};

static kvq_status get_dim(struct kvq_model *m, const char *arch, const char *suffix, bool required, int32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    kvq_status st = kvq_gguf_get_u32(&m->gguf, key, required, &v, &m->lg);
    if (st == KVQ_ERR_ARG && !required) return KVQ_OK;
    if (st) return st;
    if (v > (1u << 30)) return kvq_err(&m->lg, KVQ_ERR_FORMAT, "%s = %u is absurd", key, v);
    *out = (int32_t)v;
    return KVQ_OK;
}

static kvq_status get_float(struct kvq_model *m, const char *arch, const char *suffix, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    kvq_status st = kvq_gguf_get_f32(&m->gguf, key, false, out, &m->lg);
    return st == KVQ_ERR_ARG ? KVQ_OK : st;
}

/* Small vectors (norms, biases) are used as f32; convert them if stored otherwise. */
static kvq_status f32_vector(struct kvq_model *m, const kvq_gguf_tensor *gt, kvq_tensor *t, const char *name,
                             int64_t want) {
    snprintf(t->name, sizeof t->name, "%s", name);
    if (gt->n_dims != 1 || gt->ne[0] != want)
        return kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' has %lld elements, expected %lld", name,
                       (long long)gt->ne[0], (long long)want);
    kvq_status ast;
    const void *data = kvq_model_aligned(m, gt->data, gt->nbytes, kvq_type_align((int)gt->type), name, &ast);
    if (!data) return ast;
    if (gt->type != KVQ_TYPE_F32) {
        const kvq_type_traits *tr = kvq_traits((kvq_type)gt->type);
        if (!tr || !tr->to_float)
            return kvq_err(&m->lg, KVQ_ERR_UNSUPPORTED, "tensor '%s' has type %s, which kvq cannot read as a vector",
                           name, kvq_type_name((int)gt->type) ? kvq_type_name((int)gt->type) : "?");
        float *buf = malloc((size_t)want * sizeof(float));
        kvq_status st = kvq_model_own(m, buf);
        if (st) return st;
        tr->to_float(data, buf, want);
        data = buf;
    }
    t->type = KVQ_TYPE_F32;
    t->ne[0] = want;
    t->ne[1] = 1;
    t->data = data;
    t->row_bytes = (size_t)want * 4;
    return KVQ_OK;
}

/* A type with companion tensors (per-group bit widths, scales, zeros) finds
 * them as "<name>.<suffix>"; their sizes are the type's to check. */
static kvq_status bind_companions(struct kvq_model *m, kvq_tensor *t, const char *name) {
    const kvq_type_traits *tr = kvq_traits(t->type);
    for (int i = 0; tr && i < KVQ_TENSOR_AUX && tr->companions[i]; i++) {
        char cname[160];
        snprintf(cname, sizeof cname, "%s.%s", name, tr->companions[i]);
        const kvq_gguf_tensor *ct = kvq_gguf_tensor_find(&m->gguf, cname);
        if (!ct) return kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' of type %s needs its companion '%s'", name,
                                kvq_type_name(t->type), cname);
        if (ct->type != (uint32_t)tr->companion_types[i])
            return kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' has type %s; it must be %s", cname,
                           kvq_type_name((int)ct->type) ? kvq_type_name((int)ct->type) : "?",
                           kvq_type_name(tr->companion_types[i]));
        kvq_status ast;
        if (!(t->aux[i] = kvq_model_aligned(m, ct->data, ct->nbytes, kvq_type_align((int)ct->type), cname, &ast)))
            return ast;
        t->aux_bytes[i] = ct->nbytes;
    }
    char msg[200];
    const char *bad = tr && tr->check_aux ? tr->check_aux(t->type, t->ne[0], t->ne[1], t->aux, t->aux_bytes, msg,
                                                          sizeof msg)
                                          : NULL;
    if (bad) return kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' (%s): %s", name, kvq_type_name(t->type), bad);
    return KVQ_OK;
}

static kvq_status matrix(struct kvq_model *m, kvq_tensor *t, const char *name, int64_t want0, int64_t want1,
                         bool required) {
    const kvq_gguf_tensor *gt = kvq_gguf_tensor_find(&m->gguf, name);
    if (!gt) {
        if (!required) return KVQ_OK;
        return kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' is missing", name);
    }
    if (gt->n_dims > 2 || (want1 == 1 && gt->n_dims != 1))
        return kvq_err(&m->lg, KVQ_ERR_FORMAT, "tensor '%s' has %u dimensions", name, gt->n_dims);
    if (want1 == 1) return f32_vector(m, gt, t, name, want0);
    kvq_status st = kvq_tensor_view(m, t, name, (kvq_type)gt->type, gt->data, gt->ne[0], gt->ne[1], want0, want1);
    return st ? st : bind_companions(m, t, name);
}

static kvq_status load_vocab(struct kvq_model *m) {
    kvq_gguf *g = &m->gguf;
    const kvq_logger *lg = &m->lg;
    kvq_gguf_str model;
    kvq_status st = kvq_gguf_get_str(g, "tokenizer.ggml.model", false, &model, lg);
    if (st == KVQ_ERR_ARG) return KVQ_OK; /* no tokenizer: weights-only file */
    if (st) return st;
    kvq_vocab_kind kind;
    if (kvq_gguf_str_eq(model, "llama")) kind = KVQ_VOCAB_SPM;
    else if (kvq_gguf_str_eq(model, "gpt2")) kind = KVQ_VOCAB_BYTE_BPE;
    else if (kvq_gguf_str_eq(model, "none") || kvq_gguf_str_eq(model, "no_vocab")) return KVQ_OK;
    else
        return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "tokenizer model '%.*s' is not supported (llama, gpt2 are)",
                       (int)(model.n > 64 ? 64 : model.n), model.s);

    uint64_t n_tok, n_sc = 0, n_ty = 0, n_mg = 0;
    const uint8_t *toks, *scores = NULL, *types = NULL, *merges = NULL;
    if ((st = kvq_gguf_get_arr(g, "tokenizer.ggml.tokens", KVQ_GGUF_STRING, true, &n_tok, &toks, lg))) return st;
    st = kvq_gguf_get_arr(g, "tokenizer.ggml.scores", KVQ_GGUF_F32, false, &n_sc, &scores, lg);
    if (st && st != KVQ_ERR_ARG) return st;
    st = kvq_gguf_get_arr(g, "tokenizer.ggml.token_type", KVQ_GGUF_I32, false, &n_ty, &types, lg);
    if (st && st != KVQ_ERR_ARG) return st;
    st = kvq_gguf_get_arr(g, "tokenizer.ggml.merges", KVQ_GGUF_STRING, kind == KVQ_VOCAB_BYTE_BPE, &n_mg, &merges, lg);
    if (st && st != KVQ_ERR_ARG) return st;
    if (n_tok == 0 || n_tok > (1u << 24)) return kvq_err(lg, KVQ_ERR_FORMAT, "vocabulary of %llu tokens", (unsigned long long)n_tok);
    if (scores && n_sc != n_tok)
        return kvq_err(lg, KVQ_ERR_FORMAT, "%llu scores for %llu tokens", (unsigned long long)n_sc, (unsigned long long)n_tok);
    if (types && n_ty != n_tok)
        return kvq_err(lg, KVQ_ERR_FORMAT, "%llu token types for %llu tokens", (unsigned long long)n_ty,
                       (unsigned long long)n_tok);
    if (kind == KVQ_VOCAB_SPM && !scores) return kvq_err(lg, KVQ_ERR_FORMAT, "llama tokenizer without scores");

    size_t bytes = 0;
    const uint8_t *c = toks;
    for (uint64_t i = 0; i < n_tok; i++) bytes += kvq_gguf_str_next(&c).n;
    kvq_vocab *v = &m->vocab;
    if ((st = kvq_vocab_init(v, kind, (int32_t)n_tok, bytes, lg))) return st;
    m->has_vocab = true;
    c = toks;
    for (uint64_t i = 0; i < n_tok; i++) {
        kvq_gguf_str s = kvq_gguf_str_next(&c);
        float sc = 0;
        int32_t ty = KVQ_TOK_NORMAL;
        if (scores) memcpy(&sc, scores + 4 * i, 4);
        if (types) memcpy(&ty, types + 4 * i, 4);
        if (ty == 0) ty = KVQ_TOK_NORMAL;
        if (ty < 1 || ty > 6)
            return kvq_err(lg, KVQ_ERR_FORMAT, "token %llu has invalid type %d", (unsigned long long)i, ty);
        if ((st = kvq_vocab_set(v, (int32_t)i, s.s, (size_t)s.n, sc, ty, lg))) return st;
    }
    uint32_t id;
    const char *ids[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                         "tokenizer.ggml.unknown_token_id"};
    kvq_token *dst[] = {&v->bos, &v->eos, &v->eot, &v->unk};
    for (int k = 0; k < 4; k++) {
        st = kvq_gguf_get_u32(g, ids[k], false, &id, lg);
        if (st == KVQ_OK) *dst[k] = id < (uint32_t)n_tok ? (kvq_token)id : -1;
        else if (st != KVQ_ERR_ARG) return st;
    }
    v->add_bos = kind == KVQ_VOCAB_SPM;
    v->add_space_prefix = kind == KVQ_VOCAB_SPM;
    v->space_is_marker = kind == KVQ_VOCAB_SPM;
    st = kvq_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", false, &v->add_bos, lg);
    if (st && st != KVQ_ERR_ARG) return st;
    st = kvq_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", false, &v->add_space_prefix, lg);
    if (st && st != KVQ_ERR_ARG) return st;
    if (v->add_bos && v->bos < 0) v->add_bos = false;
    v->pretok = KVQ_PRETOK_GPT2;
    kvq_gguf_str pre;
    if (kvq_gguf_get_str(g, "tokenizer.ggml.pre", false, &pre, lg) == KVQ_OK) {
        if (kvq_gguf_str_eq(pre, "llama-bpe") || kvq_gguf_str_eq(pre, "llama3") || kvq_gguf_str_eq(pre, "smaug-bpe")) {
            v->pretok = KVQ_PRETOK_LLAMA3;
            v->ignore_merges = true; /* Llama 3's tokenizer.json sets it; GGUF does not carry the flag */
        } else if (kvq_gguf_str_eq(pre, "qwen2")) v->pretok = KVQ_PRETOK_QWEN2;
        else if (kind == KVQ_VOCAB_BYTE_BPE && !kvq_gguf_str_eq(pre, "gpt2") && !kvq_gguf_str_eq(pre, "default"))
            kvq_logf(lg, KVQ_LOG_WARN,
                     "tokenizer.ggml.pre '%.*s' is not one kvq knows (gpt2, llama-bpe, qwen2): pre-tokenizing as "
                     "GPT-2 does, so some texts may tokenize differently from the model's own tokenizer",
                     (int)(pre.n > 64 ? 64 : pre.n), pre.s);
    }
    if ((st = kvq_vocab_finish(v, lg))) return st;
    if (merges) {
        if (n_mg > (1u << 24)) return kvq_err(lg, KVQ_ERR_FORMAT, "%llu merges", (unsigned long long)n_mg);
        if ((st = kvq_vocab_alloc_merges(v, (int32_t)n_mg, lg))) return st;
        c = merges;
        for (uint64_t i = 0; i < n_mg; i++) {
            kvq_gguf_str s = kvq_gguf_str_next(&c);
            const char *sp = memchr(s.s, ' ', (size_t)s.n);
            if (!sp || sp == s.s || sp == s.s + s.n - 1)
                return kvq_err(lg, KVQ_ERR_FORMAT, "merge %llu is not 'left right'", (unsigned long long)i);
            size_t la = (size_t)(sp - s.s);
            if ((st = kvq_vocab_add_merge(v, s.s, la, sp + 1, (size_t)s.n - la - 1, (int32_t)i, lg))) return st;
        }
    }
    return KVQ_OK;
}

kvq_status kvq_load_gguf(struct kvq_model *m, const char *path) {
    const kvq_logger *lg = &m->lg;
    kvq_status st = kvq_gguf_open(path, &m->gguf, lg);
    if (st) return st;
    snprintf(m->format, sizeof m->format, "gguf");
    kvq_gguf_str arch, name;
    if ((st = kvq_gguf_get_str(&m->gguf, "general.architecture", true, &arch, lg))) return st;
    if (kvq_gguf_get_str(&m->gguf, "general.name", false, &name, lg) == KVQ_OK)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.n > 100 ? 100 : name.n), name.s);
    const arch_desc *ad = NULL;
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++)
        if (kvq_gguf_str_eq(arch, ARCHS[i].name)) ad = &ARCHS[i];
    if (!ad) {
        /* a vocabulary-only file of another family still gives a tokenizer */
        if (!m->vocab_only)
            return kvq_err(lg, KVQ_ERR_UNSUPPORTED,
                           "architecture '%.*s' is not supported (kvq runs: llama, mistral, qwen2)",
                           (int)(arch.n > 64 ? 64 : arch.n), arch.s);
    }
    snprintf(m->arch, sizeof m->arch, "%.*s", (int)(arch.n > 31 ? 31 : arch.n), arch.s);
    if ((st = load_vocab(m))) return st;

    kvq_hparams *h = &m->hp;
    const char *a = m->arch;
    h->rope_theta = 10000.0f;
    h->rope_freq_scale = 1.0f;
    h->norm_eps = 1e-5f;
    h->rope_neox = ad ? ad->neox : false;
    /* kvq quantize keeps an HF checkpoint's rotation (halves) and says so */
    bool halves;
    if (kvq_gguf_get_bool(&m->gguf, "kvq.rope.halves", false, &halves, lg) == KVQ_OK) h->rope_neox = halves;
    if (m->vocab_only) {
        h->n_vocab = m->has_vocab ? m->vocab.n : 0;
        return m->has_vocab ? KVQ_OK : kvq_err(lg, KVQ_ERR_FORMAT, "file has no tokenizer");
    }
    if ((st = get_dim(m, a, "embedding_length", true, &h->n_embd)) || (st = get_dim(m, a, "block_count", true, &h->n_layer)) ||
        (st = get_dim(m, a, "feed_forward_length", true, &h->n_ff)) ||
        (st = get_dim(m, a, "attention.head_count", true, &h->n_head)))
        return st;
    h->n_head_kv = h->n_head;
    h->n_ctx_train = 2048;
    if ((st = get_dim(m, a, "attention.head_count_kv", false, &h->n_head_kv)) ||
        (st = get_dim(m, a, "context_length", false, &h->n_ctx_train)))
        return st;
    if (h->n_head <= 0 || h->n_head > 1024) return kvq_err(lg, KVQ_ERR_FORMAT, "head count %d", h->n_head);
    h->head_dim = h->n_embd / h->n_head;
    if ((st = get_dim(m, a, "attention.key_length", false, &h->head_dim))) return st;
    h->n_rot = h->head_dim;
    if ((st = get_dim(m, a, "rope.dimension_count", false, &h->n_rot))) return st;
    if ((st = get_float(m, a, "attention.layer_norm_rms_epsilon", &h->norm_eps)) ||
        (st = get_float(m, a, "rope.freq_base", &h->rope_theta)))
        return st;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    kvq_gguf_str stype;
    float factor = 1.0f;
    if ((st = get_float(m, a, "rope.scaling.factor", &factor)) || (st = get_float(m, a, "rope.scale_linear", &factor)))
        return st;
    if (kvq_gguf_get_str(&m->gguf, key, false, &stype, lg) == KVQ_OK && !kvq_gguf_str_eq(stype, "none")) {
        if (kvq_gguf_str_eq(stype, "linear")) {
            h->rope_scaling = KVQ_ROPE_LINEAR;
        } else {
            return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "rope scaling '%.*s' is not supported (linear, llama3 are)",
                           (int)(stype.n > 32 ? 32 : stype.n), stype.s);
        }
    } else if (factor != 1.0f) {
        h->rope_scaling = KVQ_ROPE_LINEAR;
    }
    if (h->rope_scaling == KVQ_ROPE_LINEAR) {
        if (!(factor > 0)) return kvq_err(lg, KVQ_ERR_FORMAT, "rope scaling factor %g", factor);
        h->rope_freq_scale = 1.0f / factor;
    }
    const kvq_gguf_tensor *tok = kvq_gguf_tensor_find(&m->gguf, "token_embd.weight");
    if (!tok || tok->n_dims != 2) return kvq_err(lg, KVQ_ERR_FORMAT, "tensor 'token_embd.weight' missing or not 2-D");
    h->n_vocab = (int32_t)(tok->ne[1] > (1 << 22) ? -1 : tok->ne[1]);
    if (h->n_vocab < 0) return kvq_err(lg, KVQ_ERR_FORMAT, "vocabulary of %lld", (long long)tok->ne[1]);
    if ((st = kvq_model_validate(m))) return st;

    /* llama3-style scaling ships its per-frequency divisors as a tensor */
    const kvq_gguf_tensor *rf = kvq_gguf_tensor_find(&m->gguf, "rope_freqs.weight");
    if (rf) {
        kvq_tensor t;
        if ((st = f32_vector(m, rf, &t, "rope_freqs.weight", h->n_rot / 2))) return st;
        h->rope_freq_factors = malloc((size_t)(h->n_rot / 2) * sizeof(float));
        if (!h->rope_freq_factors) return KVQ_ERR_NOMEM;
        memcpy(h->rope_freq_factors, t.data, (size_t)(h->n_rot / 2) * sizeof(float));
        h->rope_scaling = KVQ_ROPE_LLAMA3;
    }

    const int64_t E = h->n_embd, Q = (int64_t)h->n_head * h->head_dim, KV = (int64_t)h->n_head_kv * h->head_dim;
    if ((st = matrix(m, &m->tok_embd, "token_embd.weight", E, h->n_vocab, true)) ||
        (st = matrix(m, &m->out_norm, "output_norm.weight", E, 1, true)) ||
        (st = matrix(m, &m->output, "output.weight", E, h->n_vocab, false)))
        return st;
    /* rows of the embedding are looked up one at a time, without companions */
    if (!kvq_traits(m->tok_embd.type)->to_float)
        return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "token_embd.weight has type %s, which kvq uses only for products",
                       kvq_type_name(m->tok_embd.type));
    if (!m->output.data) m->output = m->tok_embd;
    m->layers = calloc((size_t)h->n_layer, sizeof *m->layers);
    if (!m->layers) return kvq_err(lg, KVQ_ERR_NOMEM, "out of memory");
    for (int l = 0; l < h->n_layer; l++) {
        kvq_layer_weights *w = &m->layers[l];
        char n[12][64];
        const char *suf[12] = {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                               "attn_output.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias",
                               "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
        for (int k = 0; k < 12; k++) snprintf(n[k], sizeof n[k], "blk.%d.%s", l, suf[k]);
        if ((st = matrix(m, &w->attn_norm, n[0], E, 1, true)) || (st = matrix(m, &w->wq, n[1], E, Q, true)) ||
            (st = matrix(m, &w->wk, n[2], E, KV, true)) || (st = matrix(m, &w->wv, n[3], E, KV, true)) ||
            (st = matrix(m, &w->wo, n[4], Q, E, true)) || (st = matrix(m, &w->bq, n[5], Q, 1, false)) ||
            (st = matrix(m, &w->bk, n[6], KV, 1, false)) || (st = matrix(m, &w->bv, n[7], KV, 1, false)) ||
            (st = matrix(m, &w->ffn_norm, n[8], E, 1, true)) || (st = matrix(m, &w->w_gate, n[9], E, h->n_ff, true)) ||
            (st = matrix(m, &w->w_up, n[10], E, h->n_ff, true)) || (st = matrix(m, &w->w_down, n[11], h->n_ff, E, true)))
            return st;
    }
    return KVQ_OK;
}
