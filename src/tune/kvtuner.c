/* KVTuner's offline search for per-layer (key bits, value bits), made
 * practical on a CPU with kvq's own objective:
 *  1. sensitivity: quantize one layer at a time with each of the 9 pairs
 *     (every other layer fp16) and measure, in decode mode on calibration
 *     text, the KL divergence of the next-token distributions and the
 *     relative error of that layer's attention output, against f32;
 *  2. Pareto pruning of the pairs within each layer (nominal bits vs KL);
 *  3. clustering of layers with the same surviving pairs and close KL;
 *  4. search over the groups: every combination is ranked by the sum of its
 *     layers' KL (additive proxy); the proxy's Pareto front under the budget
 *     is then measured for real and the best measured one is chosen.
 * The report keeps the sensitivities, the measured Pareto set and the
 * uniform configurations (kvq_tune_write). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../core/log.h"
#include "kvq.h"

#define NPAIR 9
#define MAX_LAYERS 128
#define NB (8 * 4 + 1) /* nominal bits in quarter bits */
static const int PK[NPAIR] = {2, 2, 2, 4, 4, 4, 8, 8, 8}, PV[NPAIR] = {2, 4, 8, 2, 4, 8, 2, 4, 8};

typedef struct result { double kl, top1, ppl; double att_err[MAX_LAYERS]; } result;

struct kvq_tune_report {
    int n_layer, n_tok, n_groups;
    double budget;
    char codec[16];
    result sens[MAX_LAYERS][NPAIR];
    bool keep[MAX_LAYERS][NPAIR];
    int group[MAX_LAYERS];
    int n_front;
    struct { double bits, proxy; int pairs[MAX_LAYERS]; result meas; } front[NB];
    int chosen;
    result uni[NPAIR];
};

typedef struct tuner {
    const kvq_tune_params *p;
    kvq_logger lg;
    int n_tok, ctx, n_layer, row, n_vocab;
    float *base_lp;     /* [n_tok][V] log-probs of the f32 run */
    float *base_att;    /* [n_layer][n_tok][row] attention outputs of the f32 run */
    float *cur_att;     /* the same for the run being measured */
    int pos;            /* position being evaluated (tap bookkeeping) */
    char tmpl[64];      /* temporary layer-table path */
} tuner;

static void tap(void *user, int layer, const float *out, int n_rows, int row_len) {
    tuner *t = user;
    if (n_rows != 1 || layer >= t->n_layer) return;
    memcpy(t->cur_att + ((size_t)layer * t->n_tok + t->pos) * row_len, out, (size_t)row_len * sizeof(float));
}

/* Decode-mode run: windows of ctx tokens, each token evaluated on its own,
 * so every query attends to the cache as stored. */
static kvq_status run(tuner *t, const char *spec, bool is_base, result *r) {
    const int V = t->n_vocab;
    kvq_ctx_params cp = kvq_ctx_default_params();
    cp.n_ctx = t->ctx;
    cp.n_batch = 1;
    cp.n_threads = t->p->n_threads;
    cp.kv_spec = spec;
    cp.log = t->p->log;
    cp.log_user = t->p->log_user;
    kvq_ctx *c;
    kvq_status st = kvq_ctx_new(t->p->model, &cp, &c);
    if (st) return st;
    kvq_ctx_set_attn_tap(c, tap, t);
    float *lg = malloc((size_t)V * 4), *lp = malloc((size_t)V * 4);
    double kl = 0, nll = 0;
    long top1 = 0, n = 0;
    st = lg && lp ? KVQ_OK : KVQ_ERR_NOMEM;
    for (int p = 0; !st && p < t->n_tok; p++) {
        if (p % t->ctx == 0) kvq_ctx_truncate(c, 0);
        t->pos = p;
        if ((st = kvq_eval(c, &t->p->tokens[p], 1, false, lg))) break;
        float *dst = is_base ? t->base_lp + (size_t)p * V : lp;
        kvq_log_softmax(lg, V, dst);
        if (!is_base) {
            bool same;
            kl += kvq_kl_div(t->base_lp + (size_t)p * V, lp, V, &same);
            top1 += same;
        }
        if ((p + 1) % t->ctx && p + 1 < t->n_tok) nll -= dst[t->p->tokens[p + 1]];
        n++;
    }
    if (!st && r) {
        r->kl = kl / n;
        r->top1 = (double)top1 / n;
        r->ppl = exp(nll / n);
        for (int l = 0; l < t->n_layer; l++) {
            double e = 0, z = 0;
            const size_t off = (size_t)l * t->n_tok * t->row;
            for (size_t i = 0; i < (size_t)t->n_tok * t->row; i++) {
                double d = (double)t->cur_att[off + i] - t->base_att[off + i];
                e += d * d;
                z += (double)t->base_att[off + i] * t->base_att[off + i];
            }
            r->att_err[l] = z > 0 ? sqrt(e / z) : 0;
        }
    }
    kvq_ctx_free(c);
    free(lg);
    free(lp);
    return st;
}

