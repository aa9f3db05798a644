/* RTN, GPTQ and SliM-LLM for one linear layer (see gptq.h). */
#include "gptq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "../kernels/quant_ref.h"
#include "../kernels/slim.h"
#include "../kernels/types.h"

kvq_wq_params kvq_wq_default_params(void) {
    return (kvq_wq_params){.method = KVQ_WQ_SLIM, .bits = 2, .group = 128, .damp = 0.01f, .sqc_lambda = 0.1f,
                           .sqc_steps = 51, .sba_candidates = 16, .n_threads = 1};
}

static float f16r(float x) { return kvq_f16_to_f32(kvq_f32_to_f16(x)); }

void kvq_wq_fit(const float *w, int n, int b, float tau, float *d, float *m) {
    if (b == 1) { /* sign(w - mu) * mean|w - mu| + mu */
        double mu = 0, a = 0;
        for (int i = 0; i < n; i++) mu += w[i];
        mu /= n;
        for (int i = 0; i < n; i++) a += fabs(w[i] - mu);
        a /= n;
        *d = f16r((float)(2 * a));
        *m = f16r((float)(mu - a));
        return;
    }
    float lo = w[0], hi = w[0];
    for (int i = 1; i < n; i++) {
        lo = fminf(lo, w[i]);
        hi = fmaxf(hi, w[i]);
    }
    *d = f16r(tau * (hi - lo) / (float)((1 << b) - 1));
    *m = f16r(tau * lo);
}

/* SQC: the tau whose fit minimizes salient and ordinary errors, each
 * averaged over its own weights. sal: per-weight salience of the group. */
static void fit_sqc(const float *w, const float *sal, int n, int b, float lambda, int steps, float *d, float *m) {
    kvq_wq_fit(w, n, b, 1.0f, d, m);
    if (b == 1 || steps < 2) return;
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += sal[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (sal[i] - mean) * (sal[i] - mean);
    const double thr = mean + 3 * sqrt(var / n);
    double best = INFINITY;
    for (int s = 0; s < steps; s++) {
        const float tau = 1.0f - lambda + 2.0f * lambda * (float)s / (float)(steps - 1);
        float dd, mm;
        kvq_wq_fit(w, n, b, tau, &dd, &mm);
        double es = 0, eu = 0;
        int ns = 0;
        for (int i = 0; i < n; i++) {
            const float e = w[i] - (dd * (float)kvq_wq_code(w[i], dd, mm, b) + mm);
            if (sal[i] > thr) es += e * e, ns++;
            else eu += e * e;
        }
        const double loss = (ns ? es / ns : 0) + (n > ns ? eu / (n - ns) : 0);
        if (loss < best) best = loss, *d = dd, *m = mm;
    }
}

typedef struct { double s; int g; } sal_idx;
static int by_salience(const void *a, const void *b) {
    const sal_idx *x = a, *y = b;
    return x->s < y->s ? -1 : x->s > y->s ? 1 : x->g - y->g;
}

void kvq_wq_sba_bits(const double *salience, int ng, int N, int p, int8_t *bits) {
    sal_idx *o = malloc((size_t)ng * sizeof *o);
    for (int g = 0; g < ng; g++) bits[g] = (int8_t)N;
    if (!o) return;
    for (int g = 0; g < ng; g++) o[g] = (sal_idx){salience[g], g};
    qsort(o, (size_t)ng, sizeof *o, by_salience);
    for (int i = 0; i < p && i < ng / 2; i++) {
        bits[o[i].g] = (int8_t)(N - 1);
        bits[o[ng - 1 - i].g] = (int8_t)(N + 1);
    }
    free(o);
}

/* Round-to-nearest of the whole matrix at the given widths into Wq. */
static void rtn_matrix(const float *W, int64_t rows, int64_t cols, int G, const int8_t *bits, float *Wq) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < cols / G; g++) {
            const float *w = W + r * cols + g * G;
            float d, m;
            kvq_wq_fit(w, G, bits[g], 1.0f, &d, &m);
            for (int i = 0; i < G; i++) Wq[r * cols + g * G + i] = d * (float)kvq_wq_code(w[i], d, m, bits[g]) + m;
        }
}

/* Log-probabilities of softmax(X W^T) over the output features, one row per
 * calibration row (ns x rows, in out). */
