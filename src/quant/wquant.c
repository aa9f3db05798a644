/* kvq quantize --method rtn|gptq|slim: a model's layer matrices into the
 * slim mixed-precision type (kernels/slim.h), written as a GGUF.
 *
 * Calibration runs the full-precision model over the tokens in windows of
 * ctx; a tap on each layer's linear inputs accumulates X^T X (GPTQ's
 * Hessian) for Q/K/V (shared), O, gate/up (shared) and down, and keeps a
 * strided sample of input rows for SBA's KL. All layers are calibrated from
 * the full-precision model (not sequentially from the quantized layers
 * below, as the GPTQ paper does): one forward pass per group of layers whose
 * Hessians fit in memory.
 *
 * The output GGUF holds the whole model. From a GGUF input every key is
 * copied (tokenizer included); from an HF folder or a llama2.c file the
 * file has the architecture and the weights but no tokenizer, and is run as
 * `--weights OUT.gguf` beside the original model, so it keeps the source's
 * rotary convention: an HF Llama rotates halves where GGUF's llama rotates
 * adjacent pairs, and the key kvq.rope.halves says so (a slim file is
 * kvq's own anyway). The token embedding, norms and output head keep their
 * types, as in the paper. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../io/gguf_write.h"
#include "../kernels/slim.h"
#include "../model/model.h"
#include "requant.h"
#include "gptq.h"

#define N_SAMPLE 256
#define N_MAT 7
static const char *const MAT_NAME[N_MAT] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                            "ffn_down"};
static const kvq_linear_input MAT_INPUT[N_MAT] = {KVQ_LIN_QKV, KVQ_LIN_QKV, KVQ_LIN_QKV, KVQ_LIN_O,
                                                  KVQ_LIN_GATE_UP, KVQ_LIN_GATE_UP, KVQ_LIN_DOWN};

typedef struct calib_in {
    int cols;
    float *H;      /* cols x cols, sum of x x^T (upper triangle while collecting) */
    float *X;      /* N_SAMPLE x cols */
    int64_t seen;  /* rows seen */
    int ns;        /* rows sampled */
} calib_in;

typedef struct collect {
    int l0, l1;    /* layers collected */
    int stride;    /* every stride-th row is sampled */
    calib_in (*in)[4];
} collect;

static void tap(void *user, int layer, kvq_linear_input which, const float *x, int n, int cols) {
    collect *c = user;
    if (layer < c->l0 || layer >= c->l1 || (int)which > 3) return;
    calib_in *ci = &c->in[layer - c->l0][which];
    if (ci->cols != cols) return;
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, cols, n, 1.0f, x, cols, 1.0f, ci->H, cols);
    for (int i = 0; i < n && ci->ns < N_SAMPLE; i++)
        if ((ci->seen + i) % c->stride == 0)
            memcpy(ci->X + (size_t)ci->ns++ * cols, x + (size_t)i * cols, (size_t)cols * sizeof(float));
    ci->seen += n;
}

typedef struct qmat {
    int type;        /* slim type, or -1: kept */
    int ng;
    uint64_t bytes;  /* written: codes, and a slim type's bit map and scale table */
    int8_t *bits;
    uint8_t *codes;
    kvq_f16 *dm;
} qmat;

static const kvq_tensor *layer_mat(const kvq_layer_weights *w, int i) {
    const kvq_tensor *t[N_MAT] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
    return t[i];
}

/* The group size for rows of cols: the asked one, or the largest multiple
 * of 32 below it that divides the row; 0 when none does. */
static int group_for(int G, int64_t cols) {
    for (int g = (int)(G < cols ? G : cols) / 32 * 32; g >= 32; g -= 32)
        if (cols % g == 0) return g;
    return 0;
}

