/* An inference context: one sequence, its KV cache, its token history and
 * its work buffers. */
#ifndef KVQ_CONTEXT_CONTEXT_H
#define KVQ_CONTEXT_CONTEXT_H
#include "../kernels/ops.h"
#include "../kv/kv.h"
#include "../model/model.h"

struct kvq_ctx {
    const struct kvq_model *m;
    kvq_logger lg;
    int32_t n_ctx, n_batch, n_threads;
    int32_t n_past;          /* position of the next token */
    int32_t n_past_final;    /* positions verified: n_past minus the pending speculative tokens */
    int32_t n_sets;          /* weight sets the work buffers were sized for */
    uint64_t kv_alloc_max;   /* KV bytes_allocated at a full context */
    kvq_token *tokens;       /* [n_ctx] the token at each position */
    float *logits;           /* [n_vocab] the last position's logits, when has_logits */
    bool has_logits;
    kvq_kv_cache *kv;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *cs;
    int32_t *pos;            /* [n_batch] positions of the chunk in flight */
    void *qbuf;
    kvq_attn_tap_fn tap;
    void *tap_user;
    kvq_kv_tap_fn kv_tap;
    void *kv_tap_user;
    kvq_linear_tap_fn lin_tap;
    void *lin_tap_user;
};

/* One forward pass over n <= n_batch tokens at positions n_past.. through
 * the KV step protocol; logits for the last row (o->all_logits false) or all
 * rows are written when non-NULL. prompt_end is honoured as given (the
 * caller passes it on the last chunk only). */
kvq_status kvq_forward(struct kvq_ctx *c, const kvq_token *tok, int n, const kvq_eval_opts *o, float *logits);

#endif
