/* Weight sets: further weights for the same architecture, which a forward
 * pass selects (QuantSpec drafts on a 4-bit set of the model it verifies
 * with). A set is made by requantizing the large matrices at load, or taken
 * from another file of the same model; small tensors are shared views. */
#include <stdlib.h>
#include <string.h>
#include "../quant/requant.h"
#include "model.h"

const kvq_layer_weights *kvq_model_set_layers(const struct kvq_model *m, int set) {
    return set == 0 ? m->layers : m->sets[set - 1].layers;
}
const kvq_tensor *kvq_model_set_output(const struct kvq_model *m, int set) {
    return set == 0 ? &m->output : &m->sets[set - 1].output;
}
const kvq_tensor *kvq_model_set_tok_embd(const struct kvq_model *m, int set) {
    return set == 0 ? &m->tok_embd : &m->sets[set - 1].tok_embd;
}

int32_t kvq_model_n_weight_sets(const kvq_model *m) { return 1 + m->n_extra_sets; }

static void set_free(kvq_weight_set *s) {
    for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
    free(s->owned);
    if (s->src) kvq_model_free(s->src);
    else free(s->layers);
    memset(s, 0, sizeof *s);
}

void kvq_model_free_sets(struct kvq_model *m) {
    for (int i = 0; i < m->n_extra_sets; i++) set_free(&m->sets[i]);
    m->n_extra_sets = 0;
}

/* Replaces *t by its requantization into `type` when its rows fit the blocks. */
static kvq_status requant(kvq_weight_set *s, kvq_tensor *t, kvq_type type, int n_threads, const kvq_logger *lg) {
    if (!t->data || t->type == type) return KVQ_OK;
    if (!kvq_requant_fits(type, t->ne[0])) {
        kvq_logf(lg, KVQ_LOG_INFO, "weight set: %s has rows of %lld, not a multiple of %s blocks; kept as %s", t->name,
                 (long long)t->ne[0], kvq_type_name(type), kvq_type_name(t->type));
        return KVQ_OK;
    }
    const size_t rb = kvq_row_size((int)type, t->ne[0]);
    void *buf = malloc(rb * (size_t)t->ne[1]);
    void **o = realloc(s->owned, (size_t)(s->n_owned + 1) * sizeof *o);
    if (!buf || !o) { free(buf); if (o) s->owned = o; return KVQ_ERR_NOMEM; }
    s->owned = o;
    s->owned[s->n_owned++] = buf;
    kvq_status st = kvq_requant_rows(t->data, t->type, t->row_bytes, t->ne[0], t->ne[1], type, buf, n_threads);
    if (st) return kvq_err(lg, st, "weight set: cannot requantize %s from %s", t->name, kvq_type_name(t->type));
    t->type = type;
    t->data = buf;
    t->row_bytes = rb;
    t->packed = NULL; /* set 0's copy, of the other type */
    t->pk = NULL;
    return KVQ_OK;
}

static kvq_status own_buffer(void *set, void *p) {
    kvq_weight_set *s = set;
    void **o = realloc(s->owned, (size_t)(s->n_owned + 1) * sizeof *o);
    if (!o) { free(p); return KVQ_ERR_NOMEM; }
    s->owned = o;
    s->owned[s->n_owned++] = p;
    return KVQ_OK;
}

/* Repacked matrices need their requantized buffer no more, except a head
 * tied to the embedding, whose rows the embedding lookup reads: the set's
 * tensors then point at the packed copy, which only products read. */
static void drop_requantized(kvq_weight_set *s, kvq_tensor *t) {
    if (!t->packed || t->data == s->tok_embd.data) return;
    for (int k = 0; k < s->n_owned; k++)
        if (s->owned[k] == t->data) {
            free(s->owned[k]);
            s->owned[k] = s->owned[--s->n_owned];
            t->data = t->packed;
            return;
        }
}

static kvq_status pack(kvq_model *m, kvq_weight_set *s) {
    kvq_status st = kvq_model_pack_set(m, s->layers, &s->output, own_buffer, s);
    for (int l = 0; !st && l < m->hp.n_layer; l++) {
        kvq_tensor *mats[KVQ_LAYER_MATS];
        kvq_layer_mats(&s->layers[l], mats);
        for (int i = 0; i < KVQ_LAYER_MATS; i++) drop_requantized(s, mats[i]);
    }
    if (!st) drop_requantized(s, &s->output);
    return st;
}

