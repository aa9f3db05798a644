/* Decode kernel rates: GB/s of weights one decode product streams, per
 * kernel, with the matrix in L2 (the kernel's own speed: compute) and far
 * larger than the L3 (what memory allows), on 1 and 2 threads.
 *
 *   make kernel-rate && build/kernel-rate [SECONDS_PER_CELL]
 *
 * A kernel whose in-L2 rate per core is well above the DRAM rate per core
 * stays bandwidth-bound on hosts with faster memory; one that is not is
 * compute-bound, and that is what decode then measures. Random weights.
 *
 * Then the attention kernels, one thread, their data in L2: nanoseconds per
 * cached token and KV head (scores and weighted values) for 4 query heads
 * (one decode step of a GQA model with 4 query heads per KV head) and 28
 * (a verify pass of 7 positions), and the KV bytes per second they read. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cpu.h"
#include "kernels/ops.h"
#include "kernels/repack.h"
#include "kernels/slim_pk.h"
#include "quant/gptq.h"
#include "kernels/types.h"
#include "kv/blk_kernels.h"
#include "kv/hier_kernels.h"
#include "kv/kivi_kernels.h"
#include "kv/kv_simd.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* median-free: the best of repeated timed products, as a rate of weight
 * bytes; a cell runs for `secs` */
static double rate(const kvq_matw *W, const float *x, float *y, void *qbuf, int nth, double secs) {
    double best = 1e30;
    const double t_end = now_s() + secs;
    int reps = 0;
    while (now_s() < t_end || reps < 3) {
        const double t0 = now_s();
        kvq_matmul(W, x, 1, y, qbuf, nth);
        const double dt = now_s() - t0;
        if (dt < best) best = dt;
        reps++;
    }
    return (double)W->row_bytes * (double)W->rows / best / 1e9;
}

/* A slim matrix of average width N (groups of 128, a quarter of them at
 * N-1 and a quarter at N+1, as SBA makes them): the file layout's chunk
 * kernel, and the decode layout (slim_pk.h) with this host's kernel. Rates count the codes and the
 * (d, m) table. */
static void slim_rates(int N, int64_t cols, double secs) {
    const int ng = (int)(cols / 128);
    int8_t *bits = malloc((size_t)ng);
    double sal[64];
    for (int g = 0; g < ng; g++) sal[g] = frand();
    kvq_wq_sba_bits(sal, ng, N, ng / 4, bits);
    const size_t rb = (size_t)cols * N / 8;
    const char *pk_name = "slim (scalar)";
    for (int packed = 0; packed < 2; packed++) {
        double g[4];
        for (int big = 0; big < 2; big++) {
            const int64_t rows = (big ? ((int64_t)512 << 20) : (192 << 10)) / (int64_t)(rb + 4 * ng) / 16 * 16;
            uint8_t *w = aligned_alloc(64, (rb * (size_t)rows + 63) / 64 * 64);
            kvq_f16 *dm = malloc((size_t)rows * ng * 4);
            for (size_t i = 0; i < rb * (size_t)rows; i++) w[i] = (uint8_t)(frand() * 256);
            for (int64_t i = 0; i < rows * ng * 2; i++) dm[i] = kvq_f32_to_f16(0.01f * frand());
            const void *aux[KVQ_TENSOR_AUX] = {bits, dm};
            const uint64_t ab[KVQ_TENSOR_AUX] = {(uint64_t)ng, (uint64_t)rows * ng * 4};
            kvq_matw W = {kvq_slim_type(N), cols, rows, w, rb, aux, ab, NULL, NULL};
            void *pw = NULL;
            if (packed) {
                int R = 8;
                const kvq_packed_kernel *k = kvq_slim_pk_kernel(kvq_isa_active(), &R);
                pw = aligned_alloc(64, (kvq_slim_pk_size(&W, R) + 63) / 64 * 64);
                kvq_slim_pk_init(&W, R, pw);
                kvq_slim_pk_pack(&W, 0, rows, pw);
                W.packed = pw;
                W.pk = k ? k : &kvq_slim_pk_ref;
                pk_name = W.pk->name;
            }
            float *x = malloc(sizeof(float) * (size_t)cols), *y = malloc(sizeof(float) * (size_t)rows);
            for (int64_t i = 0; i < cols; i++) x[i] = frand();
            void *qbuf = malloc(kvq_matmul_qbuf_size(W.type, cols, 1) + 64);
            const double scale = (double)(rb + 4 * ng) / (double)rb; /* the (d, m) table too */
            for (int nth = 1; nth <= 2; nth++) g[2 * big + nth - 1] = rate(&W, x, y, qbuf, nth, secs) * scale;
            free(qbuf), free(x), free(y), free(pw), free(dm), free(w);
        }
        char name[64];
        snprintf(name, sizeof name, "slim%d %s", N, packed ? pk_name + 5 : "(file layout)");
        printf("%-22s %9.1f GB/s %7.1f GB/s %7.1f GB/s %7.1f GB/s\n", name, g[0], g[1], g[2], g[3]);
    }
    free(bits);
}

