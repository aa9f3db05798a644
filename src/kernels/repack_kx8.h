/* The row loops shared by the K-quants' 8-row layouts (repack_q4_K.c,
 * repack_q6_K.c, repack_k23.c), against Q8_K activations: groups of 8 rows
 * hold one packed super-block of SB bytes per 256 inputs, the rows % 8 last
 * rows keep GGUF blocks of BB bytes (repack.h). Each type supplies how to
 * read row r's block b back in GGUF form (get), one GGUF block's dot in the
 * kernels' order (dot), and its AVX2 super-block kernel for 8 rows (sb).
 * The functions are always inlined with constant arguments, so the calls
 * through the pointers become direct ones. */
#ifndef KVQ_KERNELS_REPACK_KX8_H
#define KVQ_KERNELS_REPACK_KX8_H
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "types.h"

#define KVQ_KX8_PF_DIST 4096 /* codes prefetched this far ahead (repack_x8.c) */

typedef struct {
    size_t sb, bb; /* packed super-block of 8 rows; GGUF block */
    void (*get)(const void *p, int64_t nb, int64_t rows, int64_t r, int64_t b, void *blk);
    float (*dot)(const void *blk, const kvq_block_q8_K *y, float acc);
    void (*to_float)(const void *blk, float *dst, int64_t n);
} kvq_kx8_type;

/* Byte-shuffle indices giving each row (dword r of an 8-row word) the int16
 * pair (byte a, byte b) of its own dword, zero-extended: madd's multiplier
 * for a sub-block's int16 sums (a = b) or for two sub-blocks' activation sums. */
__attribute__((target("avx2,fma,f16c"))) static inline __m256i kvq_kx8_pair_idx(int a, int b) {
    const uint32_t v = 0x80008000u | (uint32_t)a | (uint32_t)b << 16, step = 0x00040004u;
    return _mm256_setr_epi32((int)v, (int)(v + step), (int)(v + 2 * step), (int)(v + 3 * step), (int)v,
                             (int)(v + step), (int)(v + 2 * step), (int)(v + 3 * step));
}
__attribute__((target("avx2,fma,f16c"))) static inline __m256i kvq_kx8_pair_u16(__m256i w, int a, int b) {
    return _mm256_shuffle_epi8(w, kvq_kx8_pair_idx(a, b));
}

static inline const uint8_t *kvq_kx8_group(const kvq_kx8_type *k, const void *p, int64_t nb, int64_t g, int64_t b) {
    return (const uint8_t *)p + (size_t)(g * nb + b) * k->sb;
}
static inline const uint8_t *kvq_kx8_tail(const kvq_kx8_type *k, const void *p, int64_t nb, int64_t r, int64_t b) {
    return (const uint8_t *)p + (size_t)(r * nb + b) * k->bb;
}

static inline __attribute__((always_inline)) void kvq_kx8_rows_ref(const kvq_kx8_type *k, const void *p, int64_t cols,
                                                                   int64_t rows, int64_t r0, int64_t r1, const void *act,
                                                                   size_t as, int n, float *Y, int64_t ldy) {
    const int64_t nb = cols / 256;
    uint8_t blk[256];
    for (int t = 0; t < n; t++) {
        const kvq_block_q8_K *y = (const kvq_block_q8_K *)((const uint8_t *)act + (size_t)t * as);
        for (int64_t r = r0; r < r1; r++) {
            float acc = 0;
            for (int64_t b = 0; b < nb; b++) {
                k->get(p, nb, rows, r, b, blk);
                acc = k->dot(blk, &y[b], acc);
            }
            Y[t * ldy + r] = acc;
        }
    }
}

static inline __attribute__((always_inline)) void kvq_kx8_dequant(const kvq_kx8_type *k, const void *p, int64_t cols,
                                                                  int64_t rows, int64_t r0, int64_t nr, float *dst) {
    const int64_t nb = cols / 256;
    uint8_t blk[256];
    for (int64_t r = r0; r < r0 + nr; r++)
        for (int64_t b = 0; b < nb; b++) {
            k->get(p, nb, rows, r, b, blk);
            k->to_float(blk, dst + (r - r0) * cols + 256 * b, 256);
        }
}

/* r1 must end a group or be `rows` */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
kvq_kx8_rows_avx2(const kvq_kx8_type *k, __m256 (*sb)(const uint8_t *o, const kvq_block_q8_K *y, __m256 acc),
                  const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act, size_t as, int n,
                  float *Y, int64_t ldy) {
    const int64_t nb = cols / 256, full = rows / 8 * 8, g1 = (r1 < full ? r1 : full) / 8;
    for (int t = 0; t < n; t++) {
        const kvq_block_q8_K *y = (const kvq_block_q8_K *)((const uint8_t *)act + (size_t)t * as);
        for (int64_t g = r0 / 8; g < g1; g++) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *o = kvq_kx8_group(k, p, nb, g, b);
                for (size_t c = 0; c < k->sb; c += 64) _mm_prefetch((const char *)o + KVQ_KX8_PF_DIST + c, _MM_HINT_T0);
                acc = sb(o, &y[b], acc);
            }
            _mm256_storeu_ps(Y + t * ldy + 8 * g, acc);
        }
        for (int64_t r = full > r0 ? full : r0; r < r1; r++) {
            float acc = 0;
            for (int64_t b = 0; b < nb; b++) acc = k->dot(kvq_kx8_tail(k, p, nb, r, b), &y[b], acc);
            Y[t * ldy + r] = acc;
        }
    }
}

#endif
