/* AQUA-KV calibration (kvq calibrate aqua): collects every layer's keys
 * (before RoPE) and values on calibration text through the context's KV
 * tap, then fits the predictors layer by layer in closed form (ridge
 * regression: Cholesky solve of the damped normal equations with LAPACK),
 * each on the *reconstructions* of the layer below (predict, quantize the
 * residual, dequantize) so the fit sees what inference will. The last
 * eighth of the tokens is held out for the relMSE and explained variance
 * reported per layer. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/log.h"
#include "../kv/aqua_pred.h"
#include "../quant/resq.h"
#include "aqua_calib.h"

typedef struct collect {
    int C, n_layer, pos0, cap;
    float *K, *V; /* [n_layer][cap][C] */
} collect;

/* Called per layer for each forward chunk (a window may be several): the
 * rows go at pos0, which moves on once the last layer has them. */
static void tap(void *user, int layer, const float *k, const float *v, int n, int row) {
    collect *c = user;
    if (layer >= c->n_layer || row != c->C) return;
    for (int i = 0; i < n && c->pos0 + i < c->cap; i++) {
        memcpy(c->K + ((size_t)layer * c->cap + c->pos0 + i) * c->C, k + (size_t)i * row, (size_t)row * sizeof(float));
        memcpy(c->V + ((size_t)layer * c->cap + c->pos0 + i) * c->C, v + (size_t)i * row, (size_t)row * sizeof(float));
    }
    if (layer == c->n_layer - 1) c->pos0 += n;
}

/* Ridge regression: W [(d) x C] minimizing ||[X 1] W - Y||^2 + lambda ||W||^2
 * over the first n rows, lambda = 1e-3 * mean(diag(X'X)), by LAPACK's
 * Cholesky solve (dposv). X [n][dx], Y [n][C]. */
kvq_status kvq_ridge_fit(const float *X, int dx, const float *Y, int C, int n, double *W) {
    const int d = dx + 1;
    double *Xd = malloc((size_t)n * d * sizeof(double)), *G = calloc((size_t)d * d, sizeof(double));
    double *Yd = malloc((size_t)n * C * sizeof(double));
    if (!Xd || !G || !Yd) { free(Xd); free(G); free(Yd); return KVQ_ERR_NOMEM; }
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < dx; j++) Xd[(size_t)i * d + j] = X[(size_t)i * dx + j];
        Xd[(size_t)i * d + dx] = 1.0;
        for (int j = 0; j < C; j++) Yd[(size_t)i * C + j] = Y[(size_t)i * C + j];
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0, Xd, d, 0.0, G, d);
    double tr = 0;
    for (int j = 0; j < d; j++) tr += G[(size_t)j * d + j];
    const double lambda = 1e-3 * tr / d + 1e-12;
    for (int j = 0; j < d; j++) G[(size_t)j * d + j] += lambda;
    /* right-hand side X'Y */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, C, n, 1.0, Xd, d, Yd, C, 0.0, W, C);
    const lapack_int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', d, C, G, d, W, C);
    free(Xd);
    free(G);
    free(Yd);
    return info == 0 ? KVQ_OK : KVQ_ERR_INTERNAL;
}

/* P [n][C] = [X 1] W over n rows. */
static void predict(const float *X, int dx, const double *W, int C, int n, float *P) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int o = 0; o < C; o++) {
            double s = W[(size_t)dx * C + o];
            for (int j = 0; j < dx; j++) s += (double)X[(size_t)i * dx + j] * W[(size_t)j * C + o];
            P[(size_t)i * C + o] = (float)s;
        }
}

/* rec = pred + D(Q(y - pred)) for n rows. */
static void reconstruct(const kvq_resq *q, const float *y, const float *pred, int n, float *rec) {
    const int C = q->C;
#pragma omp parallel
    {
        float r[4096];
        uint8_t codes[4096];
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < C; j++) r[j] = y[(size_t)i * C + j] - (pred ? pred[(size_t)i * C + j] : 0);
            kvq_resq_quant(q, r, codes);
            kvq_resq_dequant(q, codes, r);
            for (int j = 0; j < C; j++) rec[(size_t)i * C + j] = (pred ? pred[(size_t)i * C + j] : 0) + r[j];
        }
    }
}

/* relMSE and explained variance of pred against y over rows [r0, r1). */
static void scores(const float *y, const float *pred, int C, int r0, int r1, float *relmse, float *ev) {
    double e = 0, z = 0, mean_var = 0;
    double *mu = calloc((size_t)C, sizeof(double));
    for (int i = r0; i < r1; i++)
        for (int j = 0; j < C; j++) mu[j] += y[(size_t)i * C + j];
    for (int j = 0; j < C; j++) mu[j] /= (r1 - r0);
    for (int i = r0; i < r1; i++)
        for (int j = 0; j < C; j++) {
            const double t = y[(size_t)i * C + j], d = t - pred[(size_t)i * C + j];
            e += d * d;
            z += t * t;
            mean_var += (t - mu[j]) * (t - mu[j]);
        }
    free(mu);
    *relmse = z > 0 ? (float)(e / z) : 0;
    *ev = mean_var > 0 ? (float)(1 - e / mean_var) : 0;
}