static void output_logprobs(const float *X, int ns, const float *W, int64_t rows, int64_t cols, float *out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ns, (int)rows, (int)cols, 1.0f, X, (int)cols, W, (int)cols,
                0.0f, out, (int)rows);
    for (int s = 0; s < ns; s++) kvq_log_softmax(out + (size_t)s * rows, (int)rows, out + (size_t)s * rows);
}

/* KL(softmax(X W^T) || softmax(X Wq^T)), mean over the ns rows; ref holds
 * the first distribution's log-probabilities (output_logprobs of W), which
 * every candidate shares. */
static double kl_proxy(const float *X, int ns, const float *ref, const float *Wq, int64_t rows, int64_t cols,
                       float *Yq) {
    output_logprobs(X, ns, Wq, rows, cols, Yq);
    double kl = 0;
    for (int s = 0; s < ns; s++) kl += kvq_kl_div(ref + (size_t)s * rows, Yq + (size_t)s * rows, (int)rows, NULL);
    return kl / ns;
}

/* H + damping, dead columns set to 1; then U, the upper Cholesky factor of
 * H^-1 (row-major, in place). Raises the damping until H is positive definite. */
static kvq_status inverse_factor(float *Hd, const float *H, int64_t cols, float damp, const kvq_logger *lg) {
    double mean = 0;
    for (int64_t j = 0; j < cols; j++) mean += H[j * cols + j];
    mean /= (double)cols;
    if (!(mean > 0)) mean = 1;
    for (int attempt = 0; attempt < 6; attempt++, damp *= 10) {
        memcpy(Hd, H, (size_t)(cols * cols) * sizeof *Hd);
        for (int64_t j = 0; j < cols; j++) {
            if (H[j * cols + j] <= 0) Hd[j * cols + j] = 1;
            Hd[j * cols + j] += (float)(damp * mean);
        }
        /* row-major upper = column-major lower of the same symmetric matrix */
        if (LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)cols, Hd, (lapack_int)cols)) continue;
        if (LAPACKE_spotri(LAPACK_ROW_MAJOR, 'U', (lapack_int)cols, Hd, (lapack_int)cols)) continue;
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < i; j++) Hd[i * cols + j] = Hd[j * cols + i];
        if (LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)cols, Hd, (lapack_int)cols)) continue;
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < i; j++) Hd[i * cols + j] = 0;
        if (attempt) kvq_logf(lg, KVQ_LOG_INFO, "gptq: Hessian damped %.2g of its mean diagonal", damp);
        return KVQ_OK;
    }
    /* the loop multiplied once more after the last attempt */
    return kvq_err(lg, KVQ_ERR_ARG, "gptq: the Hessian is not positive definite even with damping %.2g", damp / 10);
}

/* Q4_0's own fit and rounding (ggml's reference): d = (the value of
 * largest magnitude) / -8, q = round(w / d) + 8 in 0..15; as an affine code,
 * w = d q + m with m = -8 d. */
static void fit_q4_0(const float *w, int n, float *d, float *m) {
    float amax = 0, mx = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(w[i]) > amax) amax = fabsf(w[i]), mx = w[i];
    *d = f16r(mx / -8.0f);
    *m = -8.0f * *d;
}
static int code_q4_0(float w, float d) {
    const float id = d != 0 ? 1.0f / d : 0.0f;
    const int q = (int)(w * id + 8.5f);
    return q < 0 ? 0 : q > 15 ? 15 : q;
}

/* The grid a group is rounded to: SliM-LLM's affine (d, m) per group (also
 * q4_1's), q4_0's symmetric rule, or a K-quant super-block of 256 whose
 * sub-blocks each get an affine pair: eight of 32 from 6-bit scales and
 * minimums against two fp16 factors (q4_K, q5_K), sixteen of 16 from 4-bit
 * scales and minimums (q2_K) or from signed 6-bit scales (q3_K). */
typedef enum { GRID_AFFINE, GRID_Q4_0, GRID_K } grid_kind;
typedef struct {
    grid_kind kind;
    int ktype;   /* GRID_K: KVQ_TYPE_Q2_K, Q3_K, Q4_K or Q5_K */
    void *kblk;  /* GRID_K: rows x ng blocks; the fit writes their d, dmin and scales */
} grid;

static int k_sub(int type) { return type == KVQ_TYPE_Q2_K || type == KVQ_TYPE_Q3_K ? 16 : 8; }
static int k_bits(int type) {
    return type == KVQ_TYPE_Q2_K ? 2 : type == KVQ_TYPE_Q3_K ? 3 : type == KVQ_TYPE_Q5_K ? 5 : 4;
}

