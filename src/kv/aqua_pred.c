/* AQUA-KV predictor files (aqua_pred.h). */
#include "aqua_pred.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../io/gguf_write.h"
#include "../kernels/types.h"
#include "../quant/resq.h"

static kvq_status tensor(const kvq_aqua_pred *p, const char *name, int64_t ne0, int64_t ne1, const float **out,
                         char *err, size_t cap) {
    const kvq_gguf_tensor *t = kvq_gguf_tensor_find(&p->g, name);
    if (!t) {
        snprintf(err, cap, "predictor file: tensor '%s' is missing", name);
        return KVQ_ERR_FORMAT;
    }
    const int64_t n1 = t->n_dims > 1 ? t->ne[1] : 1;
    if (t->type != KVQ_TYPE_F32 || t->ne[0] != ne0 || n1 != ne1 || t->n_dims > 2) {
        snprintf(err, cap, "predictor file: tensor '%s' is %s [%lld x %lld], expected f32 [%lld x %lld]", name,
                 kvq_type_name((int)t->type) ? kvq_type_name((int)t->type) : "?", (long long)t->ne[0], (long long)n1,
                 (long long)ne0, (long long)ne1);
        return KVQ_ERR_FORMAT;
    }
    const float *x = t->data;
    for (int64_t i = 0; i < ne0 * ne1; i++) {
        float v;
        memcpy(&v, x + i, 4); /* GGUF aligns tensors to 32 bytes; memcpy keeps this safe regardless */
        if (!isfinite(v)) {
            snprintf(err, cap, "predictor file: tensor '%s' holds %s at element %lld", name, isnan(v) ? "NaN" : "infinity",
                     (long long)i);
            return KVQ_ERR_FORMAT;
        }
    }
    *out = x;
    return KVQ_OK;
}

kvq_status kvq_aqua_pred_load(const char *path, int n_layer, int C, uint64_t fingerprint, kvq_aqua_pred *p,
                              const kvq_logger *lg, char *err, size_t cap) {
    memset(p, 0, sizeof *p);
    kvq_status st = kvq_gguf_open(path, &p->g, lg);
    if (st) {
        snprintf(err, cap, "cannot read predictor file '%s' (not a GGUF file, or truncated)", path);
        return st;
    }
    uint32_t nl = 0, c = 0, bits = 0, toks = 0;
    kvq_gguf_str fp, q;
    if (kvq_gguf_get_u32(&p->g, "aqua.n_layer", true, &nl, lg) || kvq_gguf_get_u32(&p->g, "aqua.n_embd_kv", true, &c, lg) ||
        kvq_gguf_get_u32(&p->g, "aqua.bits", true, &bits, lg) || kvq_gguf_get_str(&p->g, "aqua.fingerprint", true, &fp, lg) ||
        kvq_gguf_get_str(&p->g, "aqua.quantizer", true, &q, lg)) {
        snprintf(err, cap, "'%s' is not an AQUA-KV predictor file (kvq calibrate aqua writes them)", path);
        st = KVQ_ERR_FORMAT;
        goto fail;
    }
    kvq_gguf_get_u32(&p->g, "aqua.calib_tokens", false, &toks, lg);
    char fps[32];
    snprintf(fps, sizeof fps, "%.*s", (int)(fp.n < 31 ? fp.n : 31), fp.s);
    if (fingerprint && strtoull(fps, NULL, 16) != fingerprint) {
        snprintf(err, cap, "predictor file '%s' was calibrated for another model (fingerprint %s, this model %016llx)",
                 path, fps, (unsigned long long)fingerprint);
        st = KVQ_ERR_ARG;
        goto fail;
    }
    if ((int)nl != n_layer || (int)c != C) {
        snprintf(err, cap, "predictor file '%s' is for %u layers of KV width %u; this model has %d of %d", path, nl, c,
                 n_layer, C);
        st = KVQ_ERR_ARG;
        goto fail;
    }
    p->n_layer = n_layer;
    p->C = C;
    p->bits = (int)bits;
    p->kind = kvq_gguf_str_eq(q, "uniform") ? KVQ_RESQ_UNIFORM : KVQ_RESQ_HIGGS;
    p->calib_tokens = toks;
    p->A = calloc((size_t)n_layer, sizeof *p->A);
    p->a = calloc((size_t)n_layer, sizeof *p->a);
    p->B = calloc((size_t)n_layer, sizeof *p->B);
    p->b = calloc((size_t)n_layer, sizeof *p->b);
    if (!p->A || !p->a || !p->B || !p->b) { st = KVQ_ERR_NOMEM; goto fail; }
    for (int l = 1; l < n_layer && !st; l++) {
        char nm[96];
        snprintf(nm, sizeof nm, "aqua.blk.%d.k.weight", l);
        st = tensor(p, nm, C, C, &p->A[l], err, cap);
        snprintf(nm, sizeof nm, "aqua.blk.%d.k.bias", l);
        if (!st) st = tensor(p, nm, C, 1, &p->a[l], err, cap);
        snprintf(nm, sizeof nm, "aqua.blk.%d.v.weight", l);
        if (!st) st = tensor(p, nm, 2 * (int64_t)C, C, &p->B[l], err, cap);
        snprintf(nm, sizeof nm, "aqua.blk.%d.v.bias", l);
        if (!st) st = tensor(p, nm, C, 1, &p->b[l], err, cap);
    }
    if (st) goto fail;
    p->n_params = (uint64_t)(n_layer - 1) * (3ull * C * C + 2ull * C);
    for (int k = 0; k < 2; k++) { /* held-out relMSE per layer, for reports */
        uint64_t n;
        const uint8_t *first;
        if (!kvq_gguf_get_arr(&p->g, k ? "aqua.relmse_v" : "aqua.relmse_k", KVQ_GGUF_F32, false, &n, &first, lg) &&
            n == (uint64_t)n_layer) {
            float *r = malloc((size_t)n_layer * sizeof(float));
            if (r) memcpy(r, first, (size_t)n_layer * sizeof(float));
            if (k) p->relmse_v = r;
            else p->relmse_k = r;
        }
    }
    return KVQ_OK;
fail:
    kvq_aqua_pred_free(p);
    return st;
}