static kvq_status calib(const kvq_aqua_calib_params *p, const char *out_path, kvq_aqua_calib_report *R,
                        const kvq_logger *lg) {
    kvq_model_info info;
    kvq_model_get_info(p->model, &info);
    const int C = info.n_head_kv * info.head_dim, L = info.n_layer, N = p->n_tokens;
    const int kind = p->quantizer && !strcmp(p->quantizer, "uniform") ? KVQ_RESQ_UNIFORM : KVQ_RESQ_HIGGS;
    kvq_resq q4, qr;
    kvq_status st;
    if ((st = kvq_resq_init(&q4, kind, 4, C)) || (st = kvq_resq_init(&qr, kind, p->bits, C)))
        return kvq_err(lg, st, "calibrate: KV width %d has no power-of-two group of 8 or more for the quantizer", C);
    if (C > 4096) return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "calibrate: KV width %d is over 4096", C);
    /* 1. keys and values of every layer */
    collect col = {C, L, 0, N, malloc((size_t)L * N * C * sizeof(float)), malloc((size_t)L * N * C * sizeof(float))};
    if (!col.K || !col.V) { free(col.K); free(col.V); return kvq_err(lg, KVQ_ERR_NOMEM, "calibrate: out of memory for %d tokens", N); }
    kvq_ctx_params cp = kvq_ctx_default_params();
    cp.n_ctx = p->ctx;
    cp.n_threads = p->n_threads;
    cp.kv_spec = "f16";
    cp.log = p->log;
    cp.log_user = p->log_user;
    kvq_ctx *c = NULL;
    if ((st = kvq_ctx_new(p->model, &cp, &c))) goto out;
    kvq_ctx_set_kv_tap(c, tap, &col);
    for (int t0 = 0; t0 < N && !st; t0 += p->ctx) {
        const int m = N - t0 < p->ctx ? N - t0 : p->ctx;
        kvq_ctx_truncate(c, 0);
        /* the windows are cut from one token stream; each is evaluated from position 0 */
        st = kvq_eval(c, p->tokens + t0, m, false, NULL);
        if (p->progress) p->progress(p->progress_user, 1, t0 + m, N, "collecting keys and values");
    }
    kvq_ctx_free(c);
    if (st) goto out;
    /* 2. the chain, layer by layer */
    const int n_ho = N / 8, n_tr = N - n_ho;
    float *kprev = malloc((size_t)N * C * sizeof(float)), *vprev = malloc((size_t)N * C * sizeof(float));
    float *pk = malloc((size_t)N * C * sizeof(float)), *pv = malloc((size_t)N * C * sizeof(float));
    float *kh = malloc((size_t)N * C * sizeof(float)), *vh = malloc((size_t)N * C * sizeof(float));
    float *xv = malloc((size_t)N * 2 * C * sizeof(float));
    double *Wk = malloc((size_t)(C + 1) * C * sizeof(double)), *Wv = malloc((size_t)(2 * C + 1) * C * sizeof(double));
    float **A = calloc((size_t)L, sizeof *A), **a = calloc((size_t)L, sizeof *a), **B = calloc((size_t)L, sizeof *B),
          **b = calloc((size_t)L, sizeof *b);
    if (!kprev || !vprev || !pk || !pv || !kh || !vh || !xv || !Wk || !Wv || !A || !a || !B || !b) st = KVQ_ERR_NOMEM;
    if (!st) {
        reconstruct(&q4, col.K, NULL, N, kprev); /* layer 0 has no predictor: 4 bits */
        reconstruct(&q4, col.V, NULL, N, vprev);
        R->relmse_k[0] = R->relmse_v[0] = 1;
        R->ev_k[0] = R->ev_v[0] = R->ev_v_keys[0] = 0;
    }
    for (int l = 1; l < L && !st; l++) {
        const float *K = col.K + (size_t)l * N * C, *V = col.V + (size_t)l * N * C;
        if ((st = kvq_ridge_fit(kprev, C, K, C, n_tr, Wk))) break;
        predict(kprev, C, Wk, C, N, pk);
        scores(K, pk, C, n_tr, N, &R->relmse_k[l], &R->ev_k[l]);
        reconstruct(&qr, K, pk, N, kh);
        /* the paper's comparison: values from this layer's keys alone */
        if ((st = kvq_ridge_fit(kh, C, V, C, n_tr, Wv))) break;
        predict(kh, C, Wv, C, N, pv);
        float rm;
        scores(V, pv, C, n_tr, N, &rm, &R->ev_v_keys[l]);
        for (int i = 0; i < N; i++) {
            memcpy(xv + (size_t)i * 2 * C, kh + (size_t)i * C, (size_t)C * sizeof(float));
            memcpy(xv + (size_t)i * 2 * C + C, vprev + (size_t)i * C, (size_t)C * sizeof(float));
        }
        if ((st = kvq_ridge_fit(xv, 2 * C, V, C, n_tr, Wv))) break;
        predict(xv, 2 * C, Wv, C, N, pv);
        scores(V, pv, C, n_tr, N, &R->relmse_v[l], &R->ev_v[l]);
        reconstruct(&qr, V, pv, N, vh);
        /* stored as [out][in] rows and a bias */
        A[l] = malloc((size_t)C * C * sizeof(float));
        a[l] = malloc((size_t)C * sizeof(float));
        B[l] = malloc((size_t)C * 2 * C * sizeof(float));
        b[l] = malloc((size_t)C * sizeof(float));
        if (!A[l] || !a[l] || !B[l] || !b[l]) { st = KVQ_ERR_NOMEM; break; }
        for (int o = 0; o < C; o++) {
            for (int i = 0; i < C; i++) A[l][(size_t)o * C + i] = (float)Wk[(size_t)i * C + o];
            a[l][o] = (float)Wk[(size_t)C * C + o];
            for (int i = 0; i < 2 * C; i++) B[l][(size_t)o * 2 * C + i] = (float)Wv[(size_t)i * C + o];
            b[l][o] = (float)Wv[(size_t)2 * C * C + o];
        }
        memcpy(kprev, kh, (size_t)N * C * sizeof(float));
        memcpy(vprev, vh, (size_t)N * C * sizeof(float));
        if (p->progress) {
            char msg[160];
            snprintf(msg, sizeof msg, "layer %d: held-out relMSE keys %.3f values %.3f", l, R->relmse_k[l], R->relmse_v[l]);
            p->progress(p->progress_user, 2, l, L - 1, msg);
        }
    }
    if (st == KVQ_ERR_INTERNAL) kvq_err(lg, st, "calibrate: the normal equations are not positive definite");
    if (!st)
        st = kvq_aqua_pred_write(out_path, L, C, kvq_model_fingerprint(p->model), p->bits, kind, (uint32_t)n_tr,
                                 A, a, B, b, R->relmse_k, R->relmse_v, lg);
    for (int l = 0; A && l < L; l++) { free(A[l]); free(a[l]); free(B[l]); free(b[l]); }
    free(A); free(a); free(B); free(b);
    free(kprev); free(vprev); free(pk); free(pv); free(kh); free(vh); free(xv); free(Wk); free(Wv);
    R->n_layer = L;
    R->n_train = n_tr;
    R->n_heldout = n_ho;
