/* An inference context: one sequence, its KV cache, its token history and
 * its work buffers. */
#ifndef KVQ_CONTEXT_CONTEXT_H
#define KVQ_CONTEXT_CONTEXT_H
#include "../kernels/ops.h"
#include "../kv/kv.h"
#include "../model/model.h"
#include "threads.h"

/* Activation buffers of a forward pass over up to cap rows (work.c). A
 * context owns one for its own chunks; a kvq_batch owns one for the rows of
 * all the contexts it runs together. */
typedef struct kvq_work {
    int32_t cap;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *cs, *logits;
    int32_t *pos;   /* [cap] the position of each row */
    void *qbuf;
} kvq_work;

/* logit_rows: rows of logits a pass of several items may gather (0: a
 * single-item pass writes into its caller's buffer). */
kvq_status kvq_work_init(kvq_work *w, const struct kvq_model *m, int32_t cap, int32_t logit_rows);
void       kvq_work_free(kvq_work *w);

struct kvq_ctx {
    const struct kvq_model *m;
    kvq_logger lg;
    int32_t n_ctx, n_batch, n_threads;
    kvq_thread_gov gov;      /* decode steps' thread count */
    int32_t n_past;          /* position of the next token */
    int32_t n_past_final;    /* positions verified: n_past minus the pending speculative tokens */
    int32_t n_sets;          /* weight sets the work buffers were sized for */
    uint64_t kv_alloc_max;   /* KV bytes_allocated at a full context */
    kvq_token *tokens;       /* [n_ctx] the token at each position */
    float *logits;           /* [n_vocab] the last position's logits, when has_logits */
    bool has_logits;
    kvq_kv_cache *kv;
    kvq_work w;              /* allocated on the first kvq_eval: a context run only in batches has none */
    kvq_attn_tap_fn tap;
    void *tap_user;
    kvq_kv_tap_fn kv_tap;
    void *kv_tap_user;
    kvq_linear_tap_fn lin_tap;
    void *lin_tap_user;
};

/* One context's share of a forward pass: n tokens at positions n_past..,
 * and where its logits go (the last row, or all rows with o.all_logits). */
typedef struct kvq_fwd_item {
    struct kvq_ctx *c;
    const kvq_token *tok;
    int32_t n;
    kvq_eval_opts o;
    float *logits;     /* NULL: none wanted */
    kvq_status st;     /* set by kvq_forward */
} kvq_fwd_item;

/* One forward pass over the rows of every item (sum of n <= w->cap; each n
 * <= its context's n_batch), with the weights read once for all of them.
 * Items must share the model and weight set. An item whose KV step fails
 * gets its status set and is left as it was; the others go on. Returns the
 * first failure, or KVQ_OK. prompt_end is honoured as given. */
kvq_status kvq_forward(kvq_work *w, int n_threads, kvq_fwd_item *it, int n_items);

/* The checks kvq_eval_ex applies to a call before any work. */
kvq_status kvq_ctx_check_eval(struct kvq_ctx *c, const kvq_token *tokens, int n, const kvq_eval_opts *o);

#endif