/* Sub-block s of a q3_K block as an affine grid: its value is dl (u - 4)
 * for u in 0..7, dl = d * scale of either sign; a negative dl is read as
 * |dl| u' - 3 |dl| with u' = 7 - u, so codes always grow with the value. */
static void q3_K_dl(const kvq_block_q3_K *b, float dl[16]) {
    int8_t sc[16];
    kvq_q3_K_scales(b->scales, sc);
    for (int s = 0; s < 16; s++) dl[s] = kvq_f16_to_f32(b->d) * (float)sc[s];
}

/* A K-quant super-block fit on the weights as the pass left them: the
 * type's own scale search (the same code as rounding at load), kept for the
 * block; its sub-block pairs are returned as d q + m. */
static void fit_k(const grid *gr, const float *w, void *blk, float *d, float *m) {
    const kvq_type_traits *t = kvq_traits((kvq_type)gr->ktype);
    t->from_float(w, blk, KVQ_QK_K); /* the codes it writes are replaced after the pass */
    if (gr->ktype == KVQ_TYPE_Q2_K) {
        const kvq_block_q2_K *b = blk;
        const float bd = kvq_f16_to_f32(b->d), bm = kvq_f16_to_f32(b->dmin);
        for (int s = 0; s < 16; s++) d[s] = bd * (float)(b->scales[s] & 0xF), m[s] = -bm * (float)(b->scales[s] >> 4);
        return;
    }
    if (gr->ktype == KVQ_TYPE_Q3_K) {
        float dl[16];
        q3_K_dl(blk, dl);
        for (int s = 0; s < 16; s++) d[s] = fabsf(dl[s]), m[s] = dl[s] >= 0 ? -4.0f * dl[s] : 3.0f * dl[s];
        return;
    }
    const kvq_block_q4_K *b = blk; /* q5_K starts with the same d, dmin and scales */
    const float bd = kvq_f16_to_f32(b->d), bm = kvq_f16_to_f32(b->dmin);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, mn;
        kvq_k4_scale_min(j, b->scales, &sc, &mn);
        d[j] = bd * sc;
        m[j] = -bm * mn;
    }
}

/* The pass over the groups: fit each (row, group), quantize column by
 * column with error feedback (GPTQ/SLIM) or directly (RTN). W is consumed;
 * q receives every code (rows x cols), dm the (d, m) pairs of the affine
 * grids, Wq the values. */
static void quantize_groups(const kvq_wq_params *p, const grid *gr, float *W, int64_t rows, int64_t cols,
                            const float *U, const float *hinv_diag, const int8_t *bits, uint8_t *q, kvq_f16 *dm,
                            float *Wq) {
    const int G = p->group, ng = (int)(cols / G);
    const int nsub = gr->kind == GRID_K ? k_sub(gr->ktype) : 1, sub = G / nsub;
    const size_t kbytes = gr->kind == GRID_K ? kvq_row_size(gr->ktype, KVQ_QK_K) : 0;
    const bool gptq = p->method != KVQ_WQ_RTN;
    float *E = gptq ? malloc((size_t)rows * G * sizeof *E) : NULL;
    float *dd = malloc((size_t)rows * nsub * sizeof *dd), *mm = malloc((size_t)rows * nsub * sizeof *mm);
    for (int g = 0; g < ng; g++) {
        const int b = gr->kind == GRID_K ? k_bits(gr->ktype) : bits[g];
        const int64_t j0 = (int64_t)g * G;
#pragma omp parallel for schedule(static) num_threads(p->n_threads)
        for (int64_t r = 0; r < rows; r++) {
            const float *w = W + r * cols + j0;
            float *rd = dd + r * nsub, *rm = mm + r * nsub;
            if (gr->kind == GRID_K) {
                fit_k(gr, w, (uint8_t *)gr->kblk + (size_t)(r * ng + g) * kbytes, rd, rm);
                continue;
            }
            if (gr->kind == GRID_Q4_0) {
                fit_q4_0(w, G, rd, rm);
            } else if (p->method == KVQ_WQ_SLIM) {
                float sal[KVQ_SLIM_CHUNK * 64];
                for (int i = 0; i < G; i++) sal[i] = w[i] * w[i] / (hinv_diag[j0 + i] * hinv_diag[j0 + i]);
                fit_sqc(w, sal, G, b, p->sqc_lambda, p->sqc_steps, rd, rm);
            } else {
                kvq_wq_fit(w, G, b, 1.0f, rd, rm);
            }
            dm[(r * ng + g) * 2] = kvq_f32_to_f16(rd[0]);
            dm[(r * ng + g) * 2 + 1] = kvq_f32_to_f16(rm[0]);
        }
        for (int i = 0; i < G; i++) {
            const int64_t j = j0 + i;
            const int s = i / sub;
#pragma omp parallel for schedule(static) num_threads(p->n_threads)
            for (int64_t r = 0; r < rows; r++) {
                float *w = W + r * cols;
                const float d = dd[r * nsub + s], m = mm[r * nsub + s];
                const int c = gr->kind == GRID_Q4_0 ? code_q4_0(w[j], d) : kvq_wq_code(w[j], d, m, b);
                const float v = d * (float)c + m;
                q[r * cols + j] = (uint8_t)c;
                Wq[r * cols + j] = v;
                if (!gptq) continue;
                const float e = (w[j] - v) / U[j * cols + j];
                E[r * G + i] = e;
                for (int k = i + 1; k < G; k++) w[j0 + k] -= e * U[j * cols + j0 + k];
            }
        }
        /* the block's error onto the columns after it */
        if (gptq && j0 + G < cols)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)(cols - j0 - G), G, -1.0f, E, G,
                        U + j0 * cols + j0 + G, (int)cols, 1.0f, W + j0 + G, (int)cols);
    }
    free(E);
    free(dd);
    free(mm);
}

