/* kvq calibrate aqua: flags for AQUA-KV's predictor fit (src/tune/aqua_calib.c),
 * a progress bar, and the per-layer table of held-out predictor quality. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

static void on_progress(void *user, int stage, int done, int total, const char *msg) {
    (void)user;
    /* a redrawn bar on a terminal; in a log, only the finished steps of the fit */
    if (!isatty(STDERR_FILENO)) {
        if (stage == 2) fprintf(stderr, "[2/2] %d/%d %s\n", done, total, msg);
        return;
    }
    const int w = 30, f = total ? done * w / total : w;
    fprintf(stderr, "\r[%d/2] [%.*s%*s] %d/%d %s   ", stage, f, "##############################", w - f, "", done, total, msg);
    if (done == total) fputc('\n', stderr);
}

int cmd_calibrate(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "aqua"))
        return cli_fail("calibrate: the only calibration is 'aqua' (kvq calibrate aqua -m MODEL -f CALIB.txt -o PRED.gguf)"), 2;
    const char *model = NULL, *tok = NULL, *file = NULL, *out = NULL, *quant = "higgs";
    long n_tokens = 16384, ctx = 512, bits = 2, threads = 0, verbose = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "-f")) file = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--quantizer")) quant = v;
        else if (!strcmp(a, "--tokens")) { if (!cli_int(a, v, 64, 1 << 22, &n_tokens)) return 2; }
        else if (!strcmp(a, "--ctx")) { if (!cli_int(a, v, 16, 1 << 20, &ctx)) return 2; }
        else if (!strcmp(a, "--bits")) { if (!cli_int(a, v, 2, 4, &bits)) return 2; }
        else if (!strcmp(a, "-t")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else return cli_fail("calibrate: unknown option '%s'", a), 2;
    }
    if (!model || !file || !out) return cli_fail("calibrate aqua: -m MODEL -f CALIB.txt -o PRED.gguf are required"), 2;
    cli_log lg = {(int)verbose};
    kvq_model *m = cli_load_model(model, tok, false, &lg);
    if (!m) return 1;
    int rc = 1;
    kvq_token *toks = NULL;
    int n = 0;
    if (cli_read_tokens(m, file, (size_t)64 << 20, &toks, &n)) goto done;
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    kvq_aqua_calib_params p = {.model = m, .tokens = toks, .n_tokens = n < n_tokens ? n : (int32_t)n_tokens,
                               .ctx = (int32_t)ctx, .bits = (int32_t)bits, .n_threads = (int32_t)threads,
                               .quantizer = quant, .log = cli_log_cb, .log_user = &lg, .progress = on_progress};
    if (ctx > info.n_ctx_train && info.n_ctx_train > 0) p.ctx = info.n_ctx_train;
    kvq_aqua_calib_report *r = calloc(1, sizeof *r);
    double t0 = cli_now();
    fprintf(stderr, "kvq calibrate aqua: %s, %d layers, KV width %d, %d tokens in windows of %d, %ld-bit %s residuals\n",
            model, info.n_layer, info.n_head_kv * info.head_dim, p.n_tokens, p.ctx, bits, quant);
    if (!r || kvq_aqua_calibrate(&p, out, r)) { cli_fail("calibration failed"); free(r); goto done; }
    printf("layer  relMSE(k)  relMSE(v)  EV k<-k(l-1)  EV v<-k(l)  EV v<-[k(l),v(l-1)]   (held out: %d tokens)\n",
           r->n_heldout);
    for (int l = 1; l < r->n_layer; l++)
        printf("%5d  %9.4f  %9.4f  %12.3f  %10.3f  %19.3f\n", l, r->relmse_k[l], r->relmse_v[l], r->ev_k[l],
               r->ev_v_keys[l], r->ev_v[l]);
    fprintf(stderr, "kvq calibrate aqua: wrote %s in %.1f s\n", out, cli_now() - t0);
    free(r);
    rc = 0;
done:
    free(toks);
    kvq_model_free(m);
    return rc;
}
