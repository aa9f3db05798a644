/* kvq info: what a model file holds and what a KV configuration costs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

int cmd_info(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *specs[16];
    int n_specs = 0;
    long n_ctx = 0, verbose = 0;
    bool tensors = false, json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!strcmp(a, "--tensors")) { tensors = true; continue; }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (a[0] != '-') {
            if (model) return cli_fail("info: more than one model given"), 2;
            model = a;
            continue;
        }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "--ctx")) { if (!cli_int(a, v, 1, 1 << 24, &n_ctx)) return 2; }
        else if (!strcmp(a, "--kv")) {
            if (n_specs == 16) return cli_fail("info: at most 16 --kv specs"), 2;
            specs[n_specs++] = v;
        } else return cli_fail("info: unknown option '%s'", a), 2;
    }
    if (!model) return cli_fail("info: no model given (kvq info MODEL)"), 2;
    if (!n_specs) { specs[0] = "f32"; specs[1] = "f16"; n_specs = 2; }
    cli_log lg = {(int)verbose};
    kvq_model *m = cli_load_model(model, tok, false, &lg);
    if (!m) return 1;
    kvq_model_info in;
    kvq_model_get_info(m, &in);
    if (!n_ctx) n_ctx = in.n_ctx_train;
    char wb[32];
    cli_human_bytes((double)in.weight_bytes, wb, sizeof wb);
    /* per-type summary of the weights */
    int nt = kvq_model_tensor_count(m);
    char types[512] = "";
    {
        char names[16][8] = {{0}};
        int counts[16] = {0}, nn = 0;
        char line[256];
        for (int i = 0; i < nt; i++) {
            kvq_model_tensor_desc(m, i, line, sizeof line);
            char ty[8];
            if (sscanf(line, "%*s %7s", ty) != 1) continue;
            int k = 0;
            while (k < nn && strcmp(names[k], ty)) k++;
            if (k == nn && nn < 16) strcpy(names[nn++], ty);
            if (k < 16) counts[k]++;
        }
        for (int k = 0; k < nn; k++) {
            size_t o = strlen(types);
            snprintf(types + o, sizeof types - o, "%s%s x%d", k ? ", " : "", names[k], counts[k]);
        }
    }
    if (json) {
        printf("{\"model\": \"%s\", \"format\": \"%s\", \"arch\": \"%s\", \"name\": \"%s\", \"n_vocab\": %d, "
               "\"n_embd\": %d, \"n_layer\": %d, \"n_head\": %d, \"n_head_kv\": %d, \"head_dim\": %d, \"n_ff\": %d, "
               "\"n_ctx_train\": %d, \"rope_theta\": %g, \"rope_neox\": %s, \"rope_scaling\": \"%s\", "
               "\"n_params\": %llu, \"weight_bytes\": %llu, \"tokenizer\": \"%s\", \"bos\": %d, \"eos\": %d, \"kv\": [",
               model, in.format, in.arch, in.name, in.n_vocab, in.n_embd, in.n_layer, in.n_head, in.n_head_kv,
               in.head_dim, in.n_ff, in.n_ctx_train, in.rope_theta, in.rope_neox ? "true" : "false", in.rope_scaling,
               (unsigned long long)in.n_params, (unsigned long long)in.weight_bytes, in.tokenizer, in.bos, in.eos);
    } else {
        printf("model        %s (%s, %s)\n", model, in.format, in.name[0] ? in.name : "unnamed");
        printf("arch         %s: %d layers, dim %d, %d heads / %d KV heads of %d, ffn %d, vocab %d, ctx %d\n",
               in.arch, in.n_layer, in.n_embd, in.n_head, in.n_head_kv, in.head_dim, in.n_ff, in.n_vocab,
               in.n_ctx_train);
        printf("rope         theta %g, %s, scaling %s (freq scale %g); rms eps %g%s%s\n", in.rope_theta,
               in.rope_neox ? "halves (neox)" : "adjacent pairs", in.rope_scaling, in.rope_freq_scale, in.norm_eps,
               in.qkv_bias ? "; qkv bias" : "", in.tied_embeddings ? "; tied embeddings" : "");
        printf("weights      %llu parameters, %s; %s\n", (unsigned long long)in.n_params, wb, types);
        printf("tokenizer    %s, %d tokens, bos %d, eos %d, add_bos %s\n", in.tokenizer, in.n_vocab, in.bos, in.eos,
               in.add_bos ? "yes" : "no");
        printf("kernels      %s\n", kvq_isa_name());
    }
    int rc = 0;
    for (int i = 0; i < n_specs; i++) {
        kvq_kv_report r;
        char err[256] = "";
        if (kvq_kv_describe(m, specs[i], (int)n_ctx, &r, err, sizeof err)) {
            rc = cli_fail("--kv %s: %s", specs[i], err);
            break;
        }
        char res[32];
        cli_human_bytes((double)r.bytes_reserved, res, sizeof res);
        /* shared predictors pay off once the cache they shrink outgrows them: at the
         * steady-state rates (a long context, windows amortized away), the tokens
         * whose saving against f16 equals the predictors' bytes */
        long even = -1;
        if (r.aux_bytes) {
            kvq_kv_report a, f;
            if (!kvq_kv_describe(m, specs[i], 1 << 20, &a, err, sizeof err) &&
                !kvq_kv_describe(m, "f16", 1 << 20, &f, err, sizeof err) && f.bytes_per_token > a.bytes_per_token)
                even = (long)ceil((double)r.aux_bytes / (f.bytes_per_token - a.bytes_per_token));
        }
        if (json) {
            printf("%s{\"spec\": \"%s\", \"ctx\": %ld, \"bytes_per_token\": %.3f, \"bits_per_value\": %.4f, "
                   "\"bytes_reserved\": %llu, \"bytes_alloc_max\": %llu, \"aux_bytes\": %llu, "
                   "\"break_even_tokens\": %ld, \"held_max\": %d}",
                   i ? ", " : "", r.spec, n_ctx, r.bytes_per_token, r.bits_per_value,
                   (unsigned long long)r.bytes_reserved, (unsigned long long)r.bytes_alloc_max,
                   (unsigned long long)r.aux_bytes, even, r.held_max);
        } else {
            if (r.held_max)
                printf("kv %-9s %.1f bytes/token, %.3f bits/value; holds at most %d tokens (sinks rounded up to a "
                       "page, the window, under a page more): %s at any context length (%ld here)\n",
                       r.spec, r.bytes_per_token, r.bits_per_value, r.held_max, res, n_ctx);
            else
                printf("kv %-9s %.1f bytes/token, %.3f bits/value; %s for %ld tokens\n", r.spec, r.bytes_per_token,
                       r.bits_per_value, res, n_ctx);
            if (r.aux_bytes) {
                char ab[32];
                cli_human_bytes((double)r.aux_bytes, ab, sizeof ab);
                if (even > 0)
                    printf("   + %s held once (predictors, shared by all contexts); they pay for themselves against f16 beyond about %ld tokens\n",
                           ab, even);
                else
                    printf("   + %s held once (predictors, shared by all contexts); never less than f16 with them\n", ab);
            }
        }
    }
    if (json) printf("]}\n");
    if (tensors && !json) {
        char line[256];
        for (int i = 0; i < nt; i++)
            if (!kvq_model_tensor_desc(m, i, line, sizeof line)) printf("  %s\n", line);
    }
    kvq_model_free(m);
    return rc;
}