/* Codes into the slim layout (kernels/slim.h). */
static void pack_slim(const uint8_t *q, int64_t rows, int64_t cols, int G, int N, const int8_t *bits, uint8_t *codes) {
    const size_t row_bytes = (size_t)cols * (size_t)N / 8;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *o = codes + (size_t)r * row_bytes;
        for (int64_t c = 0; c < cols / KVQ_SLIM_CHUNK; c++) {
            const int b = bits[c * KVQ_SLIM_CHUNK / G];
            kvq_slim_pack_chunk(q + r * cols + c * KVQ_SLIM_CHUNK, b, o);
            o += kvq_slim_chunk_bytes(b);
        }
    }
}

/* ||(W - Wq) X^T||^2 / ||W X^T||^2 over the ns sampled calibration rows: the
 * layer's relative output error, an estimate of tr(dW H dW^T) / tr(W H W^T)
 * at rows x cols x ns operations instead of rows x cols^2. */
static double rel_err(const float *W, const float *Wq, int64_t rows, int64_t cols, const float *X, int ns) {
    float *D = malloc((size_t)(rows * cols) * sizeof *D), *Y = malloc((size_t)ns * (size_t)rows * sizeof *Y);
    if (!D || !Y) { free(D); free(Y); return -1; }
    for (int64_t i = 0; i < rows * cols; i++) D[i] = W[i] - Wq[i];
    double num = 0, den = 0;
    for (int pass = 0; pass < 2; pass++) { /* ||dW X^T||^2, then ||W X^T||^2 */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ns, (int)rows, (int)cols, 1.0f, X, (int)cols,
                    pass ? W : D, (int)cols, 0.0f, Y, (int)rows);
        double s = 0;
        for (size_t i = 0; i < (size_t)ns * (size_t)rows; i++) s += (double)Y[i] * Y[i];
        if (pass) den = s;
        else num = s;
    }
    free(D);
    free(Y);
    return den > 0 ? num / den : -1;
}

/* Everything but the packing: checks, H^-1's factor, SBA, the pass. q:
 * rows x cols codes; dm: (d, m) per (row, group). */