static kvq_status quantize_one(const kvq_wquant_params *p, const kvq_tensor *t, const calib_in *ci, qmat *q,
                               kvq_wquant_layer *rep, const kvq_logger *lg) {
    const int64_t cols = t->ne[0], rows = t->ne[1];
    const int std_type = p->std_type ? kvq_type_parse(p->std_type) : -1;
    const int blk = std_type >= 0 ? kvq_wq_std_block(std_type) : 32;
    const int G = std_type >= 0 ? (cols % blk ? 0 : blk) : group_for(p->group, cols);
    q->type = -1;
    const kvq_type_traits *tr = kvq_traits(t->type);
    if (!tr || !tr->to_float) {
        kvq_logf(lg, KVQ_LOG_WARN, "%s: type %s cannot be read row by row; kept as it is", t->name,
                 kvq_type_name(t->type));
        return KVQ_OK;
    }
    if (!G) {
        kvq_logf(lg, KVQ_LOG_WARN, "%s: rows of %lld do not divide into groups of %d; kept as %s", t->name,
                 (long long)cols, blk, kvq_type_name(t->type));
        return KVQ_OK;
    }
    float *W = malloc((size_t)(rows * cols) * sizeof *W);
    if (!W) return KVQ_ERR_NOMEM;
    for (int64_t r = 0; r < rows; r++) tr->to_float((const uint8_t *)t->data + (size_t)r * t->row_bytes, W + r * cols, cols);
    q->ng = (int)(cols / G);
    kvq_wq_params wp = kvq_wq_default_params();
    wp.method = !strcmp(p->method, "rtn") ? KVQ_WQ_RTN : !strcmp(p->method, "gptq") ? KVQ_WQ_GPTQ : KVQ_WQ_SLIM;
    wp.bits = p->bits;
    wp.group = G;
    wp.n_threads = p->n_threads;
    kvq_wq_report r;
    kvq_status st;
    if (std_type >= 0) {
        q->codes = malloc(kvq_row_size(std_type, cols) * (size_t)rows);
        st = q->codes ? kvq_wq_matrix_q4(&wp, std_type, W, rows, cols, ci ? ci->H : NULL, ci ? ci->X : NULL,
                                         ci ? ci->ns : 0, q->codes, &r, lg)
                      : KVQ_ERR_NOMEM;
    } else {
        q->bits = malloc((size_t)q->ng);
        q->codes = malloc((size_t)(rows * cols) * (size_t)p->bits / 8);
        q->dm = malloc((size_t)rows * q->ng * 2 * sizeof *q->dm);
        st = q->bits && q->codes && q->dm ? KVQ_OK : KVQ_ERR_NOMEM;
        if (!st)
            st = kvq_wq_matrix(&wp, W, rows, cols, ci ? ci->H : NULL, ci ? ci->X : NULL, ci ? ci->ns : 0, q->bits,
                               q->codes, q->dm, &r, lg);
    }
    free(W);
    if (st) return st;
    q->type = std_type >= 0 ? std_type : kvq_slim_type(p->bits);
    q->bytes = std_type >= 0 ? kvq_row_size(std_type, cols) * (uint64_t)rows
                             : (uint64_t)(rows * cols) * (uint64_t)p->bits / 8 + (uint64_t)q->ng * (1 + 4 * (uint64_t)rows);
    rep->rel_err = (float)r.rel_err;
    rep->kl = (float)r.kl;
    rep->p = r.p;
    rep->group = G;
    return KVQ_OK;
}

static void put_tensor(kvq_gguf_writer *w, const char *name, const kvq_tensor *t, bool vec) {
    const int64_t ne[2] = {t->ne[0], t->ne[1]};
    kvq_gguf_add_tensor(w, name, (uint32_t)t->type, vec ? 1 : 2, ne, t->data, t->row_bytes * (uint64_t)t->ne[1]);
}