/* Measures a per-layer assignment (pair index per layer, -1 = fp16) through
 * a temporary layer table. */
static kvq_status measure(tuner *t, const int *pairs, result *r) {
    FILE *f = fopen(t->tmpl, "w");
    if (!f) return kvq_err(&t->lg, KVQ_ERR_IO, "tune: cannot write the temporary table '%s'", t->tmpl);
    for (int l = 0; l < t->n_layer; l++)
        fprintf(f, "k%dv%d\n", pairs[l] < 0 ? 16 : PK[pairs[l]], pairs[l] < 0 ? 16 : PV[pairs[l]]);
    fclose(f);
    char spec[128];
    snprintf(spec, sizeof spec, "%s:layers=%s", t->p->codec, t->tmpl);
    return run(t, spec, false, r);
}

static double nominal_bits(int L, const int *pairs) {
    double b = 0;
    for (int l = 0; l < L; l++) b += (PK[pairs[l]] + PV[pairs[l]]) / 2.0;
    return b / L;
}

static void progress(const tuner *t, int stage, int done, int total, const char *fmt, ...) KVQ_PRINTF(5, 6);
static void progress(const tuner *t, int stage, int done, int total, const char *fmt, ...) {
    if (!t->p->progress) return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    t->p->progress(t->p->progress_user, stage, done, total, msg);
}

/* Pareto pruning per layer (bits vs KL), then clustering: same surviving
 * pairs and KL within 0.3 decades on each. */
static void prune_and_cluster(kvq_tune_report *R) {
    const int L = R->n_layer;
    for (int l = 0; l < L; l++)
        for (int p = 0; p < NPAIR; p++) {
            R->keep[l][p] = true;
            double bp = (PK[p] + PV[p]) / 2.0;
            for (int q = 0; q < NPAIR; q++) {
                double bq = (PK[q] + PV[q]) / 2.0;
                if (q != p && bq <= bp && R->sens[l][q].kl <= R->sens[l][p].kl &&
                    (bq < bp || R->sens[l][q].kl < R->sens[l][p].kl))
                    R->keep[l][p] = false;
            }
        }
    R->n_groups = 0;
    for (int l = 0; l < L; l++) {
        R->group[l] = -1;
        for (int j = 0; j < l && R->group[l] < 0; j++) {
            bool same = true;
            for (int p = 0; p < NPAIR && same; p++) {
                if (R->keep[l][p] != R->keep[j][p]) same = false;
                else if (R->keep[l][p] &&
                         fabs(log10(R->sens[l][p].kl + 1e-9) - log10(R->sens[j][p].kl + 1e-9)) > 0.3)
                    same = false;
            }
            if (same) R->group[l] = R->group[j];
        }
        if (R->group[l] < 0) R->group[l] = R->n_groups++;
    }
}

/* Every combination of the groups' surviving pairs, ranked by the additive
 * proxy; keeps the proxy's Pareto front at or under the budget. */