out:
    free(col.K);
    free(col.V);
    return st;
}

kvq_status kvq_aqua_calibrate(const kvq_aqua_calib_params *p, const char *out_path, kvq_aqua_calib_report *R) {
    kvq_logger lg = {p->log, p->log_user};
    memset(R, 0, sizeof *R);
    if (!p->model || !p->tokens || !out_path) return kvq_err(&lg, KVQ_ERR_ARG, "calibrate: no model, tokens or output");
    kvq_model_info info;
    kvq_model_get_info(p->model, &info);
    if (info.n_layer < 2 || info.n_layer > KVQ_AQUA_MAX_LAYERS)
        return kvq_err(&lg, KVQ_ERR_UNSUPPORTED, "calibrate: %d layers (AQUA-KV needs 2 to %d)", info.n_layer,
                       KVQ_AQUA_MAX_LAYERS);
    if (p->bits < 2 || p->bits > 4) return kvq_err(&lg, KVQ_ERR_ARG, "calibrate: bits %d is not 2, 3 or 4", p->bits);
    if (p->quantizer && strcmp(p->quantizer, "higgs") && strcmp(p->quantizer, "uniform"))
        return kvq_err(&lg, KVQ_ERR_ARG, "calibrate: quantizer '%s' is not higgs or uniform", p->quantizer);
    const int C = info.n_head_kv * info.head_dim;
    /* enough rows for (2C+1)-wide normal equations, and a held-out eighth */
    const int need = 8 * (2 * C + 1) > 1024 ? 8 * (2 * C + 1) : 1024;
    if (p->n_tokens < need)
        return kvq_err(&lg, KVQ_ERR_ARG,
                       "calibrate: %d calibration tokens are too few for a KV width of %d (give at least %d)",
                       p->n_tokens, C, need);
    if (p->ctx < 16) return kvq_err(&lg, KVQ_ERR_ARG, "calibrate: --ctx %d is too short", p->ctx);
    return calib(p, out_path, R, &lg);
}
