#include "gen.h"

#include <string.h>
#include "cli.h"

static kvq_token next_token(cli_gen *g) {
    if (g->repeat_penalty != 1.0f && g->repeat_last_n > 0) {
        const kvq_token *hist;
        const int n = kvq_ctx_tokens(g->c, &hist), k = n < g->repeat_last_n ? n : g->repeat_last_n;
        kvq_repeat_penalty(g->logits, kvq_vocab_size(g->m), hist + n - k, k, g->repeat_penalty);
    }
    return kvq_sample(g->s, g->logits);
}

int cli_generate(cli_gen *g, kvq_token prev, int n_max, FILE *out, cli_text *text, cli_gen_out *r) {
    memset(r, 0, sizeof *r);
    r->last = prev;
    cli_text own = {0}, *t = text ? text : &own;
    size_t shown = t->len;
    t->safe = t->len;
    int rc = 0;
    kvq_model_info info;
    kvq_model_get_info(g->m, &info);
    char piece[512];
    for (; r->gen < n_max; r->gen++) {
        const kvq_token tok = next_token(g);
        if (kvq_token_is_eog(g->m, tok) || tok == info.bos) {
            r->stopped = true;
            break;
        }
        const int pl = kvq_token_to_piece(g->m, r->last, tok, piece, sizeof piece);
        if (pl > 0 && !cli_text_add(t, piece, (size_t)(pl < (int)sizeof piece ? pl : (int)sizeof piece))) {
            rc = cli_fail("out of memory");
            break;
        }
        r->last = tok;
        const bool hit = cli_text_scan(t, g->stop, g->n_stop);
        if (t->safe > shown && !hit) {
            fwrite(t->p + shown, 1, t->safe - shown, out);
            fflush(out);
            shown = t->safe;
        }
        if (hit) {
            r->stopped = true;
            r->gen++;
            break;
        }
        /* the last token need not be evaluated, unless something continues from it */
        if (r->gen + 1 == n_max && !g->eval_last) {
            r->gen++;
            break;
        }
        if (kvq_ctx_n_past(g->c) >= kvq_ctx_n_ctx(g->c)) {
            r->full = true;
            r->gen++;
            break;
        }
        if (kvq_eval_ex(g->c, &tok, 1, g->eo, g->logits)) {
            rc = cli_fail("evaluation failed");
            break;
        }
        r->decoded++;
    }
    /* what was held back for a possible stop string, unless it was one */
    cli_text_finish(t);
    if (t->len > shown) fwrite(t->p + shown, 1, t->len - shown, out);
    fflush(out);
    cli_text_free(&own);
    return rc;
}