static kvq_status wq_core(const kvq_wq_params *p, const grid *gr, const float *W, int64_t rows, int64_t cols,
                          const float *H, const float *X, int ns, int8_t *bits, uint8_t *q, kvq_f16 *dm,
                          kvq_wq_report *rep, const kvq_logger *lg) {
    const int N = p->bits, G = p->group;
    if (N < 2 || N > 4) return kvq_err(lg, KVQ_ERR_ARG, "weight quantization: %d bits (2, 3, 4 are supported)", N);
    if (G < KVQ_SLIM_CHUNK || G % KVQ_SLIM_CHUNK || G > KVQ_SLIM_CHUNK * 64 || cols % G)
        return kvq_err(lg, KVQ_ERR_ARG, "weight quantization: group %d does not divide rows of %lld into multiples of 32",
                       G, (long long)cols);
    if (p->method != KVQ_WQ_RTN && !H)
        return kvq_err(lg, KVQ_ERR_ARG, "weight quantization: GPTQ and SliM-LLM need calibration data");
    if (p->method == KVQ_WQ_SLIM && (!X || ns < 1))
        return kvq_err(lg, KVQ_ERR_ARG, "weight quantization: SliM-LLM needs calibration rows for its KL");
    const int ng = (int)(cols / G);
    const size_t n = (size_t)(rows * cols);
    float *Wc = malloc(n * sizeof *Wc), *Wq = malloc(n * sizeof *Wq);
    float *U = p->method != KVQ_WQ_RTN ? malloc((size_t)(cols * cols) * sizeof *U) : NULL;
    float *hd = malloc((size_t)cols * sizeof *hd);
    double *sal = malloc((size_t)ng * sizeof *sal);
    kvq_status st = KVQ_OK;
    if (!Wc || !Wq || !hd || !sal || (p->method != KVQ_WQ_RTN && !U)) { st = KVQ_ERR_NOMEM; goto out; }
    *rep = (kvq_wq_report){.rel_err = -1, .kl = -1, .p = 0};
    for (int g = 0; g < ng; g++) bits[g] = (int8_t)N;
    if (U) {
        if ((st = inverse_factor(U, H, cols, p->damp, lg))) goto out;
        /* [H^-1]_jj is the squared norm of column j of U */
        for (int64_t j = 0; j < cols; j++) {
            double s = 0;
            for (int64_t i = 0; i <= j; i++) s += (double)U[i * cols + j] * U[i * cols + j];
            hd[j] = (float)s;
        }
    }
    if (p->method == KVQ_WQ_SLIM) {
        for (int g = 0; g < ng; g++) {
            double s = 0;
            for (int64_t r = 0; r < rows; r++)
                for (int i = 0; i < G; i++) {
                    const double w = W[r * cols + (int64_t)g * G + i], h = hd[(int64_t)g * G + i];
                    s += w * w / (h * h);
                }
            sal[g] = s;
        }
        float *Y = malloc((size_t)ns * (size_t)rows * sizeof *Y), *Yq = malloc((size_t)ns * (size_t)rows * sizeof *Yq);
        if (!Y || !Yq) { free(Y); free(Yq); st = KVQ_ERR_NOMEM; goto out; }
        output_logprobs(X, ns, W, rows, cols, Y);
        /* p = 0 (uniform) and up to sba_candidates values spread over 1..ng/2 */
        const int pmax = ng / 2;
        const int step = pmax > p->sba_candidates ? (pmax + p->sba_candidates - 1) / p->sba_candidates : 1;
        double best = INFINITY;
        int best_p = 0;
        for (int pp = 0; pp <= pmax; pp = pp ? pp + step : 1) {
            kvq_wq_sba_bits(sal, ng, N, pp, bits);
            rtn_matrix(W, rows, cols, G, bits, Wq);
            const double kl = kl_proxy(X, ns, Y, Wq, rows, cols, Yq);
            if (kl < best) best = kl, best_p = pp;
        }
        free(Y);
        free(Yq);
        kvq_wq_sba_bits(sal, ng, N, best_p, bits);
        rep->kl = best;
        rep->p = best_p;
    }
    memcpy(Wc, W, n * sizeof *Wc);
    quantize_groups(p, gr, Wc, rows, cols, U, hd, bits, q, dm, Wq);
    if (X && ns > 0) rep->rel_err = rel_err(W, Wq, rows, cols, X, ns);
out:
    free(Wc);
    free(Wq);
    free(U);
    free(hd);
    free(sal);
    return st;
}

kvq_status kvq_wq_matrix(const kvq_wq_params *p, const float *W, int64_t rows, int64_t cols, const float *H,
                         const float *X, int ns, int8_t *bits, uint8_t *codes, kvq_f16 *dm, kvq_wq_report *rep,
                         const kvq_logger *lg) {
    uint8_t *q = malloc((size_t)(rows * cols));
    if (!q) return KVQ_ERR_NOMEM;
    const grid gr = {GRID_AFFINE, 0, NULL};
    kvq_status st = wq_core(p, &gr, W, rows, cols, H, X, ns, bits, q, dm, rep, lg);
    if (!st) pack_slim(q, rows, cols, p->group, p->bits, bits, codes);
    free(q);
    return st;
}

