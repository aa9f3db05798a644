/* kvq synth: a GGUF with random weights in a realistic shape (speed and memory only). */
#include <stdio.h>
#include <string.h>
#include "cli.h"

int cmd_synth(int argc, char **argv) {
    kvq_synth_params p = kvq_synth_default_params();
    long ctx = 0, seed = 1, threads = 0, verbose = 0, layers = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "--preset")) p.preset = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) p.out_path = v;
        else if (!strcmp(a, "--type")) p.weight_type = v;
        else if (!strcmp(a, "--tokenizer-from")) p.tokenizer_from = v;
        else if (!strcmp(a, "--ctx")) { if (!cli_int(a, v, 1, 131072, &ctx)) return 2; }
        else if (!strcmp(a, "--seed")) { if (!cli_int(a, v, 0, 0x7fffffffL, &seed)) return 2; }
        else if (!strcmp(a, "-t")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else if (!strcmp(a, "--layers")) { if (!cli_int(a, v, 1, 1024, &layers)) return 2; }
        else return cli_fail("synth: unknown option '%s'", a), 2;
    }
    if (!p.preset || !p.out_path) {
        fprintf(stderr, "usage: kvq synth --preset NAME --type TYPE -o OUT.gguf [--ctx N] [--layers N] [--tokenizer-from GGUF] [--seed S]\npresets:");
        for (const char *const *n = kvq_synth_presets(); *n; n++) fprintf(stderr, " %s", *n);
        fprintf(stderr, "\n");
        return 2;
    }
    cli_log lg = {(int)verbose + 1};
    p.n_ctx = (int32_t)ctx;
    p.seed = (uint64_t)seed;
    p.n_threads = (int32_t)threads;
    p.n_layer = (int32_t)layers;
    p.log = cli_log_cb;
    p.log_user = &lg;
    double t0 = cli_now();
    if (kvq_synth(&p)) return cli_fail("synth failed");
    fprintf(stderr, "kvq: wrote %s in %.1f s (random weights: for speed and memory measurements only)\n", p.out_path,
            cli_now() - t0);
    return 0;
}
