/* llama2.c checkpoints (the "legacy" export: a 7-int header then f32 arrays)
 * and llama2.c tokenizer files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

typedef struct { int32_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len; } l2c_header;

static kvq_status load_tokenizer(struct kvq_model *m, const char *path, int32_t n_vocab) {
    const kvq_logger *lg = &m->lg;
    kvq_mapfile f;
    kvq_status st = kvq_mapfile_open(path, &f, lg);
    if (st) return st;
    const uint8_t *p = f.data, *end = f.data + f.size;
    /* first pass: validate lengths and total bytes */
    size_t bytes = 0;
    const uint8_t *q = p + 4;
    if (f.size < 4) { st = kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer '%s' is truncated", path); goto done; }
    for (int32_t i = 0; i < n_vocab; i++) {
        int32_t len;
        if ((size_t)(end - q) < 8) { st = kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer '%s' ends at token %d, but the checkpoint's vocabulary is %d", path, i, n_vocab); goto done; }
        memcpy(&len, q + 4, 4);
        if (len < 0 || (size_t)len > (size_t)(end - q - 8)) {
            st = kvq_err(lg, KVQ_ERR_FORMAT, "tokenizer '%s': token %d has length %d beyond the file", path, i, len);
            goto done;
        }
        bytes += (size_t)len;
        q += 8 + len;
    }
    if (q != end) {
        st = kvq_err(lg, KVQ_ERR_FORMAT,
                     "tokenizer '%s' has %zu bytes after its %d tokens: it is for a larger vocabulary than the "
                     "checkpoint's %d",
                     path, (size_t)(end - q), n_vocab, n_vocab);
        goto done;
    }
    kvq_vocab *v = &m->vocab;
    if ((st = kvq_vocab_init(v, KVQ_VOCAB_SPM, n_vocab, bytes, lg))) goto done;
    m->has_vocab = true;
    q = p + 4;
    for (int32_t i = 0; i < n_vocab; i++) {
        float score;
        int32_t len;
        memcpy(&score, q, 4);
        memcpy(&len, q + 4, 4);
        int attr = i == 0 ? KVQ_TOK_UNKNOWN : (i == 1 || i == 2) ? KVQ_TOK_CONTROL : KVQ_TOK_NORMAL;
        if ((st = kvq_vocab_set(v, i, (const char *)q + 8, (size_t)len, score, attr, lg))) goto done;
        q += 8 + len;
    }
    /* llama2.c conventions: <unk>=0, BOS=1, EOS=2, plain spaces in tokens */
    v->unk = 0;
    v->bos = n_vocab > 1 ? 1 : -1;
    v->eos = n_vocab > 2 ? 2 : -1;
    v->add_bos = true;
    v->add_space_prefix = true;
    v->space_is_marker = false;
    st = kvq_vocab_finish(v, lg);
done:
    kvq_mapfile_close(&f);
    return st;
}

/* The header's seven int32 are all in plausible ranges: only then is an
 * unknown file taken for a llama2.c checkpoint. */
bool kvq_llama2c_plausible(const uint8_t *b, size_t n) {
    if (n < sizeof(l2c_header)) return false;
    l2c_header h;
    memcpy(&h, b, sizeof h);
    if (h.dim == 0x616b3432) return true; /* versioned export: the loader names it */
    const int64_t v = h.vocab < 0 ? -(int64_t)h.vocab : h.vocab;
    return h.dim > 0 && h.dim <= 65536 && h.hidden > 0 && h.hidden <= (1 << 20) && h.n_layers > 0 &&
           h.n_layers <= 1024 && h.n_heads > 0 && h.n_heads <= h.dim && h.n_kv_heads > 0 && h.n_kv_heads <= 4096 &&
           v > 0 && v <= (1 << 22) && h.seq_len > 0 && h.seq_len <= (1 << 24);
}

kvq_status kvq_load_llama2c(struct kvq_model *m, const char *path, const char *tok_path) {
    const kvq_logger *lg = &m->lg;
    snprintf(m->format, sizeof m->format, "llama2c");
    snprintf(m->arch, sizeof m->arch, "llama");
    kvq_status st = kvq_mapfile_open(path, &m->map, lg);
    if (st) return st;
    if (m->map.size < sizeof(l2c_header))
        return kvq_err(lg, KVQ_ERR_FORMAT, "'%s' is neither GGUF nor a llama2.c checkpoint (too short)", path);
    l2c_header h;
    memcpy(&h, m->map.data, sizeof h);
    if (h.dim == 0x616b3432)
        return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "'%s' is a versioned llama2.c export; use the legacy export", path);
    bool shared = h.vocab > 0;
    if (h.vocab < 0 && h.vocab > -(1 << 22)) h.vocab = -h.vocab; /* negative: separate classifier */
    if (h.dim <= 0 || h.dim > 65536 || h.hidden <= 0 || h.hidden > (1 << 20) || h.n_layers <= 0 || h.n_layers > 1024 ||
        h.n_heads <= 0 || h.n_heads > h.dim || h.n_kv_heads <= 0 || h.n_kv_heads > h.n_heads || h.vocab <= 0 ||
        h.vocab > (1 << 22) || h.seq_len <= 0 || h.seq_len > (1 << 24) || h.dim % h.n_heads ||
        h.n_heads % h.n_kv_heads)
        return kvq_err(lg, KVQ_ERR_FORMAT,
                       "'%s' is not a valid llama2.c checkpoint (header dim=%d hidden=%d layers=%d heads=%d kv=%d "
                       "vocab=%d seq=%d)",
                       path, h.dim, h.hidden, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab, h.seq_len);
    const int64_t D = h.dim, HS = h.dim / h.n_heads, KV = (int64_t)h.n_kv_heads * HS, L = h.n_layers, F = h.hidden;
    const int64_t need = h.vocab * D + L * (D + D * D + 2 * D * KV + D * D + D + 3 * D * F) + D +
                         (int64_t)h.seq_len * HS + (shared ? 0 : h.vocab * D);
    /* exact: a vocabulary size that does not match the arrays behind the
     * header (or a sign that wrongly claims a separate classifier) leaves
     * bytes over or missing, and every array after the embedding would be
     * read from the wrong offset */
    const uint64_t want = sizeof h + (uint64_t)need * 4;
    if (m->map.size != want)
        return kvq_err(lg, KVQ_ERR_FORMAT,
                       "'%s' is %s for its llama2.c header: the header (dim %d, %d layers, vocabulary %d, %s classifier) "
                       "needs %llu bytes, the file has %zu",
                       path, m->map.size < want ? "truncated" : "too long", h.dim, h.n_layers, h.vocab,
                       shared ? "shared" : "separate", (unsigned long long)want, m->map.size);
    kvq_hparams *hp = &m->hp;
    hp->n_vocab = h.vocab;
    hp->n_embd = h.dim;
    hp->n_layer = h.n_layers;
    hp->n_head = h.n_heads;
    hp->n_head_kv = h.n_kv_heads;
    hp->head_dim = (int32_t)HS;
    hp->n_rot = (int32_t)HS;
    hp->n_ff = h.hidden;
    hp->n_ctx_train = h.seq_len;
    hp->rope_theta = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->norm_eps = 1e-5f;
    hp->rope_neox = false;

    if (!tok_path || !*tok_path)
        return kvq_err(lg, KVQ_ERR_ARG, "llama2.c checkpoint '%s' needs its tokenizer: pass --tokenizer FILE.bin", path);
    if ((st = load_tokenizer(m, tok_path, h.vocab))) return st;

    const float *p = (const float *)(m->map.data + sizeof h);
    const float *emb = p;
    p += h.vocab * D;
    const float *rms_att = p; p += L * D;
    const float *wq = p; p += L * D * D;
    const float *wk = p; p += L * D * KV;
    const float *wv = p; p += L * D * KV;
    const float *wo = p; p += L * D * D;
    const float *rms_ffn = p; p += L * D;
    const float *w1 = p; p += L * D * F;
    const float *w2 = p; p += L * F * D;
    const float *w3 = p; p += L * D * F;
    const float *rms_final = p; p += D;
    p += (int64_t)h.seq_len * HS; /* precomputed RoPE tables (real + imaginary halves), unused */
    const float *wcls = shared ? emb : p;

    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers) return kvq_err(lg, KVQ_ERR_NOMEM, "out of memory");