/* The codes of a K-quant super-block into its block (the layouts of the
 * types' scalar quantizers). */
static void put_k_codes(int type, const uint8_t *L, void *blk) {
    if (type == KVQ_TYPE_Q2_K) {
        kvq_q2_K_put_codes(blk, L);
        return;
    }
    if (type == KVQ_TYPE_Q3_K) {
        int8_t q[KVQ_QK_K];
        float dl[16];
        q3_K_dl(blk, dl);
        for (int s = 0; s < 16; s++) {
            const bool neg = dl[s] < 0; /* fit_k's reading of the sub-block */
            for (int i = 0; i < 16; i++) q[16 * s + i] = (int8_t)((neg ? 7 - L[16 * s + i] : L[16 * s + i]) - 4);
        }
        kvq_q3_K_put_codes(blk, q);
        return;
    }
    if (type == KVQ_TYPE_Q4_K) {
        kvq_block_q4_K *b = blk;
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) b->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
        return;
    }
    kvq_block_q5_K *b = blk;
    memset(b->qh, 0, sizeof b->qh);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
            b->qs[32 * c + l] = (uint8_t)((lo & 0xF) | (hi & 0xF) << 4);
            if (lo & 16) b->qh[l] |= (uint8_t)(1u << (2 * c));
            if (hi & 16) b->qh[l] |= (uint8_t)(2u << (2 * c));
        }
}

int kvq_wq_std_block(int type) {
    switch (type) {
    case KVQ_TYPE_Q4_0:
    case KVQ_TYPE_Q4_1: return 32;
    case KVQ_TYPE_Q2_K:
    case KVQ_TYPE_Q3_K:
    case KVQ_TYPE_Q4_K:
    case KVQ_TYPE_Q5_K: return KVQ_QK_K;
    default: return 0;
    }
}

kvq_status kvq_wq_matrix_q4(const kvq_wq_params *p, int type, const float *W, int64_t rows, int64_t cols,
                            const float *H, const float *X, int ns, void *out, kvq_wq_report *rep,
                            const kvq_logger *lg) {
    const int G = kvq_wq_std_block(type);
    if (!G)
        return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "weight quantization: GPTQ writes q4_0, q4_1, q2_K, q3_K, q4_K and q5_K blocks");
    if (p->method == KVQ_WQ_SLIM)
        return kvq_err(lg, KVQ_ERR_ARG, "weight quantization: SliM-LLM's widths need the slim type, not %s",
                       kvq_type_name(type));
    const bool k = G == KVQ_QK_K;
    if (cols % G)
        return kvq_err(lg, KVQ_ERR_ARG, "weight quantization: rows of %lld are not a multiple of %s's block of %d",
                       (long long)cols, kvq_type_name(type), G);
    kvq_wq_params pp = *p;
    pp.bits = 4;
    pp.group = G;
    const int ng = (int)(cols / G);
    const size_t bb = kvq_row_size(type, G);
    const grid gr = {k ? GRID_K : type == KVQ_TYPE_Q4_0 ? GRID_Q4_0 : GRID_AFFINE, type, out};
    uint8_t *q = malloc((size_t)(rows * cols));
    int8_t *bits = malloc((size_t)ng + 1);
    kvq_f16 *dm = malloc((size_t)(rows * ng) * 2 * sizeof *dm);
    kvq_status st = q && bits && dm ? KVQ_OK : KVQ_ERR_NOMEM;
    if (!st) st = wq_core(&pp, &gr, W, rows, cols, H, X, ns, bits, q, dm, rep, lg);
    for (int64_t r = 0; !st && r < rows; r++)
        for (int g = 0; g < ng; g++) {
            const uint8_t *c = q + r * cols + (int64_t)g * G;
            void *blk = (uint8_t *)out + (size_t)(r * ng + g) * bb;
            if (k) {
                put_k_codes(type, c, blk);
                continue;
            }
            const kvq_f16 *e = dm + (size_t)(r * ng + g) * 2;
            uint8_t *qs;
            if (type == KVQ_TYPE_Q4_0) {
                kvq_block_q4_0 *b = blk;
                b->d = e[0];
                qs = b->qs;
            } else {
                kvq_block_q4_1 *b = blk;
                b->d = e[0];
                b->m = e[1];
                qs = b->qs;
            }
            for (int i = 0; i < 16; i++) qs[i] = (uint8_t)(c[i] | c[i + 16] << 4);
        }
    free(q);
    free(bits);
    free(dm);
    return st;
}
