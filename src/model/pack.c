/* Decode copies of a model's large matrices in a row-interleaved layout
 * (kernels/repack.h), made once at load on hosts whose kernels want them.
 *
 * The copy is exactly as large as the matrix, and it replaces the matrix in
 * every product (decode, batches and prefill all run the packed kernels), so
 * the file's pages are read once here and not again. They are then released
 * from the process (MADV_DONTNEED on a read-only file mapping drops the
 * pages from this process; the page cache keeps them): without that, peak
 * RSS would count the weights twice. */
#include "model.h"

#include <omp.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../core/cpu.h"
#include "../kernels/repack.h"
#include "../kernels/slim_pk.h"

static void release_pages(const kvq_mapfile *map, const void *data, size_t bytes) {
    if (!map->data || (const uint8_t *)data < map->data || (const uint8_t *)data + bytes > map->data + map->size)
        return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)data + page - 1) & ~(page - 1), b = ((uintptr_t)data + bytes) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Packing goes in chunks of about 16 MiB, 32 rows per task (every layout
 * here interleaves 8, 16 or 32 rows), each source chunk released once packed: a
 * 141 MiB output head packed whole raised peak RSS by its size. */
typedef void (*pack_rows_fn)(const kvq_matw *W, int64_t r0, int64_t r1, void *dst);
static void pack_chunks(const kvq_matw *W, const kvq_mapfile *map, pack_rows_fn fn, void *dst) {
    const int64_t rows = W->rows;
    int64_t chunk = (int64_t)((16u << 20) / (32 * W->row_bytes)) * 32;
    if (chunk < 32) chunk = 32;
    for (int64_t c0 = 0; c0 < rows; c0 += chunk) {
        const int64_t c1 = c0 + chunk < rows ? c0 + chunk : rows, ng = (c1 - c0 + 31) / 32;
#pragma omp parallel for schedule(static)
        for (int64_t g = 0; g < ng; g++) {
            const int64_t r0 = c0 + 32 * g;
            fn(W, r0, r0 + 32 < c1 ? r0 + 32 : c1, dst);
        }
        release_pages(map, (const uint8_t *)W->data + (size_t)c0 * W->row_bytes, (size_t)(c1 - c0) * W->row_bytes);
    }
}
static void rows_std(const kvq_matw *W, int64_t r0, int64_t r1, void *dst) {
    kvq_packed_rows(W->pk, W->type, W->data, W->row_bytes, W->cols, W->rows, r0, r1, dst);
}

/* The kernel that t gets on this ISA (NULL: t keeps the file's layout),
 * and its copy's size. The slim types have their own layout
 * (kernels/slim_pk.h) in groups of *R rows (8 for AVX2, 32 for AVX-512);
 * their groups under 128 columns keep the file layout. */
static const kvq_packed_kernel *plan_one(const kvq_tensor *t, int isa, size_t *bytes, int *R) {
    if (!t->data || t->packed) return NULL;
    kvq_matw W = kvq_tensor_matw(t);
    const bool slim = kvq_slim_bits(t->type) != 0;
    const kvq_packed_kernel *pk = slim ? (kvq_slim_pk_fits(&W) ? kvq_slim_pk_kernel(isa, R) : NULL)
                                       : (kvq_repack_fits(t->type, t->ne[0]) ? kvq_repack_kernel(t->type, isa) : NULL);
    if (pk) *bytes = slim ? kvq_slim_pk_size(&W, *R) : t->row_bytes * (size_t)t->ne[1];
    return pk;
}

/* Packs *t into p (64-byte aligned). */
static void pack_one(kvq_tensor *t, const kvq_packed_kernel *pk, int R, const kvq_mapfile *map, void *p) {
    kvq_matw W = kvq_tensor_matw(t);
    W.pk = pk;
    const bool slim = kvq_slim_bits(t->type) != 0;
    if (slim) kvq_slim_pk_init(&W, R, p);
    pack_chunks(&W, map, slim ? kvq_slim_pk_pack : rows_std, p);
    if (slim) release_pages(map, t->aux[1], t->aux_bytes[1]);
    t->packed = p;
    t->pk = pk;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A weight set's matrices, one at a time: the layers', then the head. */
static int set_mats(struct kvq_model *m, kvq_layer_weights *layers, kvq_tensor *output, int l, kvq_tensor **one) {
    one[0] = output;
    if (l == m->hp.n_layer) return 1;
    kvq_layer_mats(&layers[l], one);
    return KVQ_LAYER_MATS;
}

/* All copies of a weight set share one buffer on 2 MiB boundaries, asked
 * for in huge pages (MADV_HUGEPAGE; hosts whose THP setting is "madvise"
 * give them only when asked). Decode streams the whole buffer every token:
 * on a Zen 5 host Llama-3.2-1B q4_0 decoded at 67-80 tok/s with it and
 * 31-44 without (alternated runs, depth 0). One buffer rather than one per matrix:
 * rounding each of 113 matrices up to 2 MiB cost 105 MiB of RSS. */
kvq_status kvq_model_pack_set(struct kvq_model *m, kvq_layer_weights *layers, kvq_tensor *output,
                              kvq_status (*own)(void *ctx, void *p), void *ctx) {
    const int isa = kvq_isa_active();
    const double t0 = now_s();
    size_t total = 0;
    for (int l = 0; l <= m->hp.n_layer; l++) {
        kvq_tensor *one[KVQ_LAYER_MATS];
        const int k = set_mats(m, layers, output, l, one);
        for (int i = 0; i < k; i++) {
            size_t bytes;
            int R;
            if (plan_one(one[i], isa, &bytes, &R)) total += (bytes + 63) / 64 * 64;
        }
    }
    if (!total) return KVQ_OK;
    const size_t huge = (size_t)2 << 20, cap = (total + huge - 1) / huge * huge;
    uint8_t *arena = aligned_alloc(huge, cap);
    if (!arena) return kvq_err(&m->lg, KVQ_ERR_NOMEM, "cannot repack the weights: out of memory (%zu bytes)", cap);
    madvise(arena, cap, MADV_HUGEPAGE); /* advice only: without THP the copy works the same */
    kvq_status st = own(ctx, arena); /* on failure the owner has freed it */
    if (st) return kvq_err(&m->lg, st, "cannot repack the weights: out of memory");
    uint64_t packed = 0;
    size_t off = 0;
    int n = 0;
    const char *kernel[2] = {NULL, NULL}; /* the layers' kernel, and the head's when it differs */
    for (int l = 0; l <= m->hp.n_layer; l++) {
        kvq_tensor *one[KVQ_LAYER_MATS];
        const int k = set_mats(m, layers, output, l, one);
        for (int i = 0; i < k; i++) {
            size_t bytes;
            int R = 0;
            const kvq_packed_kernel *pk = plan_one(one[i], isa, &bytes, &R);
            if (!pk) continue;
            pack_one(one[i], pk, R, &m->gguf.map, arena + off);
            off += (bytes + 63) / 64 * 64;
            packed += one[i]->row_bytes * (size_t)one[i]->ne[1];
            n++;
            if (!kernel[0]) kernel[0] = pk->name;
            else if (pk->name != kernel[0]) kernel[1] = pk->name;
        }
    }
    kvq_logf(&m->lg, KVQ_LOG_INFO, "repacked %d matrices (%.1f MiB) for the %s%s%s decode kernels in %.2f s", n,
             (double)packed / (1 << 20), kernel[0], kernel[1] ? " and " : "", kernel[1] ? kernel[1] : "",
             now_s() - t0);
    return KVQ_OK;
}
