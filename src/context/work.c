/* Work buffers of a forward pass: activations for up to cap rows, and the
 * activation scratch of the largest product of every weight set. */
#include <stdlib.h>
#include "context.h"

static size_t qbuf_size(const kvq_model *m, int n_rows) {
    size_t qb = 0;
    for (int set = 0; set < kvq_model_n_weight_sets(m); set++) {
        const kvq_layer_weights *L = kvq_model_set_layers(m, set);
        const kvq_tensor *out = kvq_model_set_output(m, set);
        for (int l = 0; l < m->hp.n_layer; l++) {
            const kvq_layer_weights *w = &L[l];
            const kvq_tensor *all[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down, out};
            for (int i = 0; i < 8; i++) {
                size_t s = kvq_matmul_qbuf_size(all[i]->type, all[i]->ne[0], n_rows);
                if (s > qb) qb = s;
            }
        }
    }
    return qb;
}

void kvq_work_free(kvq_work *w) {
    free(w->x); free(w->xb); free(w->q); free(w->k); free(w->v); free(w->att); free(w->hb); free(w->hb2);
    free(w->cs); free(w->qbuf); free(w->pos); free(w->logits);
    *w = (kvq_work){0};
}

kvq_status kvq_work_init(kvq_work *w, const struct kvq_model *m, int32_t cap, int32_t logit_rows) {
    const kvq_hparams *h = &m->hp;
    const size_t B = (size_t)cap, E = (size_t)h->n_embd, Q = (size_t)h->n_head * h->head_dim,
                 KV = (size_t)h->n_head_kv * h->head_dim, F = (size_t)h->n_ff;
    *w = (kvq_work){0};
    w->cap = cap;
    w->x = malloc(B * E * sizeof(float));
    w->xb = malloc(B * (E > Q ? E : Q) * sizeof(float));
    w->q = malloc(B * Q * sizeof(float));
    w->k = malloc(B * KV * sizeof(float));
    w->v = malloc(B * KV * sizeof(float));
    w->att = malloc(B * Q * sizeof(float));
    w->hb = malloc(B * F * sizeof(float));
    w->hb2 = malloc(B * F * sizeof(float));
    w->cs = malloc(B * (size_t)h->n_rot * sizeof(float)); /* cos/sin per row */
    w->pos = malloc(B * sizeof *w->pos);
    if (logit_rows > 0) w->logits = malloc((size_t)logit_rows * (size_t)h->n_vocab * sizeof(float));
    size_t qb = qbuf_size(m, cap);
    w->qbuf = malloc(qb ? qb : 1);
    if (!w->x || !w->xb || !w->q || !w->k || !w->v || !w->att || !w->hb || !w->hb2 || !w->cs || !w->qbuf || !w->pos ||
        (logit_rows > 0 && !w->logits)) {
        kvq_work_free(w);
        return KVQ_ERR_NOMEM;
    }
    return KVQ_OK;
}
