/* Continuous batching (kvq.h): the public face of a multi-context forward
 * pass. The pass itself is forward.c; this file owns the shared work
 * buffers and checks each item before it joins the pass. */
#include <stdlib.h>
#include <string.h>
#include "../core/cpu.h"
#include "context.h"

struct kvq_batch {
    const kvq_model *m;
    kvq_logger lg;
    int32_t n_tokens, n_seqs, n_threads;
    kvq_work w;
    kvq_fwd_item *fwd;   /* [n_seqs] */
    int32_t *src;        /* [n_seqs] the caller's item behind each forward item */
};

kvq_batch_params kvq_batch_default_params(void) {
    return (kvq_batch_params){.n_tokens = 256, .n_seqs = 64};
}

void kvq_batch_free(kvq_batch *b) {
    if (!b) return;
    kvq_work_free(&b->w);
    free(b->fwd);
    free(b->src);
    free(b);
}

kvq_status kvq_batch_new(const kvq_model *m, const kvq_batch_params *p, kvq_batch **out) {
    *out = NULL;
    kvq_logger lg = {p->log, p->log_user};
    if (m->vocab_only || !m->layers) return kvq_err(&lg, KVQ_ERR_ARG, "model was loaded without weights");
    if (p->n_tokens < 1 || p->n_tokens > 65536)
        return kvq_err(&lg, KVQ_ERR_ARG, "batch of %d tokens is out of range [1, 65536]", p->n_tokens);
    if (p->n_seqs < 1 || p->n_seqs > p->n_tokens)
        return kvq_err(&lg, KVQ_ERR_ARG, "batch of %d sequences is out of range [1, %d]", p->n_seqs, p->n_tokens);
    if (p->n_threads < 0 || p->n_threads > 1024)
        return kvq_err(&lg, KVQ_ERR_ARG, "thread count %d is out of range [0, 1024]", p->n_threads);
    kvq_batch *b = calloc(1, sizeof *b);
    if (!b) return kvq_err(&lg, KVQ_ERR_NOMEM, "out of memory");
    b->m = m;
    b->lg = lg;
    b->n_tokens = p->n_tokens;
    b->n_seqs = p->n_seqs;
    b->n_threads = p->n_threads ? p->n_threads : kvq_n_cores();
    b->fwd = calloc((size_t)p->n_seqs, sizeof *b->fwd);
    b->src = calloc((size_t)p->n_seqs, sizeof *b->src);
    if (!b->fwd || !b->src || kvq_work_init(&b->w, m, p->n_tokens, p->n_seqs)) {
        kvq_batch_free(b);
        return kvq_err(&lg, KVQ_ERR_NOMEM, "out of memory for a batch of %d tokens", p->n_tokens);
    }
    *out = b;
    return KVQ_OK;
}

kvq_status kvq_batch_eval(kvq_batch *b, kvq_batch_item *items, int32_t n_items) {
    if (n_items < 0 || n_items > b->n_seqs || (n_items && !items))
        return kvq_err(&b->lg, KVQ_ERR_ARG, "batch of %d items is out of range [0, %d]", n_items, b->n_seqs);
    int64_t rows = 0;
    for (int i = 0; i < n_items; i++) rows += items[i].n > 0 ? items[i].n : 0;
    if (rows > b->n_tokens)
        return kvq_err(&b->lg, KVQ_ERR_ARG, "batch of %lld tokens exceeds its capacity of %d", (long long)rows,
                       b->n_tokens);
    kvq_status first = KVQ_OK;
    int nf = 0;
    for (int i = 0; i < n_items; i++) {
        kvq_batch_item *it = &items[i];
        kvq_ctx *c = it->ctx;
        kvq_eval_opts o = kvq_eval_default_opts();
        o.prompt_end = it->prompt_end;
        if (!c) {
            it->status = kvq_err(&b->lg, KVQ_ERR_ARG, "batch item %d has no context", i);
        } else if (c->m != b->m) {
            it->status = kvq_err(&c->lg, KVQ_ERR_ARG, "batch item %d belongs to another model", i);
        } else if (it->n > c->n_batch) {
            it->status = kvq_err(&c->lg, KVQ_ERR_ARG, "batch item %d has %d tokens, more than its context's batch %d",
                                 i, it->n, c->n_batch);
        } else {
            it->status = kvq_ctx_check_eval(c, it->tokens, it->n, &o);
            for (int j = 0; j < i && !it->status; j++)
                if (items[j].ctx == c)
                    it->status = kvq_err(&c->lg, KVQ_ERR_ARG, "batch items %d and %d share a context", j, i);
        }
        if (it->status) {
            if (!first) first = it->status;
            continue;
        }
        b->fwd[nf] = (kvq_fwd_item){.c = c, .tok = it->tokens, .n = it->n, .o = o, .logits = it->logits};
        b->src[nf++] = i;
    }
    if (!nf) return first;
    kvq_status st = kvq_forward(&b->w, b->n_threads, b->fwd, nf);
    for (int f = 0; f < nf; f++) items[b->src[f]].status = b->fwd[f].st;
    return first ? first : st;
}
