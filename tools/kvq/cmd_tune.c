/* kvq tune: KVTuner's offline search for per-layer (key bits, value bits),
 * made practical on a CPU with kvq's own objective:
 *  1. sensitivity: quantize one layer at a time with each of the 9 pairs
 *     (every other layer fp16) and measure, in decode mode on calibration
 *     text, the KL divergence of the next-token distributions and the
 *     relative error of that layer's attention output, against f32;
 *  2. Pareto pruning of the pairs within each layer (nominal bits vs KL);
 *  3. clustering of layers with the same surviving pairs and close KL;
 *  4. search over the groups: every combination is ranked by the sum of its
 *     layers' KL (additive proxy); the proxy's Pareto front under the budget
 *     is then measured for real and the best measured one is chosen.
 * Writes the chosen table (kvq text format) and a JSON report with the
 * sensitivities, the measured Pareto set and the uniform configurations.
 * --mode kivi (default) tunes the kivi codec, --mode pertoken the pertoken one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

#define NPAIR 9
static const int PK[NPAIR] = {2, 2, 2, 4, 4, 4, 8, 8, 8}, PV[NPAIR] = {2, 4, 8, 2, 4, 8, 2, 4, 8};

typedef struct tuner {
    kvq_model *m;
    kvq_model_info info;
    const kvq_token *toks;
    int n_tok, ctx, n_layer, row;
    int threads;
    cli_log *lg;
    float *base_lp;     /* [n_tok][V] log-probs of the f32 run */
    float *base_att;    /* [n_layer][n_tok][row] attention outputs of the f32 run */
    float *cur_att;     /* the same for the run being measured */
    int pos;            /* position being evaluated (tap bookkeeping) */
    char tmpl[64];      /* temporary layer-table path */
    const char *codec;  /* "kivi" or "pertoken" */
} tuner;

typedef struct result { double kl, top1, ppl; double att_err[128]; } result;

static void tap(void *user, int layer, const float *out, int n_rows, int row_len) {
    tuner *t = user;
    if (n_rows != 1 || layer >= t->n_layer) return;
    memcpy(t->cur_att + ((size_t)layer * t->n_tok + t->pos) * row_len, out, (size_t)row_len * sizeof(float));
}

/* Decode-mode run: windows of ctx tokens, each token evaluated on its own,
 * so every query attends to the cache as stored. */