#define V(t, name, data, n0, n1)                                                               \
    if ((st = kvq_tensor_view(m, t, name, KVQ_TYPE_F32, data, n0, n1, n0, n1))) return st;
    V(&m->tok_embd, "token_embedding", emb, D, h.vocab);
    V(&m->out_norm, "rms_final", rms_final, D, 1);
    V(&m->output, shared ? "token_embedding" : "wcls", wcls, D, h.vocab);
    for (int64_t l = 0; l < L; l++) {
        kvq_layer_weights *w = &m->layers[l];
        char n[64];
        snprintf(n, sizeof n, "layers.%lld.rms_att", (long long)l); V(&w->attn_norm, n, rms_att + l * D, D, 1);
        snprintf(n, sizeof n, "layers.%lld.wq", (long long)l); V(&w->wq, n, wq + l * D * D, D, D);
        snprintf(n, sizeof n, "layers.%lld.wk", (long long)l); V(&w->wk, n, wk + l * D * KV, D, KV);
        snprintf(n, sizeof n, "layers.%lld.wv", (long long)l); V(&w->wv, n, wv + l * D * KV, D, KV);
        snprintf(n, sizeof n, "layers.%lld.wo", (long long)l); V(&w->wo, n, wo + l * D * D, D, D);
        snprintf(n, sizeof n, "layers.%lld.rms_ffn", (long long)l); V(&w->ffn_norm, n, rms_ffn + l * D, D, 1);
        snprintf(n, sizeof n, "layers.%lld.w1", (long long)l); V(&w->w_gate, n, w1 + l * D * F, D, F);
        snprintf(n, sizeof n, "layers.%lld.w2", (long long)l); V(&w->w_down, n, w2 + l * F * D, F, D);
        snprintf(n, sizeof n, "layers.%lld.w3", (long long)l); V(&w->w_up, n, w3 + l * D * F, D, F);
    }
#undef V
    return KVQ_OK;
}