static kvq_status search(tuner *t, kvq_tune_report *R) {
    const int L = R->n_layer, G = R->n_groups;
    int gl[MAX_LAYERS], opts[MAX_LAYERS][NPAIR], nopt[MAX_LAYERS];
    for (int g = 0; g < G; g++) {
        for (int l = 0; l < L; l++)
            if (R->group[l] == g) { gl[g] = l; break; }
        nopt[g] = 0;
        for (int p = 0; p < NPAIR; p++)
            if (R->keep[gl[g]][p]) opts[g][nopt[g]++] = p;
    }
    double combos = 1;
    for (int g = 0; g < G; g++) combos *= nopt[g];
    if (combos > 5e6) return kvq_err(&t->lg, KVQ_ERR_UNSUPPORTED, "tune: %.0f combinations: too many groups", combos);
    struct { double bits, proxy; long idx; } best[NB];
    for (int b = 0; b < NB; b++) best[b].idx = -1;
    int ix[MAX_LAYERS], pairs[MAX_LAYERS];
    for (long c = 0; c < (long)combos; c++) {
        long r = c;
        for (int g = 0; g < G; g++) { ix[g] = (int)(r % nopt[g]); r /= nopt[g]; }
        double proxy = 0;
        for (int l = 0; l < L; l++) {
            pairs[l] = opts[R->group[l]][ix[R->group[l]]];
            proxy += R->sens[l][pairs[l]].kl;
        }
        double bits = nominal_bits(L, pairs);
        int b = (int)lround(bits * 4);
        if (b < NB && (best[b].idx < 0 || proxy < best[b].proxy)) {
            best[b].bits = bits;
            best[b].proxy = proxy;
            best[b].idx = c;
        }
    }
    /* the front, cheapest first */
    double best_proxy = INFINITY;
    R->n_front = 0;
    for (int b = 0; b < NB; b++) {
        if (best[b].idx < 0 || best[b].bits > R->budget + 1e-9 || best[b].proxy >= best_proxy) continue;
        best_proxy = best[b].proxy;
        long r = best[b].idx;
        for (int g = 0; g < G; g++) { ix[g] = (int)(r % nopt[g]); r /= nopt[g]; }
        for (int l = 0; l < L; l++) R->front[R->n_front].pairs[l] = opts[R->group[l]][ix[R->group[l]]];
        R->front[R->n_front].bits = best[b].bits;
        R->front[R->n_front].proxy = best[b].proxy;
        R->n_front++;
    }
    if (!R->n_front) return kvq_err(&t->lg, KVQ_ERR_ARG, "tune: no configuration fits %.2f bits", R->budget);
    return KVQ_OK;
}

static kvq_status tune(tuner *t, kvq_tune_report *R) {
    const int L = t->n_layer;
    kvq_status st = run(t, "f32", true, NULL);
    if (st) return kvq_err(&t->lg, st, "tune: the f32 baseline run failed");
    t->cur_att = malloc((size_t)L * t->n_tok * t->row * sizeof(float));
    if (!t->cur_att) return KVQ_ERR_NOMEM;
    int pairs[MAX_LAYERS];
    for (int l = 0; l < L; l++)
        for (int p = 0; p < NPAIR; p++) {
            for (int j = 0; j < L; j++) pairs[j] = -1;
            pairs[l] = p;
            if ((st = measure(t, pairs, &R->sens[l][p]))) return st;
            progress(t, 1, l * NPAIR + p + 1, L * NPAIR, "layer %d/%d, K%dV%d: KL %.5f, attention error %.4f", l + 1,
                     L, PK[p], PV[p], R->sens[l][p].kl, R->sens[l][p].att_err[l]);
        }
    prune_and_cluster(R);
    progress(t, 2, 1, 1, "pruning: Pareto pairs per layer kept");
    progress(t, 3, 1, 1, "clustering: %d groups of layers", R->n_groups);
    if ((st = search(t, R))) return st;
    /* the last `evals` points of the front (the most bits under the budget) are measured */
    const int evals = t->p->evals > 0 ? t->p->evals : 12, first = R->n_front > evals ? R->n_front - evals : 0;
    memmove(R->front, R->front + first, (size_t)(R->n_front - first) * sizeof R->front[0]);
    R->n_front -= first;
    R->chosen = -1;
    for (int i = 0; i < R->n_front; i++) {
        if ((st = measure(t, R->front[i].pairs, &R->front[i].meas))) return st;
        progress(t, 4, i + 1, R->n_front, "%.2f bits: KL %.5f", R->front[i].bits, R->front[i].meas.kl);
        if (R->chosen < 0 || R->front[i].meas.kl < R->front[R->chosen].meas.kl) R->chosen = i;
    }
    for (int p = 0; p < NPAIR; p++) { /* uniform configurations for comparison */
        for (int l = 0; l < L; l++) pairs[l] = p;
        if ((st = measure(t, pairs, &R->uni[p]))) return st;
    }
    return KVQ_OK;
}

