/* kvq tune: flags for KVTuner's search (src/tune/kvtuner.c), progress on
 * stderr, the chosen table on stdout and in -o FILE (+ FILE.json). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static void on_progress(void *user, int stage, int done, int total, const char *msg) {
    static const char *names[] = {"", "sensitivity", "pruning", "clustering", "search"};
    (void)user;
    fprintf(stderr, "\r[%d/4] %s: %d/%d %s   %s", stage, names[stage], done, total, msg, done == total ? "\n" : "");
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
    if (strcmp(mode, "kivi") && strcmp(mode, "pertoken")) return cli_fail("tune: --mode must be kivi or pertoken"), 2;
    cli_log lg = {(int)verbose};
    kvq_model *m = cli_load_model(model, tok, false, &lg);
    if (!m) return 1;
    int rc = 1;
    kvq_token *toks = NULL;
    kvq_tune_report *rep = NULL;
    int n = 0;
    if (cli_read_tokens(m, file, (size_t)4 << 20, &toks, &n)) goto done;
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    kvq_tune_params tp = {.model = m, .tokens = toks, .n_tokens = n < n_tokens ? n : (int)n_tokens, .ctx = (int)ctx,
                          .budget = budget, .codec = mode, .evals = (int)evals, .n_threads = (int)threads,
                          .log = cli_log_cb, .log_user = &lg, .progress = on_progress};
    double t0 = cli_now();
    fprintf(stderr, "kvq tune: %s, %d layers, %d calibration tokens in windows of %ld (decode mode), budget %.2f bits\n",
            model, info.n_layer, tp.n_tokens, ctx < info.n_ctx_train || info.n_ctx_train <= 0 ? ctx : (long)info.n_ctx_train,
            budget);
    if (kvq_tune_kv(&tp, &rep)) {
        cli_fail("tune: the search failed");
        goto done;
    }
    int8_t kb[1024], vb[1024];
    double bits, kl, top1;
    const int L = kvq_tune_chosen(rep, kb, vb, &bits, &kl, &top1);
    printf("chosen (%.2f nominal bits, calibration KL %.5f, top-1 %.4f):", bits, kl, top1);
    for (int l = 0; l < L; l++) printf(" k%dv%d", kb[l], vb[l]);
    printf("\nuniform:");
    static const int B[3] = {2, 4, 8};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) printf(" k%dv%d=%.5f", B[i], B[j], kvq_tune_uniform_kl(rep, B[i], B[j]));
    printf("\n");
    if (out) {
        if (kvq_tune_write(rep, out, model)) {
            cli_fail("cannot write '%s'", out);
            goto done;
        }
        fprintf(stderr, "kvq tune: wrote %s and %s.json in %.0f s\n", out, out, cli_now() - t0);
    }
    rc = 0;
done:
    kvq_tune_report_free(rep);
    free(toks);
    kvq_model_free(m);
    return rc;
}