/* the plain read loop over the same 512 MiB: what the memory gives */
__attribute__((target("avx2"))) static double read_rate(const uint8_t *p, size_t n, int nth, double secs) {
    double best = 1e30;
    const double t_end = now_s() + secs;
    int reps = 0;
    volatile int sink = 0;
    while (now_s() < t_end || reps < 3) {
        const double t0 = now_s();
        int acc = 0;
#pragma omp parallel for num_threads(nth) reduction(| : acc) schedule(static)
        for (size_t c = 0; c < n / 4096; c++) {
            __m256i a = _mm256_setzero_si256();
            for (size_t i = 0; i < 4096; i += 128)
                a = _mm256_or_si256(_mm256_or_si256(a, _mm256_load_si256((const __m256i *)(p + c * 4096 + i))),
                                    _mm256_or_si256(_mm256_load_si256((const __m256i *)(p + c * 4096 + i + 32)),
                                                    _mm256_or_si256(_mm256_load_si256((const __m256i *)(p + c * 4096 + i + 64)),
                                                                    _mm256_load_si256((const __m256i *)(p + c * 4096 + i + 96)))));
            acc |= _mm256_movemask_epi8(a);
        }
        sink = acc;
        const double dt = now_s() - t0;
        if (dt < best) best = dt;
        reps++;
    }
    (void)sink;
    return (double)n / best / 1e9;
}

/* Attention over N cached tokens of one KV head (head_dim 64) for nq query
 * heads: kind 0 f16 (transposed key tiles, row-major values), 1 hier's draft
 * view (upper plane), 2 hier's target view (both planes), 3 and 4 KIVI with
 * 4-bit and 2-bit keys and values (groups of 32), 5 and 6 the ggml q8_0 and
 * q4_0 block rows (llama.cpp's KV cache types). Returns ns per token; *gbs
 * gets the KV bytes read per second. */