kvq_status kvq_tune_kv(const kvq_tune_params *p, kvq_tune_report **out) {
    *out = NULL;
    tuner t = {0};
    t.p = p;
    t.lg = (kvq_logger){p->log, p->log_user};
    kvq_model_info info;
    if (!p->model || !p->tokens) return kvq_err(&t.lg, KVQ_ERR_ARG, "tune: no model or calibration tokens");
    kvq_model_get_info(p->model, &info);
    if (!p->codec || (strcmp(p->codec, "kivi") && strcmp(p->codec, "pertoken")))
        return kvq_err(&t.lg, KVQ_ERR_ARG, "tune: the codec must be kivi or pertoken");
    if (!(p->budget >= 2 && p->budget <= 8)) return kvq_err(&t.lg, KVQ_ERR_ARG, "tune: budget %g is outside [2, 8]", p->budget);
    if (info.n_layer > MAX_LAYERS) return kvq_err(&t.lg, KVQ_ERR_UNSUPPORTED, "tune: more than %d layers", MAX_LAYERS);
    if (p->n_tokens < 16)
        return kvq_err(&t.lg, KVQ_ERR_ARG, "tune: calibration text too short (%d tokens, 16 at least)", p->n_tokens);
    t.n_layer = info.n_layer;
    t.n_vocab = info.n_vocab;
    t.row = info.n_head * info.head_dim;
    t.n_tok = p->n_tokens;
    /* calibrate at the context the model is used at: the fp16 window is a smaller share of a longer one */
    t.ctx = p->ctx > 0 ? p->ctx : 512;
    if (info.n_ctx_train > 0 && t.ctx > info.n_ctx_train) t.ctx = info.n_ctx_train;
    kvq_tune_report *R = calloc(1, sizeof *R);
    t.base_lp = malloc((size_t)t.n_tok * t.n_vocab * sizeof(float));
    t.base_att = malloc((size_t)t.n_layer * t.n_tok * t.row * sizeof(float));
    t.cur_att = t.base_att;
    snprintf(t.tmpl, sizeof t.tmpl, "/tmp/kvq-tune-XXXXXX");
    int fd = mkstemp(t.tmpl);
    kvq_status st = R && t.base_lp && t.base_att ? KVQ_OK : KVQ_ERR_NOMEM;
    if (!st && fd < 0) st = kvq_err(&t.lg, KVQ_ERR_IO, "tune: cannot create a temporary file");
    if (fd >= 0) close(fd);
    if (!st) {
        R->n_layer = t.n_layer;
        R->n_tok = t.n_tok;
        R->budget = p->budget;
        snprintf(R->codec, sizeof R->codec, "%s", p->codec);
        st = tune(&t, R);
    }
    if (fd >= 0) unlink(t.tmpl);
    if (t.cur_att != t.base_att) free(t.cur_att);
    free(t.base_att);
    free(t.base_lp);
    if (st) {
        free(R);
        return st;
    }
    *out = R;
    return KVQ_OK;
}

