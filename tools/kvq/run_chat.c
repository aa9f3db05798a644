/* kvq run -i: a conversation on standard input, each turn rendered with the
 * model's chat template (the server's renderer, tools/kvq/serve/chat.c).
 * The context keeps the conversation: a turn evaluates only what its
 * rendering adds to the tokens already in the cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "run_chat.h"
#include "cli.h"

static bool add_msg(srv_msg **msgs, int *n, const char *role, const char *content, size_t len) {
    srv_msg *nm = realloc(*msgs, (size_t)(*n + 1) * sizeof *nm);
    if (!nm) return false;
    *msgs = nm;
    char *r = strdup(role), *c = malloc(len + 1);
    if (!r || !c) { free(r); free(c); return false; }
    memcpy(c, content, len);
    c[len] = 0;
    nm[*n] = (srv_msg){r, c};
    (*n)++;
    return true;
}

/* The rendered conversation's tokens (BOS first when the model adds one);
 * NULL with the reason printed. */
static kvq_token *render(const kvq_model *m, srv_tpl tpl, const srv_msg *msgs, int n, int *nt) {
    srv_render rd;
    char err[256];
    if (srv_chat_render(tpl, msgs, n, &rd, err, sizeof err)) {
        cli_fail("chat: %s", err);
        return NULL;
    }
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    int total = info.add_bos && info.bos >= 0, k;
    for (int i = 0; i < rd.n_seg; i++) {
        kvq_tokenize_ex(m, rd.buf + rd.seg[i].off, rd.seg[i].n, false, rd.seg[i].special, NULL, 0, &k);
        total += k;
    }
    kvq_token *t = malloc(((size_t)total + 1) * sizeof *t);
    *nt = 0;
    if (t && info.add_bos && info.bos >= 0) t[(*nt)++] = info.bos;
    for (int i = 0; t && i < rd.n_seg; i++) {
        if (kvq_tokenize_ex(m, rd.buf + rd.seg[i].off, rd.seg[i].n, false, rd.seg[i].special, t + *nt, total - *nt,
                            &k)) {
            free(t);
            t = NULL;
            break;
        }
        *nt += k;
    }
    srv_render_free(&rd);
    if (!t) cli_fail("chat: cannot tokenize the conversation");
    return t;
}

int cli_chat(cli_gen *g, srv_tpl tpl, const char *system, int n_gen) {
    srv_msg *msgs = NULL;
    int n_msgs = 0, rc = 0;
    if (system && !add_msg(&msgs, &n_msgs, "system", system, strlen(system))) return cli_fail("out of memory");
    const bool tty = isatty(0);
    fprintf(stderr, "kvq: chat (template %s); an empty line or end of input ends it\n", srv_tpl_name(tpl));
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (tty) fprintf(stderr, "> ");
        ssize_t len = getline(&line, &cap, stdin);
        if (len <= 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) break;
        if (!add_msg(&msgs, &n_msgs, "user", line, (size_t)len)) { rc = cli_fail("out of memory"); break; }
        int nt;
        kvq_token *t = render(g->m, tpl, msgs, n_msgs, &nt);
        if (!t) { rc = 1; break; }
        /* what the cache already holds of this rendering is kept */
        const kvq_token *hist;
        const int n_hist = kvq_ctx_tokens(g->c, &hist);
        int keep = 0;
        while (keep < n_hist && keep < nt - 1 && hist[keep] == t[keep]) keep++;
        if (nt >= kvq_ctx_n_ctx(g->c)) {
            free(t);
            rc = cli_fail("chat: the conversation (%d tokens) no longer fits the context of %d (use --ctx)", nt,
                          kvq_ctx_n_ctx(g->c));
            break;
        }
        kvq_eval_opts po = *g->eo;
        po.prompt_end = true;
        if (kvq_ctx_truncate(g->c, keep) || kvq_eval_ex(g->c, t + keep, nt - keep, &po, g->logits)) {
            free(t);
            rc = cli_fail("chat: evaluation failed");
            break;
        }
        free(t);
        cli_text reply = {0};
        cli_gen_out r;
        rc = cli_generate(g, -1, n_gen, stdout, &reply, &r);
        fputc('\n', stdout);
        fflush(stdout);
        const bool ok = !rc && add_msg(&msgs, &n_msgs, "assistant", reply.p ? reply.p : "", reply.len);
        cli_text_free(&reply);
        if (!ok) { if (!rc) rc = cli_fail("out of memory"); break; }
        if (r.full) { rc = cli_fail("chat: the context of %d tokens is full", kvq_ctx_n_ctx(g->c)); break; }
    }
    free(line);
    for (int i = 0; i < n_msgs; i++) {
        free(msgs[i].role);
        free(msgs[i].content);
    }
    free(msgs);
    return rc;
}
