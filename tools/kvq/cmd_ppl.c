/* kvq ppl: perplexity over windows of a text file, and the KL divergence of
 * the next-token distributions against a saved run (llama.cpp's protocol). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

#define LOGITS_MAGIC "KVQL"
#define LOGITS_VERSION 1u

typedef struct logits_hdr {
    char magic[4];
    uint32_t version, n_vocab, n_ctx, score_all;
    uint64_t n_pos;
} logits_hdr;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Byte length of the first n UTF-8 characters of s. */
static size_t utf8_prefix(const char *s, size_t len, long n) {
    size_t i = 0;
    for (long k = 0; k < n && i < len; k++) {
        i++;
        while (i < len && ((unsigned char)s[i] & 0xc0) == 0x80) i++;
    }
    return i;
}

int cmd_ppl(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *file = NULL, *kv = "f16", *save = NULL, *base = NULL, *weights = NULL;
    long n_ctx = 512, chars = -1, threads = 0, verbose = 0, batch = -1;
    bool json = false, score_all = false, split = false;
    int view = KVQ_VIEW_FULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--split")) { split = true; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) file = v;
        else if (!strcmp(a, "--kv")) kv = v;
        else if (!strcmp(a, "--view")) {
            if (!strcmp(v, "draft")) view = KVQ_VIEW_DRAFT;
            else if (!strcmp(v, "full")) view = KVQ_VIEW_FULL;
            else return cli_fail("--view expects 'full' or 'draft', got '%s'", v), 2;
        }
        else if (!strcmp(a, "--save-logits")) save = v;
        else if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--kl-base")) base = v;
        else if (!strcmp(a, "--ctx")) { if (!cli_int(a, v, 4, 1 << 20, &n_ctx)) return 2; }
        else if (!strcmp(a, "--chars")) { if (!cli_int(a, v, 1, 1L << 40, &chars)) return 2; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else if (!strcmp(a, "--batch")) { if (!cli_int(a, v, 1, 65536, &batch)) return 2; }
        else if (!strcmp(a, "--score")) {
            if (!strcmp(v, "all")) score_all = true;
            else if (!strcmp(v, "half")) score_all = false;
            else return cli_fail("--score expects 'half' or 'all', got '%s'", v), 2;
        } else return cli_fail("ppl: unknown option '%s'", a), 2;
    }
    if (!model || !file) return cli_fail("ppl: -m MODEL and -f TEXT are required"), 2;
    /* A quantizing cache stores a chunk only after the chunk's own attention,
     * so batched evaluation of a window would never read quantized K/V. By
     * default such caches are measured in decode mode, as generation reads them. */
    bool float_kv = !strncmp(kv, "f32", 3) || !strncmp(kv, "f16", 3);
    if (batch < 0) batch = float_kv ? 512 : 1;
    else if (batch > 1 && !float_kv)
        fprintf(stderr, "kvq: note: --batch %ld: each window attends to its own tokens before they are quantized; "
                        "--batch 1 measures the cache as decoding reads it\n", batch);

    FILE *tf = cli_fopen_text(file, "text");
    if (!tf) return 1;
    fseek(tf, 0, SEEK_END);
    long fsz = ftell(tf);
    rewind(tf);
    if (fsz < 0 || fsz > (1L << 30)) { fclose(tf); return cli_fail("text '%s' is unreadable or over 1 GiB", file); }
    char *text = malloc((size_t)fsz + 1);
    size_t tlen = text ? fread(text, 1, (size_t)fsz, tf) : 0;
    fclose(tf);
    if (!text || tlen != (size_t)fsz) { free(text); return cli_fail("cannot read '%s'", file); }
    if (chars > 0) tlen = utf8_prefix(text, tlen, chars);
    if (tlen == 0) { free(text); return cli_fail("text '%s' is empty", file); }

    cli_log lg = {(int)verbose};
    kvq_model *m = cli_load_model(model, tok, false, &lg);
    if (!m) { free(text); return 1; }
    int32_t wset = 0;
    if (weights && kvq_model_add_weight_set(m, weights, (int32_t)threads, &wset)) {
        cli_fail("cannot make a weight set from '%s' (a type such as q4_0, or a file of the same model)", weights);
        kvq_model_free(m);
        free(text);
        return 1;
    }
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    if (info.n_ctx_train > 0 && n_ctx > info.n_ctx_train)
        fprintf(stderr, "kvq: warning: --ctx %ld is past the model's training context (%d tokens); perplexity "
                        "there measures extrapolation\n", n_ctx, info.n_ctx_train);
    const int V = info.n_vocab;
    int rc = 1;
    kvq_ctx *c = NULL;
    kvq_token *toks = NULL, *win = NULL;
    float *logits = NULL, *lp = NULL, *blp = NULL;
    double *kls = NULL;
    FILE *fs = NULL, *fb = NULL;
    const bool has_bos = info.bos >= 0;

    /* half (llama.cpp): tokenize with BOS, cut into ctx windows, replace each
     * window's first token by BOS, score the second half.
     * all: tokenize without BOS, windows of BOS + (ctx-1) tokens, score all. */
    int n_tok = 0;
    bool add_bos = !score_all && info.add_bos;
    kvq_tokenize(m, text, tlen, add_bos, NULL, 0, &n_tok);
    toks = malloc(((size_t)n_tok + 1) * sizeof *toks);
    if (!toks || kvq_tokenize(m, text, tlen, add_bos, toks, n_tok, &n_tok)) { cli_fail("tokenization failed"); goto out; }
    const int body = score_all && has_bos ? (int)n_ctx - 1 : (int)n_ctx;
    int n_win = score_all ? (n_tok + body - 1) / body : n_tok / (int)n_ctx;
    if (n_win < 1) {
        cli_fail("the text has %d tokens, fewer than one window of %ld", n_tok, n_ctx);
        goto out;
    }
    kvq_ctx_params cp = kvq_ctx_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    cp.n_batch = (int32_t)(batch < n_ctx ? batch : n_ctx);
    cp.n_threads = (int32_t)threads;
    cp.kv_spec = kv;
    cp.log = cli_log_cb;
    cp.log_user = &lg;
    if (kvq_ctx_new(m, &cp, &c)) goto out;
    logits = malloc((size_t)n_ctx * V * sizeof(float));
    lp = malloc((size_t)V * sizeof(float));
    blp = malloc((size_t)V * sizeof(float));
    win = malloc((size_t)n_ctx * sizeof *win);
    kls = malloc(((size_t)n_win * n_ctx + 1) * sizeof *kls);
    if (!logits || !lp || !blp || !win || !kls) { cli_fail("out of memory"); goto out; }
    logits_hdr hdr = {{'K', 'V', 'Q', 'L'}, LOGITS_VERSION, (uint32_t)V, (uint32_t)n_ctx, score_all, 0};
    if (save) {
        fs = fopen(save, "wb");
        if (!fs || fwrite(&hdr, sizeof hdr, 1, fs) != 1) { cli_fail("cannot write '%s'", save); goto out; }
    }
    if (base) {
        logits_hdr bh;
        if (!(fb = cli_fopen_text(base, "logits file"))) goto out;
        if (fread(&bh, sizeof bh, 1, fb) != 1 || memcmp(bh.magic, LOGITS_MAGIC, 4) || bh.version != LOGITS_VERSION) {
            cli_fail("'%s' is not a kvq logits file", base);
            goto out;
        }
        if (bh.n_vocab != (uint32_t)V || bh.n_ctx != (uint32_t)n_ctx || bh.score_all != (uint32_t)score_all) {
            cli_fail("'%s' was saved with vocab %u, ctx %u, score %s; this run has vocab %d, ctx %ld, score %s", base,
                     bh.n_vocab, bh.n_ctx, bh.score_all ? "all" : "half", V, n_ctx, score_all ? "all" : "half");
            goto out;
        }
    }
    /* With a token policy (eviction, sparse attention), the first half of
     * each window is a prompt that ends, and the scored half is decoded one
     * token at a time: how generation would meet the policy. */
    if (split && score_all) { cli_fail("ppl: --split scores the second half of each window; it needs --score half"); goto out; }
    const bool policy = (split || strchr(kv, '+') != NULL) && !score_all;
    const bool tty = isatty(fileno(stderr));
    double nll = 0, nll2 = 0, t0 = cli_now();
    long n_scored = 0, n_kl = 0, top1 = 0;
    for (int w = 0; w < n_win; w++) {
        int len, first, start;
        if (score_all) {
            start = w * body;
            int nb = n_tok - start < body ? n_tok - start : body;
            len = 0;
            if (has_bos) win[len++] = info.bos;
            memcpy(win + len, toks + start, (size_t)nb * sizeof *win);
            len += nb;
            first = 0;
        } else {
            start = w * (int)n_ctx;
            len = (int)n_ctx;
            memcpy(win, toks + start, (size_t)len * sizeof *win);
            if (has_bos && info.add_bos) win[0] = info.bos;
            first = len / 2;
        }
        if (kvq_ctx_truncate(c, 0)) goto out;
        kvq_eval_opts eo = kvq_eval_default_opts();
        eo.view = view; /* the draft view reads hier's upper plane */
        eo.weight_set = wset;
        if (policy) {
            kvq_eval_opts po = eo;
            po.prompt_end = true;
            if (kvq_eval_ex(c, win, first + 1, &po, logits + (size_t)first * V)) goto out;
            for (int j = first + 1; j < len - 1; j++)
                if (kvq_eval_ex(c, &win[j], 1, &eo, logits + (size_t)j * V)) goto out;
        } else {
            eo.all_logits = true;
            if (kvq_eval_ex(c, win, len, &eo, logits)) goto out;
        }
        for (int j = first; j < len - 1; j++) {
            const kvq_token target = win[j + 1];
            kvq_log_softmax(logits + (size_t)j * V, V, lp);
            nll -= lp[target];
            nll2 += (double)lp[target] * lp[target];
            n_scored++;
            if (fs && (fwrite(&target, 4, 1, fs) != 1 || fwrite(lp, sizeof(float), (size_t)V, fs) != (size_t)V)) {
                cli_fail("write to '%s' failed", save);
                goto out;
            }
            if (fb) {
                kvq_token bt;
                if (fread(&bt, 4, 1, fb) != 1 || fread(blp, sizeof(float), (size_t)V, fb) != (size_t)V) {
                    cli_fail("'%s' holds fewer positions than this run scores", base);
                    goto out;
                }
                if (bt != target) {
                    cli_fail("'%s' was saved on other text or another tokenizer (position %ld)", base, n_scored);
                    goto out;
                }
                bool same;
                kls[n_kl++] = kvq_kl_div(blp, lp, V, &same);
                top1 += same;
            }
        }
        if (tty)
            fprintf(stderr, "\rkvq: window %d/%d  ppl %.4f", w + 1, n_win, exp(nll / (n_scored ? n_scored : 1)));
    }
    double secs = cli_now() - t0;
    if (tty) fputc('\n', stderr);
    if (fs) {
        hdr.n_pos = (uint64_t)n_scored;
        if (fseek(fs, 0, SEEK_SET) || fwrite(&hdr, sizeof hdr, 1, fs) != 1) { cli_fail("write to '%s' failed", save); goto out; }
    }
    double ppl = exp(nll / n_scored);
    /* standard error of ppl as llama.cpp's perplexity gives it: that of the
     * mean token NLL, carried through exp (ppl x its standard error) */
    const double mean = nll / n_scored, var = n_scored > 1 ? (nll2 / n_scored - mean * mean) : 0;
    const double ppl_se = n_scored > 1 && var > 0 ? ppl * sqrt(var / (double)(n_scored - 1)) : 0;
    double kl_mean = 0, kl_med = 0, kl_p99 = 0;
    if (n_kl) {
        for (long i = 0; i < n_kl; i++) kl_mean += kls[i];
        kl_mean /= n_kl;
        qsort(kls, (size_t)n_kl, sizeof *kls, cmp_double);
        kl_med = kls[n_kl / 2];
        kl_p99 = kls[(long)(0.99 * (n_kl - 1))];
    }
    kvq_kv_report r;
    kvq_ctx_kv_report(c, &r);
    if (json) {
        printf("{\"model\": \"%s\", \"kv\": \"%s\", \"ctx\": %ld, \"score\": \"%s\", \"windows\": %d, \"tokens\": %ld, "
               "\"ppl\": %.6f, \"ppl_stderr\": %.6f, \"nll_mean\": %.6f, \"mode\": \"%s\", \"kv_bytes_used\": %llu, ",
               model, r.spec, n_ctx, score_all ? "all" : "half", n_win, n_scored, ppl, ppl_se, nll / n_scored,
               policy ? "prompt+decode" : batch == 1 ? "decode" : "batch", (unsigned long long)r.bytes_used);
        if (n_kl)
            printf("\"kl_mean\": %.8f, \"kl_median\": %.8f, \"kl_p99\": %.8f, \"top1_agree\": %.6f, ", kl_mean, kl_med,
                   kl_p99, (double)top1 / n_kl);
        else
            printf("\"kl_mean\": null, \"kl_median\": null, \"kl_p99\": null, \"top1_agree\": null, ");
        printf("\"kv_bytes_per_token\": %.3f, \"kv_bits_per_value\": %.4f, \"seconds\": %.3f}\n", r.bytes_per_token,
               r.bits_per_value, secs);
    } else {
        printf("perplexity %.4f +/- %.4f over %ld tokens (%d windows of %ld, score %s, kv %s)\n", ppl, ppl_se,
               n_scored, n_win, n_ctx, score_all ? "all" : "half", r.spec);
        if (n_kl)
            printf("KL divergence vs base: mean %.6f, median %.6f, p99 %.6f; top-1 agreement %.4f\n", kl_mean, kl_med,
                   kl_p99, (double)top1 / n_kl);
        printf("kv: %.1f bytes/token, %.3f bits/value; %.1f tokens/s\n", r.bytes_per_token, r.bits_per_value,
               (double)n_win * n_ctx / secs);
    }
    rc = 0;
out:
    if (fs) fclose(fs);
    if (fb) fclose(fb);
    free(kls);
    free(win);
    free(lp);
    free(blp);
    free(logits);
    free(toks);
    free(text);
    kvq_ctx_free(c);
    kvq_model_free(m);
    return rc;
}