void kvq_tune_report_free(kvq_tune_report *r) { free(r); }

int32_t kvq_tune_chosen(const kvq_tune_report *r, int8_t *k, int8_t *v, double *bits, double *kl, double *top1) {
    const int c = r->chosen;
    for (int l = 0; l < r->n_layer; l++) {
        if (k) k[l] = (int8_t)PK[r->front[c].pairs[l]];
        if (v) v[l] = (int8_t)PV[r->front[c].pairs[l]];
    }
    if (bits) *bits = r->front[c].bits;
    if (kl) *kl = r->front[c].meas.kl;
    if (top1) *top1 = r->front[c].meas.top1;
    return r->n_layer;
}

double kvq_tune_uniform_kl(const kvq_tune_report *r, int k, int v) {
    for (int p = 0; p < NPAIR; p++)
        if (PK[p] == k && PV[p] == v) return r->uni[p].kl;
    return -1;
}

kvq_status kvq_tune_write(const kvq_tune_report *r, const char *path, const char *model_name) {
    const int L = r->n_layer, c = r->chosen;
    FILE *o = fopen(path, "w");
    if (!o) return KVQ_ERR_IO;
    fprintf(o, "# kvq tune: %s, mode %s, budget %.2f bits, %d calibration tokens (decode mode)\n"
               "# nominal %.2f bits, KL %.6f; use with --kv %s:layers=THIS_FILE\n",
            model_name, r->codec, r->budget, r->n_tok, r->front[c].bits, r->front[c].meas.kl, r->codec);
    for (int l = 0; l < L; l++) fprintf(o, "k%dv%d\n", PK[r->front[c].pairs[l]], PV[r->front[c].pairs[l]]);
    if (fclose(o)) return KVQ_ERR_IO;
    char jp[1024];
    snprintf(jp, sizeof jp, "%s.json", path);
    FILE *j = fopen(jp, "w");
    if (!j) return KVQ_ERR_IO;
    fprintf(j, "{\"model\": \"%s\", \"budget\": %.3f, \"tokens\": %d, \"groups\": %d,\n \"sensitivity\": [", model_name,
            r->budget, r->n_tok, r->n_groups);
    for (int l = 0; l < L; l++)
        for (int p = 0; p < NPAIR; p++)
            fprintf(j, "%s\n  {\"layer\": %d, \"k\": %d, \"v\": %d, \"kl\": %.8f, \"attn_err\": %.6f, \"kept\": %s, \"group\": %d}",
                    l || p ? "," : "", l, PK[p], PV[p], r->sens[l][p].kl, r->sens[l][p].att_err[l],
                    r->keep[l][p] ? "true" : "false", r->group[l]);
    fprintf(j, "],\n \"pareto\": [");
    for (int i = 0; i < r->n_front; i++) {
        fprintf(j, "%s\n  {\"bits\": %.3f, \"proxy_kl\": %.8f, \"kl\": %.8f, \"top1\": %.6f, \"layers\": \"", i ? "," : "",
                r->front[i].bits, r->front[i].proxy, r->front[i].meas.kl, r->front[i].meas.top1);
        for (int l = 0; l < L; l++) fprintf(j, "%sk%dv%d", l ? "," : "", PK[r->front[i].pairs[l]], PV[r->front[i].pairs[l]]);
        fprintf(j, "\"}");
    }
    fprintf(j, "],\n \"uniform\": [");
    for (int p = 0; p < NPAIR; p++)
        fprintf(j, "%s{\"k\": %d, \"v\": %d, \"kl\": %.8f, \"top1\": %.6f}", p ? ", " : "", PK[p], PV[p], r->uni[p].kl,
                r->uni[p].top1);
    fprintf(j, "],\n \"chosen\": %d}\n", c);
    return fclose(j) ? KVQ_ERR_IO : KVQ_OK;
}
