/* kvq quantize: a model into a smaller weight type. Round-to-nearest into
 * the standard GGUF block types is what this command does today; it writes
 * the same bytes as a weight set made with the same type at load time
 * (kvq run --weights TYPE), which the golden tests check. GPTQ and SliM-LLM
 * are the --method values still to come. */
#include <stdio.h>
#include <string.h>
#include "cli.h"

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *method = "rtn", *type = NULL;
    long threads = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--method")) method = v;
        else if (!strcmp(a, "--type")) type = v;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else return cli_fail("quantize: unknown option '%s'", a), 2;
    }
    if (!model || !out || !type) return cli_fail("quantize: needs -m MODEL.gguf --type TYPE -o OUT.gguf"), 2;
    if (strcmp(method, "rtn"))
        return cli_fail("quantize: method '%s' is not available yet (rtn is)", method), 2;
    FILE *f = fopen(model, "rb");
    char magic[4] = {0};
    if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, "GGUF", 4)) {
        if (f) fclose(f);
        return cli_fail("quantize: '%s' is not a GGUF file (rtn copies a GGUF's metadata and tokenizer)", model), 1;
    }
    fclose(f);
    cli_log lg = {(int)verbose};
    double t0 = cli_now();
    if (kvq_quantize_gguf(model, out, type, threads ? (int)threads : sysconf_cores(), cli_log_cb, &lg))
        return cli_fail("quantize: failed"), 1;
    fprintf(stderr, "kvq: wrote %s (%s, rtn) in %.1f s\n", out, type, cli_now() - t0);
    return 0;
}
