/* An inference context: one sequence, its KV cache and its work buffers. */
#ifndef KVQ_MODEL_CONTEXT_H
#define KVQ_MODEL_CONTEXT_H
#include "../kernels/ops.h"
#include "../kv/kv.h"
#include "model.h"

struct kvq_ctx {
    const struct kvq_model *m;
    kvq_logger lg;
    int32_t n_ctx, n_batch, n_threads;
    int32_t n_past;          /* position of the next token */
    kvq_kv_cache *kv;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *cs;
    void *qbuf;
    kvq_attn_tap_fn tap;
    void *tap_user;
};

/* One forward pass over n <= n_batch tokens at positions n_past.. ; logits
 * for the last row (all_rows=false) or all rows are written when non-NULL. */
kvq_status kvq_forward(struct kvq_ctx *c, const kvq_token *tok, int n, bool all_rows, float *logits);

#endif
