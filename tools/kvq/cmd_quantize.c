/* kvq quantize: a model into a smaller weight type.
 * - `--type TYPE` (rtn): round-to-nearest into a standard GGUF block type; the
 *   same bytes as a weight set made at load (kvq run --weights TYPE), which
 *   the golden tests check.
 * - `--bits N --method rtn|gptq|slim`: SliM-LLM's mixed-precision groups
 *   (src/quant/wquant.c), GPTQ and SliM-LLM calibrated on `-f` text, with a
 *   progress bar and a table of each matrix's error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

static void on_progress(void *user, int stage, int done, int total, const char *what) {
    (void)user;
    if (!isatty(STDERR_FILENO)) { /* in a log: a line per calibration pass and per layer */
        if ((stage == 0 && done == total) || (stage == 1 && done % 7 == 0))
            fprintf(stderr, "[%d/2] %s %d/%d\n", stage + 1, stage ? "matrices" : "calibration tokens", done, total);
        return;
    }
    const int w = 30, f = total ? done * w / total : w;
    fprintf(stderr, "\r[%d/2] [%.*s%*s] %d/%d %-12s", stage + 1, f, "##############################", w - f, "", done,
            total, what);
    if (done == total) fputc('\n', stderr);
}

static int mixed(const char *model, const char *tok, const char *file, const char *out, const char *method,
                 const char *type, long bits, long group, long n_tokens, long ctx, long threads, int verbose) {
    if (strcmp(method, "rtn") && !file)
        return cli_fail("quantize: --method %s needs calibration text (-f CALIB.txt)", method), 2;
    cli_log lg = {verbose};
    kvq_model *m = cli_load_model(model, tok, false, &lg);
    if (!m) return 1;
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    kvq_token *toks = NULL;
    int n = 0, rc = 1;
    if (file && cli_read_tokens(m, file, (size_t)64 << 20, &toks, &n)) goto done;
    if (n > n_tokens) n = (int)n_tokens;
    if (ctx > info.n_ctx_train && info.n_ctx_train > 0) ctx = info.n_ctx_train;
    kvq_wquant_params p = {.model = m, .tokens = toks, .n_tokens = n, .ctx = (int32_t)ctx, .method = method,
                           .bits = (int32_t)bits, .group = (int32_t)group,
                           .n_threads = threads ? (int32_t)threads : sysconf_cores(), .log = cli_log_cb,
                           .log_user = &lg, .progress = on_progress, .std_type = type};
    kvq_wquant_report *r = calloc(1, sizeof *r);
    if (!r) goto done;
    fprintf(stderr, "kvq quantize: %s, %d layers, %s %ld-bit groups of %ld, %d calibration tokens in windows of %ld\n",
            model, info.n_layer, method, bits, group, n, ctx);
    const double t0 = cli_now();
    if (kvq_wquantize(&p, out, r)) {
        cli_fail("quantize: failed");
        free(r);
        goto done;
    }
    static const char *const mn[7] = {"q", "k", "v", "o", "gate", "up", "down"};
    printf("layer  matrix  group  widths (N-1/N/N+1)  rel.err   KL(SBA)\n");
    for (int l = 0; l < r->n_layer; l++)
        for (int i = 0; i < 7; i++) {
            const kvq_wquant_layer *e = &r->mat[l][i];
            if (e->kept) {
                printf("%5d  %-6s  kept in its type (rows do not divide into groups of 32)\n", l, mn[i]);
                continue;
            }
            char err[32] = "n/a", kl[32] = "n/a";
            if (e->rel_err >= 0) snprintf(err, sizeof err, "%.5f", e->rel_err);
            if (e->kl >= 0) snprintf(kl, sizeof kl, "%.3g", e->kl);
            printf("%5d  %-6s  %5d  p = %-15d  %-8s  %s\n", l, mn[i], e->group, e->p, err, kl);
        }
    printf("layer matrices: %.2f MiB -> %.2f MiB; the quantized ones: %.3f bits per weight (codes, scales, zeros and "
           "bit maps included)%s\n", r->bytes_in / 1048576.0, r->bytes_out / 1048576.0,
           r->quant_values ? 8.0 * r->quant_bytes / r->quant_values : 0,
           r->quant_values < r->values ? "; some kept in their type (above)" : "");
    if (type) fprintf(stderr, "kvq: wrote %s (%s, %s) in %.1f s\n", out, type, method, cli_now() - t0);
    else fprintf(stderr, "kvq: wrote %s (slim%ld, %s) in %.1f s\n", out, bits, method, cli_now() - t0);
    if (strcmp(info.format, "gguf"))
        fprintf(stderr, "kvq: the input is not a GGUF, so the file has no tokenizer: run it as "
                        "kvq run -m %s --weights %s\n", model, out);
    free(r);
    rc = 0;
done:
    free(toks);
    kvq_model_free(m);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *method = NULL, *type = NULL, *file = NULL, *tok = NULL;
    long threads = 0, verbose = 0, bits = 0, group = 128, n_tokens = 32768, ctx = 512;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--method")) method = v;
        else if (!strcmp(a, "--type")) type = v;
        else if (!strcmp(a, "-f")) file = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "--bits")) { if (!cli_int(a, v, 2, 4, &bits)) return 2; }
        else if (!strcmp(a, "--group")) { if (!cli_int(a, v, 32, 2048, &group)) return 2; }
        else if (!strcmp(a, "--tokens")) { if (!cli_int(a, v, 1, 1 << 22, &n_tokens)) return 2; }
        else if (!strcmp(a, "--ctx")) { if (!cli_int(a, v, 16, 1 << 20, &ctx)) return 2; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else return cli_fail("quantize: unknown option '%s'", a), 2;
    }
    if (!model || !out || (!type && !bits))
        return cli_fail("quantize: needs -m MODEL -o OUT.gguf and --bits N (SliM-LLM groups) or --type TYPE "
                        "(a standard GGUF type)"), 2;
    if (!method) method = bits ? "slim" : "rtn"; /* the method of each path */
    if (strcmp(method, "rtn") && strcmp(method, "gptq") && strcmp(method, "slim"))
        return cli_fail("quantize: --method '%s' is not one of rtn, gptq, slim", method), 2;
    if (bits && type) return cli_fail("quantize: give --bits (mixed-precision groups) or --type, not both"), 2;
    if (group % 32) return cli_fail("quantize: --group %ld is not a multiple of 32", group), 2;
    if (bits) return mixed(model, tok, file, out, method, NULL, bits, group, n_tokens, ctx, threads, (int)verbose);
    if (!strcmp(method, "gptq"))
        return mixed(model, tok, file, out, method, type, 4, 32, n_tokens, ctx, threads, (int)verbose);
    if (strcmp(method, "rtn"))
        return cli_fail("quantize: --method %s writes its own mixed-precision type (--bits N)", method), 2;
    FILE *f = cli_fopen_text(model, "model");
    if (!f) return 1;
    char magic[4] = {0};
    if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, "GGUF", 4)) {
        if (f) fclose(f);
        return cli_fail("quantize: '%s' is not a GGUF file (--type copies a GGUF's metadata and tokenizer)", model), 1;
    }
    fclose(f);
    cli_log lg = {(int)verbose};
    double t0 = cli_now();
    if (kvq_quantize_gguf(model, out, type, threads ? (int)threads : sysconf_cores(), cli_log_cb, &lg))
        return cli_fail("quantize: failed"), 1;
    fprintf(stderr, "kvq: wrote %s (%s, rtn) in %.1f s\n", out, type, cli_now() - t0);
    return 0;
}