static double attn_rate(int kind, int nq, int N, double secs, double *gbs) {
    enum { HD = 64, G = 128 };
    const kvq_attn_kernels *ak = kvq_attn_kernels_active();
    const kvq_hier_kernels *hk = kvq_hier_kernels_isa(kvq_isa_active());
    const kvq_kivi_kernels *kk = kvq_kivi_kernels_isa(kvq_isa_active());
    const kvq_blk_kernels *bk = kvq_blk_kernels_isa(kvq_isa_active());
    const bool q8 = kind == 5;
    const size_t brow = (size_t)HD / 32 * (q8 ? 34 : 18); /* a ggml block row of one head */
    uint8_t *bkr = kind >= 5 ? malloc(brow * N) : NULL, *bvr = kind >= 5 ? malloc(brow * N) : NULL;
    for (size_t i = 0; kind >= 5 && i < brow * N; i++) {
        bkr[i] = bvr[i] = (uint8_t)(i * 37);
        if (i % (q8 ? 34 : 18) == 1) bkr[i] = bvr[i] = 0x30; /* fp16 scale 0x30xx: finite */
    }
    /* keys and values as the cache holds them: tiles of 8 tokens */
    uint8_t *bkt = kind >= 5 ? malloc(brow * N) : NULL, *bvt = kind >= 5 ? malloc(brow * N) : NULL;
    for (int t = 0; kind >= 5 && t < N; t++) {
        kvq_blk_put(bkt, t, HD, q8, false, bkr + (size_t)t * brow);
        kvq_blk_put(bvt, t, HD, q8, true, bvr + (size_t)t * brow);
    }
    const int kb = kind == 3 ? 4 : 2; /* KIVI's bits */
    uint16_t *kf = malloc(sizeof(uint16_t) * N * HD), *vf = malloc(sizeof(uint16_t) * N * HD);
    /* keys' planes, values' planes: separate, as in a cache (or the values would be read from cache) */
    uint8_t *up = malloc(N * HD / 2), *lo = malloc(N * HD / 2), *vu = malloc(N * HD / 2), *vl = malloc(N * HD / 2);
    kvq_f16 *kms = malloc(sizeof(kvq_f16) * 2 * HD * (N / G)), *vms = malloc(sizeof(kvq_f16) * 4 * N);
    float *q = malloc(sizeof(float) * 28 * HD), *sc = malloc(sizeof(float) * 28 * G), *out = malloc(sizeof(float) * 28 * HD);
    for (int i = 0; i < N * HD; i++) kf[i] = vf[i] = (uint16_t)(0x3800 + (i % 512));
    for (int i = 0; i < N * HD / 2; i++) up[i] = lo[i] = vu[i] = vl[i] = (uint8_t)(i * 37);
    for (int i = 0; i < 2 * HD * (N / G); i++) kms[i] = 0x3000;
    for (int i = 0; i < 4 * N; i++) vms[i] = 0x3000;
    for (int i = 0; i < 28 * HD; i++) q[i] = frand();
    for (int i = 0; i < 28 * G; i++) sc[i] = 0.01f;
    double best = 1e30;
    const double t_end = now_s() + secs;
    for (int reps = 0; now_s() < t_end || reps < 3; reps++) {
        memset(out, 0, sizeof(float) * 28 * HD);
        const double t0 = now_s();
        for (int b = 0; b < N / G; b++) {
            if (kind >= 5) {
                bk->qk(bkt + (size_t)b * G * brow, 0, G, HD, q8, q, nq, sc, G);
                bk->av(bvt + (size_t)b * G * brow, 0, G, HD, q8, sc, G, nq, out);
            } else if (kind >= 3) {
                for (int t = 0; t < G; t += 32) /* KIVI's blocks are 32 tokens */
                    kk->qk_block(up + (size_t)(b * G + t) * HD * kb / 8, kms, 32, HD, kb, q, nq, sc + t, G);
                kk->av_rows(lo, b * G, vms + (size_t)b * G * 4, G, HD, kb, 32, sc, G, nq, out);
            } else if (kind == 0) {
                for (int t = 0; t < G; t += KVQ_KT)
                    ak->qk_tile_f16(kf + (size_t)(b * G + t) * HD, HD, q, nq, sc + t, G);
                ak->av_f16(vf + (size_t)b * G * HD, G, HD, sc, G, nq, out);
            } else {
                const uint8_t *l = kind == 2 ? lo : NULL;
                hk->qk(up + (size_t)b * G * HD / 2, l ? l + (size_t)b * G * HD / 2 : NULL, kms + (size_t)b * 2 * HD, G, HD,
                       q, nq, sc, G);
                hk->av(vu, l ? vl : NULL, b * G, vms + (size_t)b * G * 2, G, HD, HD, sc, G, nq, out);
            }
        }
        const double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    /* per token, K and V (KIVI: codes, and fp16 min and scale per group of 32 tokens or channels) */
    const double bytes = kind >= 5 ? 2.0 * brow : kind == 0 ? 4.0 * HD : kind == 1 ? HD + 4.0 : kind == 2 ? 2.0 * HD + 4.0
                                                                      : 2.0 * HD * kb / 8 + 4.0 * HD / 32 + 4.0 * HD / 32;
    *gbs = bytes * N / best / 1e9;
    free(kf), free(vf), free(up), free(lo), free(vu), free(vl), free(bkr), free(bkt), free(bvr), free(bvt), free(kms), free(vms), free(q), free(sc), free(out);
    return best / N * 1e9;
}

int main(int argc, char **argv) {
    const double secs = argc > 1 ? atof(argv[1]) : 1.0;
    const bool attn_only = argc > 2 && !strcmp(argv[2], "attn"); /* build/kernel-rate SECS attn: attention only */
    const bool slim_only = argc > 2 && !strcmp(argv[2], "slim"); /* ... slim: q4_0 and the slim types only */
    const kvq_type types[] = {KVQ_TYPE_Q4_0,  KVQ_TYPE_Q8_0,  KVQ_TYPE_Q4_K,   KVQ_TYPE_Q6_K,   KVQ_TYPE_F16, KVQ_TYPE_Q5_0,
                              KVQ_TYPE_Q5_1,  KVQ_TYPE_Q5_K,  KVQ_TYPE_IQ4_NL, KVQ_TYPE_IQ4_XS, KVQ_TYPE_Q3_K, KVQ_TYPE_Q2_K};
    const int64_t cols = 2048;
    /* L2: about 192 KiB of weights; DRAM: 512 MiB, far past any L3 here */
    printf("cpu: isa %s, %d threads available; matrix of %lld columns\n", kvq_isa_str(kvq_isa_active()),
           omp_get_max_threads(), (long long)cols);
    printf("%-22s %12s %12s %12s %12s\n", "kernel", "L2 1 thr", "L2 2 thr", "DRAM 1 thr", "DRAM 2 thr");
    {
        const size_t n = (size_t)512 << 20;
        uint8_t *buf = aligned_alloc(64, n);
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)i;
        printf("%-22s %12s %12s %7.1f GB/s %7.1f GB/s\n", "plain read loop", "", "", read_rate(buf, n, 1, secs),
               read_rate(buf, n, 2, secs));
        free(buf);
    }
    float *x = malloc(sizeof(float) * (size_t)cols);
    for (int64_t i = 0; i < cols; i++) x[i] = frand();
    for (size_t k = 0; k < (slim_only ? 1 : sizeof types / sizeof *types) && !attn_only; k++) {
        const kvq_type t = types[k];
        const kvq_type_traits *tr = kvq_traits(t);
        const size_t rb = kvq_row_size((int)t, cols);
        for (int packed = 0; packed < 2; packed++) {
            const kvq_packed_kernel *pk = packed ? kvq_repack_kernel(t, kvq_isa_active()) : NULL;
            if (packed && !pk) continue;
            double g[4];
            for (int big = 0; big < 2; big++) {
                const int64_t rows = big ? ((int64_t)512 << 20) / (int64_t)rb / 16 * 16 : (192 << 10) / (int64_t)rb / 16 * 16;
                float *wf = malloc(sizeof(float) * (size_t)cols * 16);
                uint8_t *w = aligned_alloc(64, (rb * (size_t)rows + 63) / 64 * 64);
                for (int64_t i = 0; i < cols * 16; i++) wf[i] = frand();
                /* 16 distinct rows, repeated: the bytes are what count */
                for (int j = 0; j < 16; j++) tr->from_float(wf + (size_t)j * cols, w + (size_t)j * rb, cols);
                for (int64_t r = 16; r < rows; r += 16) memcpy(w + (size_t)r * rb, w, 16 * rb);
                void *pw = NULL;
                if (pk) {
                    pw = aligned_alloc(64, (rb * (size_t)rows + 63) / 64 * 64);
                    kvq_packed_rows(pk, t, w, rb, cols, rows, 0, rows, pw);
                }
                kvq_matw W = {t, cols, rows, w, rb, NULL, NULL, pw, pk};
                float *y = malloc(sizeof(float) * (size_t)rows);
                void *qbuf = malloc(kvq_matmul_qbuf_size(t, cols, 1) + 64);
                for (int nth = 1; nth <= 2; nth++) g[2 * big + nth - 1] = rate(&W, x, y, qbuf, nth, secs);
                free(qbuf), free(y), free(pw), free(w), free(wf);
            }
            char name[64];
            snprintf(name, sizeof name, "%s%s", tr->name, pk ? (pk->pack ? " x16 (repacked)" : " x8 (repacked)") : "");
            printf("%-22s %9.1f GB/s %7.1f GB/s %7.1f GB/s %7.1f GB/s\n", name, g[0], g[1], g[2], g[3]);
        }
    }
    free(x);
    if (kvq_isa_active() >= KVQ_ISA_AVX2 && !attn_only)
        for (int N = 2; N <= 3; N++) slim_rates(N, cols, secs);
    if (slim_only) return 0;
    printf("\nattention, 1 thread (head_dim 64): ns per cached token per KV head, and KV GB/s read;\n"
           "1024 tokens (in L2), and 1M tokens (256 MiB of f16, from DRAM)\n");
    printf("%-22s %22s %22s %22s\n", "kernel", "4 query heads, L2", "28 (7 positions), L2", "4 query heads, DRAM");
    const char *const kinds[7] = {"f16",       "hier draft view", "hier target view", "kivi k4v4",
                                  "kivi k2v2", "q8_0",            "q4_0"};
    for (int kind = 0; kind < 7; kind++) {
        double g4, g28, gd;
        const double t4 = attn_rate(kind, 4, 1024, secs, &g4), t28 = attn_rate(kind, 28, 1024, secs, &g28),
                     td = attn_rate(kind, 4, 1 << 20, secs, &gd);
        printf("%-22s %7.1f ns %7.2f GB/s %7.1f ns %7.2f GB/s %7.1f ns %7.2f GB/s\n", kinds[kind], t4, g4, t28, g28, td, gd);
    }
    return 0;
}