/* Metadata of a model that was not read from a GGUF. */
static void put_hparams(kvq_gguf_writer *w, const kvq_model *m, const char *arch) {
    const kvq_hparams *h = &m->hp;
    char key[128];
#define SETU(k, v) (snprintf(key, sizeof key, "%s." k, arch), kvq_gguf_set_u32(w, key, (uint32_t)(v)))
#define SETF(k, v) (snprintf(key, sizeof key, "%s." k, arch), kvq_gguf_set_f32(w, key, (v)))
    SETU("context_length", h->n_ctx_train);
    SETU("embedding_length", h->n_embd);
    SETU("block_count", h->n_layer);
    SETU("feed_forward_length", h->n_ff);
    SETU("attention.head_count", h->n_head);
    SETU("attention.head_count_kv", h->n_head_kv);
    SETU("attention.key_length", h->head_dim);
    SETU("attention.value_length", h->head_dim);
    SETU("rope.dimension_count", h->n_rot);
    SETU("vocab_size", h->n_vocab);
    SETF("rope.freq_base", h->rope_theta);
    SETF("attention.layer_norm_rms_epsilon", h->norm_eps);
    if (h->rope_scaling == KVQ_ROPE_LINEAR) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
        kvq_gguf_set_str(w, key, "linear");
        SETF("rope.scaling.factor", 1.0f / h->rope_freq_scale);
    }
#undef SETU
#undef SETF
}