static kvq_status from_type(kvq_model *m, kvq_weight_set *s, kvq_type type, int n_threads) {
    s->layers = malloc((size_t)m->hp.n_layer * sizeof *s->layers);
    if (!s->layers) return KVQ_ERR_NOMEM;
    memcpy(s->layers, m->layers, (size_t)m->hp.n_layer * sizeof *s->layers);
    kvq_status st = KVQ_OK;
    for (int l = 0; !st && l < m->hp.n_layer; l++) {
        kvq_tensor *mats[KVQ_LAYER_MATS];
        kvq_layer_mats(&s->layers[l], mats);
        for (int i = 0; !st && i < KVQ_LAYER_MATS; i++) st = requant(s, mats[i], type, n_threads, &m->lg);
    }
    s->output = m->output;
    s->tok_embd = m->tok_embd;
    /* a head tied to the embedding is requantized as one tensor, as a file
     * written by `kvq quantize --method rtn` stores it */
    const bool tied = m->output.data == m->tok_embd.data;
    if (!st) st = requant(s, &s->output, type, n_threads, &m->lg);
    if (!st && tied) s->tok_embd = s->output;
    if (!st && !m->no_repack) st = pack(m, s);
    return st;
}

static kvq_status from_file(kvq_model *m, kvq_weight_set *s, const char *path) {
    kvq_model_params p = kvq_model_default_params();
    p.path = path;
    p.no_repack = m->no_repack;
    p.log = m->lg.fn;
    p.log_user = m->lg.user;
    kvq_status st = kvq_model_load(&p, &s->src);
    if (st) return kvq_err(&m->lg, st, "weight set: cannot load '%s'", path);
    const kvq_hparams *a = &m->hp, *b = &s->src->hp;
    if (strcmp(m->arch, s->src->arch) || a->n_vocab != b->n_vocab || a->n_embd != b->n_embd ||
        a->n_layer != b->n_layer || a->n_head != b->n_head || a->n_head_kv != b->n_head_kv ||
        a->head_dim != b->head_dim || a->n_ff != b->n_ff || a->rope_neox != b->rope_neox)
        return kvq_err(&m->lg, KVQ_ERR_ARG,
                       "weight set: '%s' is another model (%s, %d layers, dim %d, %d heads / %d KV, ffn %d, vocab %d; "
                       "this model: %s, %d, %d, %d / %d, %d, %d)",
                       path, s->src->arch, b->n_layer, b->n_embd, b->n_head, b->n_head_kv, b->n_ff, b->n_vocab,
                       m->arch, a->n_layer, a->n_embd, a->n_head, a->n_head_kv, a->n_ff, a->n_vocab);
    s->layers = s->src->layers;
    s->output = s->src->output;
    s->tok_embd = s->src->tok_embd;
    return KVQ_OK;
}

kvq_status kvq_model_add_weight_set(kvq_model *m, const char *source, int32_t n_threads, int32_t *index) {
    if (!source || !*source) return kvq_err(&m->lg, KVQ_ERR_ARG, "weight set: no type or file given");
    if (m->vocab_only || !m->layers) return kvq_err(&m->lg, KVQ_ERR_ARG, "weight set: the model has no weights");
    if (m->n_extra_sets == KVQ_MAX_WEIGHT_SETS - 1)
        return kvq_err(&m->lg, KVQ_ERR_ARG, "weight set: at most %d sets per model", KVQ_MAX_WEIGHT_SETS);
    kvq_weight_set *s = &m->sets[m->n_extra_sets];
    memset(s, 0, sizeof *s);
    const int type = kvq_type_parse(source);
    kvq_status st;
    if (type >= 0) {
        if (!kvq_requant_fits((kvq_type)type, 256) && !kvq_requant_fits((kvq_type)type, 32))
            return kvq_err(&m->lg, KVQ_ERR_UNSUPPORTED, "weight set: cannot quantize to type %s", source);
        st = from_type(m, s, (kvq_type)type, n_threads > 0 ? n_threads : 1);
    } else {
        st = from_file(m, s, source);
    }
    if (st) {
        set_free(s);
        return st;
    }
    m->n_extra_sets++;
    if (index) *index = m->n_extra_sets;
    return KVQ_OK;
}

/* codes and the companions (a mixed-precision type's bit map, scales, zeros) */
static uint64_t tbytes(const kvq_tensor *t) {
    if (!t->data) return 0;
    uint64_t b = t->row_bytes * (uint64_t)t->ne[1];
    for (int i = 0; i < KVQ_TENSOR_AUX; i++) b += t->aux_bytes[i];
    return b;
}

uint64_t kvq_model_weight_set_bytes(const kvq_model *m, int32_t set) {
    if (set < 0 || set >= kvq_model_n_weight_sets(m)) return 0;
    const kvq_layer_weights *L = kvq_model_set_layers(m, set);
    uint64_t b = tbytes(kvq_model_set_output(m, set)) + tbytes(&m->out_norm);
    for (int l = 0; L && l < m->hp.n_layer; l++) {
        const kvq_layer_weights *w = &L[l];
        const kvq_tensor *t[] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->bq, &w->bk, &w->bv,
                                 &w->wo, &w->ffn_norm, &w->w_gate, &w->w_up, &w->w_down};
        for (int i = 0; i < 12; i++) b += tbytes(t[i]);
    }
    return b;
}
