/* kvq tokenize: token ids (and pieces) of a text, for checking tokenizers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *text = NULL, *file = NULL;
    bool bos = false, pieces = false, special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--bos")) { bos = true; continue; }
        if (!strcmp(a, "--pieces")) { pieces = true; continue; }
        if (!strcmp(a, "--special")) { special = true; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) text = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) file = v;
        else return cli_fail("tokenize: unknown option '%s'", a), 2;
    }
    if (!model || !text == !file) return cli_fail("tokenize: -m MODEL and one of -p TEXT or -f FILE are required"), 2;
    char *buf = NULL;
    size_t tlen = text ? strlen(text) : 0;
    if (file) {
        FILE *f = cli_fopen_text(file, "text");
        if (!f) return 1;
        bool too_long;
        buf = cli_read_all(f, (size_t)1 << 30, &tlen, &too_long);
        fclose(f);
        if (!buf) return cli_fail("tokenize: cannot read '%s' (over 1 GiB, or out of memory)", file);
        text = buf;
    }
    cli_log lg = {0};
    kvq_model *m = cli_load_model(model, tok, true, &lg);
    if (!m) { free(buf); return 1; }
    int n = 0;
    kvq_tokenize_ex(m, text, tlen, bos, special, NULL, 0, &n);
    kvq_token *t = malloc(((size_t)n + 1) * sizeof *t);
    int rc = 1;
    if (t && kvq_tokenize_ex(m, text, tlen, bos, special, t, n, &n) == KVQ_OK) {
        for (int i = 0; i < n; i++) {
            if (pieces) {
                char buf[256];
                int l = kvq_token_to_piece(m, -1, t[i], buf, sizeof buf);
                printf("%d '%.*s'\n", t[i], l > 0 ? (l < 256 ? l : 256) : 0, buf);
            } else {
                printf("%s%d", i ? " " : "", t[i]);
            }
        }
        if (!pieces) printf("\n");
        rc = 0;
    }
    free(t);
    free(buf);
    kvq_model_free(m);
    return rc;
}