static kvq_status write_model(const kvq_wquant_params *p, const kvq_model *m, qmat (*q)[N_MAT], const char *out,
                              const kvq_logger *lg) {
    kvq_gguf_writer *w = kvq_gguf_writer_new();
    kvq_status st = KVQ_OK;
    if (!w) return KVQ_ERR_NOMEM;
    const kvq_hparams *h = &m->hp;
    const bool gguf = !strcmp(m->format, "gguf");
    const char *arch = m->arch;
    char name[160];
    if (gguf) {
        for (uint64_t i = 0; i < m->gguf.n_kv; i++)
            if (!kvq_gguf_str_eq(m->gguf.kv[i].key, "general.file_type") &&
                !kvq_gguf_str_eq(m->gguf.kv[i].key, "general.name"))
                kvq_gguf_copy_kv(w, &m->gguf.kv[i]);
    } else {
        kvq_gguf_set_str(w, "general.architecture", arch);
        kvq_gguf_set_u32(w, "general.alignment", 32);
        put_hparams(w, m, arch);
        /* GGUF's llama rotates adjacent pairs, qwen2 halves */
        if (h->rope_neox != !strcmp(arch, "qwen2")) kvq_gguf_set_bool(w, "kvq.rope.halves", h->rope_neox);
    }
    if (p->std_type)
        snprintf(name, sizeof name, "%s (%s %s, kvq)", m->name[0] ? m->name : "model", p->method, p->std_type);
    else
        snprintf(name, sizeof name, "%s (%s %d-bit, kvq)", m->name[0] ? m->name : "model", p->method, p->bits);
    kvq_gguf_set_str(w, "general.name", name);
    kvq_gguf_set_str(w, "kvq.weights.method", p->method);
    if (!p->std_type) {
        kvq_gguf_set_u32(w, "kvq.weights.bits", (uint32_t)p->bits);
        kvq_gguf_set_u32(w, "kvq.weights.group", (uint32_t)p->group);
    }

    /* The head (and the embedding tied to it) keeps its type, as in the
     * paper; into a standard type it is rounded to that type as `--type`
     * alone does, so the two files differ only in the layers' codes. */
    const bool tied = m->output.data == m->tok_embd.data;
    const int std_type = p->std_type ? kvq_type_parse(p->std_type) : -1;
    void *head = NULL;
    kvq_tensor ht = m->output;
    if (std_type >= 0 && (int)ht.type != std_type && kvq_requant_fits((kvq_type)std_type, ht.ne[0])) {
        const size_t rb = kvq_row_size(std_type, ht.ne[0]);
        head = malloc(rb * (size_t)ht.ne[1]);
        if (!head || kvq_requant_rows(ht.data, ht.type, ht.row_bytes, ht.ne[0], ht.ne[1], (kvq_type)std_type, head,
                                      p->n_threads)) {
            free(head);
            kvq_gguf_writer_free(w);
            return kvq_err(lg, KVQ_ERR_NOMEM, "quantize: cannot round the output head to %s", p->std_type);
        }
        ht.type = (kvq_type)std_type;
        ht.data = head;
        ht.row_bytes = rb;
    }
    put_tensor(w, "token_embd.weight", tied ? &ht : &m->tok_embd, false);
    put_tensor(w, "output_norm.weight", &m->out_norm, true);
    if (!tied) put_tensor(w, "output.weight", &ht, false);
    if (!gguf && h->rope_freq_factors) {
        const int64_t ne[1] = {h->n_rot / 2};
        kvq_gguf_add_tensor(w, "rope_freqs.weight", KVQ_TYPE_F32, 1, ne, h->rope_freq_factors,
                            (uint64_t)(h->n_rot / 2) * 4);
    }
    for (int l = 0; l < h->n_layer && !st; l++) {
        const kvq_layer_weights *L = &m->layers[l];
        const kvq_tensor *vec[5] = {&L->attn_norm, &L->ffn_norm, &L->bq, &L->bk, &L->bv};
        const char *vname[5] = {"attn_norm.weight", "ffn_norm.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias"};
        for (int i = 0; i < 5; i++) {
            if (!vec[i]->data) continue;
            snprintf(name, sizeof name, "blk.%d.%s", l, vname[i]);
            put_tensor(w, name, vec[i], true);
        }
        for (int i = 0; i < N_MAT && !st; i++) {
            const kvq_tensor *t = layer_mat(L, i);
            const qmat *qm = &q[l][i];
            const int64_t cols = t->ne[0], rows = t->ne[1];
            const int64_t ne[2] = {cols, rows};
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, MAT_NAME[i]);
            if (qm->type < 0) {
                kvq_gguf_add_tensor(w, name, (uint32_t)t->type, 2, ne, t->data, t->row_bytes * (uint64_t)rows);
                continue;
            }
            if (!qm->dm) { /* a standard block type */
                kvq_gguf_add_tensor(w, name, (uint32_t)qm->type, 2, ne, qm->codes, qm->bytes);
                continue;
            }
            kvq_gguf_add_tensor(w, name, (uint32_t)qm->type, 2, ne, qm->codes,
                                (uint64_t)cols * (uint64_t)rows * (uint64_t)p->bits / 8);
            char cn[192];
            const int64_t nb[1] = {qm->ng}, nd[2] = {2 * (int64_t)qm->ng, rows};
            snprintf(cn, sizeof cn, "%s.bits", name);
            kvq_gguf_add_tensor(w, cn, KVQ_TYPE_I8, 1, nb, qm->bits, (uint64_t)qm->ng);
            snprintf(cn, sizeof cn, "%s.dm", name);
            kvq_gguf_add_tensor(w, cn, KVQ_TYPE_F16, 2, nd, qm->dm, (uint64_t)qm->ng * 4 * (uint64_t)rows);
        }
    }
    if (!st) st = kvq_gguf_write(w, out, lg);
    kvq_gguf_writer_free(w);
    free(head);
    return st;
}

static size_t layer_calib_bytes(const kvq_hparams *h) {
    const size_t E = (size_t)h->n_embd, Q = (size_t)h->n_head * h->head_dim, F = (size_t)h->n_ff;
    return (2 * E * E + Q * Q + F * F + N_SAMPLE * (2 * E + Q + F)) * sizeof(float);
}

