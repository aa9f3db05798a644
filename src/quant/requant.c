/* Round-to-nearest requantization (see requant.h). */
#include "requant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/cpu.h"
#include "../io/gguf.h"
#include "../io/gguf_write.h"

bool kvq_requant_fits(kvq_type type, int64_t cols) {
    const kvq_type_traits *t = kvq_traits_isa(type, KVQ_ISA_SCALAR);
    return t && t->from_float && kvq_row_size((int)type, cols) > 0;
}

kvq_status kvq_requant_rows(const void *src, kvq_type stype, size_t src_row_bytes, int64_t cols, int64_t rows,
                            kvq_type dtype, void *dst, int n_threads) {
    const kvq_type_traits *st = kvq_traits_isa(stype, KVQ_ISA_SCALAR), *dt = kvq_traits_isa(dtype, KVQ_ISA_SCALAR);
    if (!st || !st->to_float || !kvq_requant_fits(dtype, cols)) return KVQ_ERR_UNSUPPORTED;
    const size_t drow = kvq_row_size((int)dtype, cols);
    int failed = 0;
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel num_threads(n_threads)
    {
        float *row = malloc((size_t)cols * sizeof(float));
        if (!row) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!row) continue;
            st->to_float((const uint8_t *)src + (size_t)r * src_row_bytes, row, cols);
            dt->from_float(row, (uint8_t *)dst + (size_t)r * drow, cols);
        }
        free(row);
    }
    return failed ? KVQ_ERR_NOMEM : KVQ_OK;
}

bool kvq_requant_gguf_name(const char *name, bool tied_output) {
    static const char *const suffix[] = {".attn_q.weight",  ".attn_k.weight", ".attn_v.weight", ".attn_output.weight",
                                         ".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight"};
    if (!strncmp(name, "blk.", 4)) {
        size_t n = strlen(name);
        for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
            size_t k = strlen(suffix[i]);
            if (n > k && !strcmp(name + n - k, suffix[i])) return true;
        }
        return false;
    }
    return !strcmp(name, "output.weight") || (tied_output && !strcmp(name, "token_embd.weight"));
}

kvq_status kvq_quantize_rtn_gguf(const char *in, const char *out, kvq_type type, int n_threads,
                                 const kvq_logger *lg) {
    kvq_gguf g;
    kvq_status st = kvq_gguf_open(in, &g, lg);
    if (st) return st;
    kvq_gguf_writer *w = kvq_gguf_writer_new();
    void **bufs = calloc(g.n_tensors + 1, sizeof *bufs);
    if (!w || !bufs) { st = KVQ_ERR_NOMEM; goto out; }
    for (uint64_t i = 0; i < g.n_kv; i++)
        if (!kvq_gguf_str_eq(g.kv[i].key, "general.file_type")) kvq_gguf_copy_kv(w, &g.kv[i]);
    const bool tied = !kvq_gguf_tensor_find(&g, "output.weight");
    for (uint64_t i = 0; i < g.n_tensors && !st; i++) {
        const kvq_gguf_tensor *t = &g.tensors[i];
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(t->name.n < 255 ? t->name.n : 255), t->name.s);
        const bool matrix = t->n_dims == 2 && kvq_requant_gguf_name(name, tied);
        /* a type that cannot be read row by row (slim: its companions are
         * copied as they are) keeps its codes: requantizing a slim file
         * to q4_0 rounds only its head */
        const kvq_type_traits *srct = t->type < KVQ_TYPE_COUNT ? kvq_traits_isa((kvq_type)t->type, KVQ_ISA_SCALAR) : NULL;
        if (matrix && srct && !srct->to_float) {
            kvq_gguf_add_tensor(w, name, t->type, (int)t->n_dims, t->ne, t->data, t->nbytes);
            continue;
        }
        if (!matrix || t->type == (uint32_t)type || !kvq_requant_fits(type, t->ne[0])) {
            if (matrix && t->type != (uint32_t)type)
                kvq_logf(lg, KVQ_LOG_INFO, "%s: rows of %lld do not divide into %s blocks; kept as %s", name,
                         (long long)t->ne[0], kvq_type_name(type), kvq_type_name((int)t->type));
            kvq_gguf_add_tensor(w, name, t->type, (int)t->n_dims, t->ne, t->data, t->nbytes);
            continue;
        }
        const size_t drow = kvq_row_size((int)type, t->ne[0]), srow = kvq_row_size((int)t->type, t->ne[0]);
        if (!srow) { st = kvq_err(lg, KVQ_ERR_UNSUPPORTED, "%s: type %u cannot be read", name, t->type); break; }
        bufs[i] = malloc(drow * (size_t)t->ne[1]);
        if (!bufs[i]) { st = KVQ_ERR_NOMEM; break; }
        st = kvq_requant_rows(t->data, (kvq_type)t->type, srow, t->ne[0], t->ne[1], type, bufs[i], n_threads);
        if (st) { kvq_err(lg, st, "%s: cannot requantize type %s", name, kvq_type_name((int)t->type)); break; }
        kvq_gguf_add_tensor(w, name, (uint32_t)type, 2, t->ne, bufs[i], drow * (size_t)t->ne[1]);
    }
    if (!st) st = kvq_gguf_write(w, out, lg);
out:
    for (uint64_t i = 0; bufs && i < g.n_tensors; i++) free(bufs[i]);
    free(bufs);
    kvq_gguf_writer_free(w);
    kvq_gguf_close(&g);
    return st;
}

kvq_status kvq_quantize_gguf(const char *in, const char *out, const char *type, int32_t n_threads, kvq_log_fn log,
                             void *log_user) {
    kvq_logger lg = {log, log_user};
    const int t = kvq_type_parse(type);
    if (t < 0 || !kvq_requant_fits((kvq_type)t, 256))
        return kvq_err(&lg, KVQ_ERR_ARG, "cannot quantize to type '%s' (q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_xs)",
                       type ? type : "");
    return kvq_quantize_rtn_gguf(in, out, (kvq_type)t, n_threads > 0 ? n_threads : 1, &lg);
}