void kvq_aqua_pred_free(kvq_aqua_pred *p) {
    free(p->A);
    free(p->a);
    free(p->B);
    free(p->b);
    free(p->relmse_k);
    free(p->relmse_v);
    kvq_gguf_close(&p->g);
    memset(p, 0, sizeof *p);
}

kvq_status kvq_aqua_pred_write(const char *path, int n_layer, int C, uint64_t fingerprint, int bits, int kind,
                               uint32_t calib_tokens, float *const *A, float *const *a, float *const *B,
                               float *const *b, const float *relmse_k, const float *relmse_v, const kvq_logger *lg) {
    kvq_gguf_writer *w = kvq_gguf_writer_new();
    if (!w) return KVQ_ERR_NOMEM;
    char fp[32];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)fingerprint);
    kvq_gguf_set_str(w, "general.architecture", "aqua-kv-predictors");
    kvq_gguf_set_str(w, "aqua.fingerprint", fp);
    kvq_gguf_set_u32(w, "aqua.n_layer", (uint32_t)n_layer);
    kvq_gguf_set_u32(w, "aqua.n_embd_kv", (uint32_t)C);
    kvq_gguf_set_u32(w, "aqua.bits", (uint32_t)bits);
    kvq_gguf_set_str(w, "aqua.quantizer", kind == KVQ_RESQ_UNIFORM ? "uniform" : "higgs");
    kvq_gguf_set_u32(w, "aqua.calib_tokens", calib_tokens);
    if (relmse_k) kvq_gguf_set_arr(w, "aqua.relmse_k", KVQ_GGUF_F32, relmse_k, (uint64_t)n_layer);
    if (relmse_v) kvq_gguf_set_arr(w, "aqua.relmse_v", KVQ_GGUF_F32, relmse_v, (uint64_t)n_layer);
    char names[4][96];
    for (int l = 1; l < n_layer; l++) {
        snprintf(names[0], sizeof names[0], "aqua.blk.%d.k.weight", l);
        snprintf(names[1], sizeof names[1], "aqua.blk.%d.k.bias", l);
        snprintf(names[2], sizeof names[2], "aqua.blk.%d.v.weight", l);
        snprintf(names[3], sizeof names[3], "aqua.blk.%d.v.bias", l);
        const int64_t ka[2] = {C, C}, kb[1] = {C}, va[2] = {2 * (int64_t)C, C};
        kvq_gguf_add_tensor(w, names[0], KVQ_TYPE_F32, 2, ka, A[l], (uint64_t)C * C * 4);
        kvq_gguf_add_tensor(w, names[1], KVQ_TYPE_F32, 1, kb, a[l], (uint64_t)C * 4);
        kvq_gguf_add_tensor(w, names[2], KVQ_TYPE_F32, 2, va, B[l], (uint64_t)2 * C * C * 4);
        kvq_gguf_add_tensor(w, names[3], KVQ_TYPE_F32, 1, kb, b[l], (uint64_t)C * 4);
    }
    kvq_status st = kvq_gguf_write(w, path, lg);
    kvq_gguf_writer_free(w);
    return st;
}