static int run(tuner *t, const char *spec, bool is_base, result *r) {
    const int V = t->info.n_vocab;
    kvq_ctx_params cp = kvq_ctx_default_params();
    cp.n_ctx = t->ctx;
    cp.n_batch = 1;
    cp.n_threads = t->threads;
    cp.kv_spec = spec;
    cp.log = cli_log_cb;
    cp.log_user = t->lg;
    kvq_ctx *c;
    if (kvq_ctx_new(t->m, &cp, &c)) return -1;
    kvq_ctx_set_attn_tap(c, tap, t);
    float *lg = malloc((size_t)V * 4), *lp = malloc((size_t)V * 4);
    double kl = 0, nll = 0;
    long top1 = 0, n = 0;
    for (int p = 0; p < t->n_tok; p++) {
        if (p % t->ctx == 0) kvq_ctx_truncate(c, 0);
        t->pos = p;
        if (kvq_eval(c, &t->toks[p], 1, false, lg)) { kvq_ctx_free(c); free(lg); free(lp); return -1; }
        float *dst = is_base ? t->base_lp + (size_t)p * V : lp;
        cli_log_softmax(lg, V, dst);
        if (!is_base) {
            bool same;
            kl += cli_kl(t->base_lp + (size_t)p * V, lp, V, &same);
            top1 += same;
        }
        if ((p + 1) % t->ctx && p + 1 < t->n_tok) nll -= dst[t->toks[p + 1]];
        n++;
    }
    if (r) {
        r->kl = kl / n;
        r->top1 = (double)top1 / n;
        r->ppl = exp(nll / n);
        for (int l = 0; l < t->n_layer && l < 128; l++) {
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
    return 0;
}

/* Measures a per-layer assignment (pair index per layer, -1 = fp16). */
static int measure(tuner *t, const int *pairs, result *r) {
    FILE *f = fopen(t->tmpl, "w");
    if (!f) return -1;
    for (int l = 0; l < t->n_layer; l++)
        fprintf(f, "k%dv%d\n", pairs[l] < 0 ? 16 : PK[pairs[l]], pairs[l] < 0 ? 16 : PV[pairs[l]]);
    fclose(f);
    char spec[128];
    snprintf(spec, sizeof spec, "%s:layers=%s", t->codec, t->tmpl);
    return run(t, spec, false, r);
}

static double nominal_bits(const tuner *t, const int *pairs) {
    double b = 0;
    for (int l = 0; l < t->n_layer; l++) b += (PK[pairs[l]] + PV[pairs[l]]) / 2.0;
    return b / t->n_layer;
}

int cmd_tune(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *file = NULL, *out = NULL, *mode = "kivi";
    double budget = 0;
    long n_tokens = 4096, ctx = 512, threads = 0, verbose = 0, evals = 12;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "-f")) file = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--mode")) mode = v;
        else if (!strcmp(a, "--budget")) { if (!cli_float(a, v, 2, 8, &budget)) return 2; }
        else if (!strcmp(a, "--tokens")) { if (!cli_int(a, v, 16, 1 << 20, &n_tokens)) return 2; }
        else if (!strcmp(a, "--ctx")) { if (!cli_int(a, v, 8, 1 << 16, &ctx)) return 2; }
        else if (!strcmp(a, "--evals")) { if (!cli_int(a, v, 1, 1000, &evals)) return 2; }
        else if (!strcmp(a, "-t")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else return cli_fail("tune: unknown option '%s'", a), 2;
    }
    if (!model || !file || budget == 0)
        return cli_fail("tune: -m MODEL -f CALIB.txt --budget BITS are required (budget in [2, 8])"), 2;
    if (strcmp(mode, "kivi") && strcmp(mode, "pertoken"))
        return cli_fail("tune: --mode must be kivi or pertoken"), 2;
    cli_log lg = {(int)verbose};
    tuner t = {0};
    t.lg = &lg;
    t.threads = (int)threads;
    t.ctx = (int)ctx;
    t.codec = mode;
    if (!(t.m = cli_load_model(model, tok, false, &lg))) return 1;
    kvq_model_get_info(t.m, &t.info);
    t.n_layer = t.info.n_layer;
    t.row = t.info.n_head * t.info.head_dim;
    /* calibrate at the context the model is used at: the fp16 window is a smaller share of a longer one */
    if (t.info.n_ctx_train > 0 && t.ctx > t.info.n_ctx_train) t.ctx = t.info.n_ctx_train;
    if (t.n_layer > 128) return cli_fail("tune: more than 128 layers"), 1;
    FILE *f = fopen(file, "rb");
    if (!f) return cli_fail("cannot open '%s'", file);
    char *text = malloc(4 << 20);
    size_t len = text ? fread(text, 1, 4 << 20, f) : 0;
    fclose(f);
    int n = 0;
    kvq_tokenize(t.m, text, len, t.info.add_bos, NULL, 0, &n);
    kvq_token *toks = malloc(((size_t)n + 1) * sizeof *toks);
    if (!toks || kvq_tokenize(t.m, text, len, t.info.add_bos, toks, n, &n)) return cli_fail("tokenization failed");
    free(text);
    if (n < 16) return cli_fail("calibration text too short (%d tokens)", n);
    t.toks = toks;
    t.n_tok = n < n_tokens ? n : (int)n_tokens;
    const int V = t.info.n_vocab, L = t.n_layer;
    t.base_lp = malloc((size_t)t.n_tok * V * sizeof(float));
    t.base_att = malloc((size_t)L * t.n_tok * t.row * sizeof(float));
    t.cur_att = t.base_att;
    snprintf(t.tmpl, sizeof t.tmpl, "/tmp/kvq-tune-%d.txt", (int)getpid());
    double t0 = cli_now();
    fprintf(stderr, "kvq tune: %s, %d layers, %d calibration tokens in windows of %d (decode mode), budget %.2f bits\n",
            model, L, t.n_tok, t.ctx, budget);
    if (!t.base_lp || !t.base_att || run(&t, "f32", true, NULL)) return cli_fail("baseline run failed");
    t.cur_att = malloc((size_t)L * t.n_tok * t.row * sizeof(float));

    /* 1. sensitivity */
    static result sens[128][NPAIR];
    int *pairs = malloc((size_t)L * sizeof *pairs);
    for (int l = 0; l < L; l++) {
        for (int p = 0; p < NPAIR; p++) {
            for (int j = 0; j < L; j++) pairs[j] = -1;
            pairs[l] = p;
            if (measure(&t, pairs, &sens[l][p])) return cli_fail("measurement failed");
            fprintf(stderr, "\r[1/4] sensitivity: layer %d/%d, K%dV%d: KL %.5f, attention error %.4f   ", l + 1, L,
                    PK[p], PV[p], sens[l][p].kl, sens[l][p].att_err[l]);
        }
    }
    fprintf(stderr, "\n");
    /* 2. Pareto pruning per layer (bits vs KL) */
    bool keep[128][NPAIR];
    for (int l = 0; l < L; l++)
        for (int p = 0; p < NPAIR; p++) {
            keep[l][p] = true;
            double bp = (PK[p] + PV[p]) / 2.0;
            for (int q = 0; q < NPAIR; q++) {
                double bq = (PK[q] + PV[q]) / 2.0;
                if (q != p && bq <= bp && sens[l][q].kl <= sens[l][p].kl && (bq < bp || sens[l][q].kl < sens[l][p].kl))
                    keep[l][p] = false;
            }
        }
    /* 3. clustering: same surviving pairs and KL within 0.3 decades on each */
    int group[128], n_groups = 0;
    for (int l = 0; l < L; l++) {
        group[l] = -1;
        for (int j = 0; j < l && group[l] < 0; j++) {
            bool same = true;
            for (int p = 0; p < NPAIR && same; p++) {
                if (keep[l][p] != keep[j][p]) same = false;
                else if (keep[l][p] && fabs(log10(sens[l][p].kl + 1e-9) - log10(sens[j][p].kl + 1e-9)) > 0.3) same = false;
            }
            if (same) group[l] = group[j];
        }
        if (group[l] < 0) group[l] = n_groups++;
    }
    fprintf(stderr, "[2/4] pruning: ");
    for (int l = 0; l < L; l++) {
        int k = 0;
        for (int p = 0; p < NPAIR; p++) k += keep[l][p];
        fprintf(stderr, "%sL%d:%d", l ? " " : "", l, k);
    }
    fprintf(stderr, " pairs survive\n[3/4] clustering: %d groups of layers\n", n_groups);
    /* 4. search over groups with the additive proxy, then measure its front */
    int gl[128]; /* a representative layer per group */
    int opts[128][NPAIR], nopt[128];
    for (int g = 0; g < n_groups; g++) {
        for (int l = 0; l < L; l++) if (group[l] == g) { gl[g] = l; break; }
        nopt[g] = 0;
        for (int p = 0; p < NPAIR; p++) if (keep[gl[g]][p]) opts[g][nopt[g]++] = p;
    }
    double combos = 1;
    for (int g = 0; g < n_groups; g++) combos *= nopt[g];
    if (combos > 5e6) return cli_fail("tune: %g combinations: too many groups", combos);
    typedef struct cand { double bits, proxy; int idx; } cand;
    /* best proxy per distinct nominal-bits value (in quarter bits) */
    const int NB = 8 * 4 + 1;
    cand best[33];
    for (int b = 0; b < NB; b++) best[b].idx = -1;
    int *ix = calloc((size_t)n_groups + 1, sizeof *ix);
    for (long c = 0; c < (long)combos; c++) {
        long r = c;
        for (int g = 0; g < n_groups; g++) { ix[g] = (int)(r % nopt[g]); r /= nopt[g]; }
        double proxy = 0;
        for (int l = 0; l < L; l++) {
            pairs[l] = opts[group[l]][ix[group[l]]];
            proxy += sens[l][pairs[l]].kl;
        }
        double bits = nominal_bits(&t, pairs);
        int b = (int)lround(bits * 4);
        if (b < NB && (best[b].idx < 0 || proxy < best[b].proxy)) best[b] = (cand){bits, proxy, (int)c};
    }
    /* the proxy's Pareto front at or under the budget, cheapest first */
    cand front[33];
    int nf = 0;
    double best_proxy = INFINITY;
    for (int b = 0; b < NB; b++) {
        if (best[b].idx < 0 || best[b].bits > budget + 1e-9) continue;
        if (best[b].proxy < best_proxy) { front[nf++] = best[b]; best_proxy = best[b].proxy; }
    }
    if (!nf) return cli_fail("tune: no configuration fits %.2f bits", budget);
    int first = nf > evals ? nf - (int)evals : 0;
    result meas[33];
    int chosen = -1;
    for (int i = first; i < nf; i++) {
        long r = front[i].idx;
        for (int g = 0; g < n_groups; g++) { ix[g] = (int)(r % nopt[g]); r /= nopt[g]; }
        for (int l = 0; l < L; l++) pairs[l] = opts[group[l]][ix[group[l]]];
        if (measure(&t, pairs, &meas[i])) return cli_fail("measurement failed");
        fprintf(stderr, "\r[4/4] search: %d/%d front points measured (%.2f bits: KL %.5f)   ", i - first + 1, nf - first,
                front[i].bits, meas[i].kl);
        if (chosen < 0 || meas[i].kl < meas[chosen].kl) chosen = i;
    }
    fprintf(stderr, "\n");
    /* uniform configurations for comparison */
    result uni[NPAIR];
    for (int p = 0; p < NPAIR; p++) {
        for (int l = 0; l < L; l++) pairs[l] = p;
        measure(&t, pairs, &uni[p]);
    }
    long r = front[chosen].idx;
    for (int g = 0; g < n_groups; g++) { ix[g] = (int)(r % nopt[g]); r /= nopt[g]; }
    for (int l = 0; l < L; l++) pairs[l] = opts[group[l]][ix[group[l]]];
    printf("chosen (%.2f nominal bits, calibration KL %.5f, top-1 %.4f):", front[chosen].bits, meas[chosen].kl,
           meas[chosen].top1);
    for (int l = 0; l < L; l++) printf(" k%dv%d", PK[pairs[l]], PV[pairs[l]]);
    printf("\nuniform:");
    for (int p = 0; p < NPAIR; p++) printf(" k%dv%d=%.5f", PK[p], PV[p], uni[p].kl);
    printf("\n");
    if (out) {
        FILE *o = fopen(out, "w");
        if (!o) return cli_fail("cannot write '%s'", out);
        fprintf(o, "# kvq tune: %s, mode %s, budget %.2f bits, %d calibration tokens (decode mode)\n"
                   "# nominal %.2f bits, KL %.6f; use with --kv %s:layers=THIS_FILE\n",
                model, mode, budget, t.n_tok, front[chosen].bits, meas[chosen].kl, mode);
        for (int l = 0; l < L; l++) fprintf(o, "k%dv%d\n", PK[pairs[l]], PV[pairs[l]]);
        fclose(o);
        char jp[1024];
        snprintf(jp, sizeof jp, "%s.json", out);
        FILE *j = fopen(jp, "w");
        if (j) {
            fprintf(j, "{\"model\": \"%s\", \"budget\": %.3f, \"tokens\": %d, \"groups\": %d,\n \"sensitivity\": [", model,
                    budget, t.n_tok, n_groups);
            for (int l = 0; l < L; l++)
                for (int p = 0; p < NPAIR; p++)
                    fprintf(j, "%s\n  {\"layer\": %d, \"k\": %d, \"v\": %d, \"kl\": %.8f, \"attn_err\": %.6f, \"kept\": %s, \"group\": %d}",
                            l || p ? "," : "", l, PK[p], PV[p], sens[l][p].kl, sens[l][p].att_err[l],
                            keep[l][p] ? "true" : "false", group[l]);
            fprintf(j, "],\n \"pareto\": [");
            for (int i = first; i < nf; i++) {
                long rr = front[i].idx;
                fprintf(j, "%s\n  {\"bits\": %.3f, \"proxy_kl\": %.8f, \"kl\": %.8f, \"top1\": %.6f, \"layers\": \"", i > first ? "," : "",
                        front[i].bits, front[i].proxy, meas[i].kl, meas[i].top1);
                for (int g = 0; g < n_groups; g++) { ix[g] = (int)(rr % nopt[g]); rr /= nopt[g]; }
                for (int l = 0; l < L; l++) {
                    int p = opts[group[l]][ix[group[l]]];
                    fprintf(j, "%sk%dv%d", l ? "," : "", PK[p], PV[p]);
                }
                fprintf(j, "\"}");
            }
            fprintf(j, "],\n \"uniform\": [");
            for (int p = 0; p < NPAIR; p++)
                fprintf(j, "%s{\"k\": %d, \"v\": %d, \"kl\": %.8f, \"top1\": %.6f}", p ? ", " : "", PK[p], PV[p], uni[p].kl, uni[p].top1);
            fprintf(j, "],\n \"chosen\": %d}\n", chosen - first);
            fclose(j);
        }
        fprintf(stderr, "kvq tune: wrote %s and %s.json in %.0f s\n", out, out, cli_now() - t0);
    }
    unlink(t.tmpl);
    free(ix); free(pairs); free(toks); free(t.base_lp); free(t.base_att); free(t.cur_att);
    kvq_model_free(t.m);
    return 0;
}