static kvq_status run(const kvq_wquant_params *p, const char *out, kvq_wquant_report *R, const kvq_logger *lg) {
    const kvq_model *m = p->model;
    const kvq_hparams *h = &m->hp;
    const bool calib = p->n_tokens > 0;
    const int L = h->n_layer;
    if (L > KVQ_WQUANT_MAX_LAYERS) return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "quantize: more than %d layers", KVQ_WQUANT_MAX_LAYERS);
    qmat (*q)[N_MAT] = calloc((size_t)L, sizeof *q);
    calib_in (*in)[4] = NULL;
    kvq_status st = q ? KVQ_OK : KVQ_ERR_NOMEM;
    /* layers per calibration pass: as many as 4 GiB of Hessians hold */
    const size_t per = layer_calib_bytes(h);
    int chunk = (int)((4ull << 30) / per);
    if (chunk < 1) chunk = 1;
    if (chunk > L) chunk = L;
    if (!st && calib) {
        in = calloc((size_t)chunk, sizeof *in);
        if (!in) st = KVQ_ERR_NOMEM;
    }
    R->n_layer = L;
    for (int l0 = 0; l0 < L && !st; l0 += chunk) {
        const int l1 = l0 + chunk < L ? l0 + chunk : L;
        if (calib) {
            const int cols[4] = {h->n_embd, h->n_head * h->head_dim, h->n_embd, h->n_ff};
            for (int l = l0; l < l1 && !st; l++)
                for (int k = 0; k < 4; k++) {
                    calib_in *ci = &in[l - l0][k];
                    ci->cols = cols[k];
                    ci->H = calloc((size_t)cols[k] * cols[k], sizeof(float));
                    ci->X = malloc((size_t)N_SAMPLE * cols[k] * sizeof(float));
                    if (!ci->H || !ci->X) st = kvq_err(lg, KVQ_ERR_NOMEM, "quantize: out of memory for Hessians");
                }
            collect col = {l0, l1, p->n_tokens / N_SAMPLE > 1 ? p->n_tokens / N_SAMPLE : 1, in};
            kvq_ctx_params cp = kvq_ctx_default_params();
            cp.n_ctx = p->ctx;
            cp.n_threads = p->n_threads;
            cp.kv_spec = "f32";
            cp.log = p->log;
            cp.log_user = p->log_user;
            kvq_ctx *c = NULL;
            if (!st) st = kvq_ctx_new(m, &cp, &c);
            if (!st) kvq_ctx_set_linear_tap(c, tap, &col);
            for (int t0 = 0; t0 < p->n_tokens && !st; t0 += p->ctx) {
                const int n = p->n_tokens - t0 < p->ctx ? p->n_tokens - t0 : p->ctx;
                kvq_ctx_truncate(c, 0);
                st = kvq_eval(c, p->tokens + t0, n, false, NULL);
                if (p->progress) p->progress(p->progress_user, 0, t0 + n, p->n_tokens, "calibration");
            }
            kvq_ctx_free(c);
            /* the mean of x x^T, symmetric */
            for (int l = l0; l < l1 && !st; l++)
                for (int k = 0; k < 4; k++) {
                    calib_in *ci = &in[l - l0][k];
                    const int C = ci->cols;
                    const float s = ci->seen ? 1.0f / (float)ci->seen : 0.0f;
                    for (int i = 0; i < C; i++)
                        for (int j = i; j < C; j++) ci->H[(size_t)j * C + i] = ci->H[(size_t)i * C + j] *= s;
                }
        }
        /* the forward pass keeps OpenBLAS single-threaded (kvq threads its
         * products itself); the factorizations here are BLAS's to thread */
        openblas_set_num_threads(p->n_threads);
        for (int l = l0; l < l1 && !st; l++)
            for (int i = 0; i < N_MAT && !st; i++) {
                const calib_in *ci = calib ? &in[l - l0][MAT_INPUT[i]] : NULL;
                kvq_wquant_layer *rep = &R->mat[l][i];
                *rep = (kvq_wquant_layer){.rel_err = -1, .kl = -1};
                st = quantize_one(p, layer_mat(&m->layers[l], i), ci, &q[l][i], rep, lg);
                rep->kept = q[l][i].type < 0;
                if (p->progress) p->progress(p->progress_user, 1, l * N_MAT + i + 1, L * N_MAT, MAT_NAME[i]);
            }
        openblas_set_num_threads(1);
        for (int l = l0; calib && l < l1; l++)
            for (int k = 0; k < 4; k++) {
                free(in[l - l0][k].H);
                free(in[l - l0][k].X);
                in[l - l0][k] = (calib_in){0};
            }
    }
    if (!st) {
        for (int l = 0; l < L; l++)
            for (int i = 0; i < N_MAT; i++) {
                const kvq_tensor *t = layer_mat(&m->layers[l], i);
                const uint64_t in_bytes = t->row_bytes * (uint64_t)t->ne[1], values = (uint64_t)(t->ne[0] * t->ne[1]);
                const bool kept = q[l][i].type < 0;
                R->bytes_in += in_bytes;
                R->bytes_out += kept ? in_bytes : q[l][i].bytes;
                R->values += values;
                R->quant_values += kept ? 0 : values;
                R->quant_bytes += kept ? 0 : q[l][i].bytes;
            }
        st = write_model(p, m, q, out, lg);
    }
    for (int l = 0; q && l < L; l++)
        for (int i = 0; i < N_MAT; i++) {
            free(q[l][i].bits);
            free(q[l][i].codes);
            free(q[l][i].dm);
        }
    free(q);
    free(in);
    return st;
}

kvq_status kvq_wquantize(const kvq_wquant_params *p, const char *out_path, kvq_wquant_report *r) {
    kvq_logger lgr = {p->log, p->log_user}, *lg = &lgr;
    memset(r, 0, sizeof *r);
    if (!p->model || !p->model->layers) return kvq_err(lg, KVQ_ERR_ARG, "quantize: no model weights");
    if (!p->method || (strcmp(p->method, "rtn") && strcmp(p->method, "gptq") && strcmp(p->method, "slim")))
        return kvq_err(lg, KVQ_ERR_ARG, "quantize: method '%s' is not one of rtn, gptq, slim",
                       p->method ? p->method : "");
    if (p->std_type) {
        const int t = kvq_type_parse(p->std_type);
        if (!kvq_wq_std_block(t))
            return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "quantize: --method %s writes q4_0, q4_1, q2_K, q3_K, q4_K or q5_K blocks (not '%s')",
                           p->method, p->std_type);
        if (!strcmp(p->method, "slim"))
            return kvq_err(lg, KVQ_ERR_ARG, "quantize: SliM-LLM's mixed widths need its own type (--bits N)");
        if (strcmp(p->model->format, "gguf")) /* written as the slim types are: kvq's metadata, no tokenizer */
            kvq_logf(lg, KVQ_LOG_WARN, "quantize: the input is not a GGUF file, so the output has no tokenizer and "
                                       "kvq's own rotary key: load it with kvq run -m MODEL --weights OUT.gguf");
    } else if (p->bits < 2 || p->bits > 4) {
        return kvq_err(lg, KVQ_ERR_ARG, "quantize: --bits %d (2, 3, 4)", p->bits);
    }
    if (p->group < 32 || p->group % 32 || p->group > 2048)
        return kvq_err(lg, KVQ_ERR_ARG, "quantize: --group %d is not a multiple of 32 in 32..2048", p->group);
    if (strcmp(p->method, "rtn") && p->n_tokens < 2 * N_SAMPLE)
        return kvq_err(lg, KVQ_ERR_ARG, "quantize: %s needs calibration text of at least %d tokens (got %d)", p->method,
                       2 * N_SAMPLE, p->n_tokens);
    if (p->n_tokens > 0 && (p->ctx < 16 || !p->tokens)) return kvq_err(lg, KVQ_ERR_ARG, "quantize: calibration window %d", p->ctx);
    /* a quantized source carries its rounding error into the result */
    const kvq_tensor *w0 = &p->model->layers[0].wq;
    if (w0->type != KVQ_TYPE_F32 && w0->type != KVQ_TYPE_F16 && w0->type != KVQ_TYPE_BF16)
        kvq_logf(lg, KVQ_LOG_WARN, "quantize: the source weights are %s, whose rounding error carries into the "
                                   "result; an F32, F16 or BF16 source is better", kvq_type_name(w0->type));
    return run(p, out_path, r, lg);
}
