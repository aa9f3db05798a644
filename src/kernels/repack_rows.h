/* The row-interleaved layouts of the 32-wide types Q4_0, Q8_0, Q5_0 and
 * IQ4_NL (repack.h), in groups of G rows: G = 8 for the AVX2 kernels
 * (repack_x8.c), G = 16 for the AVX-512 VNNI ones (repack_x16.c). The two
 * differ only in G, so the layout, the packing, the scalar reference and
 * the dequantization are written once here, each function taking the kind
 * k and G (constants once inlined); only the SIMD kernels stay per file.
 *
 * Group layout: blocks of 32 inputs in chunks of four, each chunk its
 * 4 x G fp16 scales, then the 4 blocks' codes, code_bytes(k, G) each; group
 * g starts at byte g * G * row_bytes, so the copy is exactly as large as the
 * matrix, and the rows % G last rows keep the GGUF layout. A block's codes
 * are registers of 4 G bytes (8 for Q8_0, 4 for the others); byte 4r + c of
 * register j is byte 4j + c of row r's GGUF codes. For Q8_0 that is input
 * 4j + c. For Q4_0 a code byte holds input i in its low nibble and 16 + i in
 * its high one, so register j holds inputs 4j.. (low nibbles) and 16+4j..
 * (high) of all G rows: either way, 4 inputs of G rows against one
 * broadcast 32-bit word of activations. Q5_0 is Q4_0's registers and then
 * 4 G bytes of fifth bits: bit u of byte 4r + c is the fifth bit of byte
 * 4r + c of unpacked register u (0-3: the low nibbles of register u,
 * inputs 4u + c; 4-7: the high nibbles of register u - 4, inputs 16 +
 * 4(u-4) + c), so one shift and one mask per register bring them to bit 4.
 * IQ4_NL has Q4_0's layout; its nibbles index kvq_iq4nl_grid.
 *
 * Included by those two files only: the names are short and file-local. */
#ifndef KVQ_KERNELS_REPACK_ROWS_H
#define KVQ_KERNELS_REPACK_ROWS_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant_ref.h"
#include "repack_act.h"
#include "types.h"

/* How far ahead the kernels prefetch their codes (the slim kernel's
 * distance, slim_x8.c): the hardware prefetcher alone leaves a Zen 3 core
 * short of its DRAM stream. */
#define PF_DIST 4096

enum { K4, K8, K5, KNL }; /* Q4_0, Q8_0, Q5_0, IQ4_NL */
/* a block's code bytes in a group of G rows: 32 G for Q8_0, 16 G of nibbles
 * (+ 4 G of fifth bits for Q5_0) for the others */
static inline int64_t code_bytes(int k, int G) { return k == K8 ? 32 * G : k == K5 ? 20 * G : 16 * G; }
static inline int64_t block_bytes(int k) { return k == K8 ? 34 : k == K5 ? 22 : 18; } /* the GGUF block */

/* Blocks go in chunks of four: the chunk's 4 x G scales, then its codes,
 * so a thread reads one stream of whole aligned lines (a last chunk of
 * fewer blocks has the same form). Group g starts at g G row_bytes. */
static inline const uint8_t *chunk_base(const void *p, int64_t nb, int64_t g, int64_t b, int k, int G) {
    return (const uint8_t *)p + (g * nb + b / 4 * 4) * G * block_bytes(k);
}
static inline const uint8_t *block_codes(const void *p, int64_t nb, int64_t g, int64_t b, int k, int G) {
    const int64_t kc = nb - b / 4 * 4 < 4 ? nb - b / 4 * 4 : 4;
    return chunk_base(p, nb, g, b, k, G) + 2 * G * kc + code_bytes(k, G) * (b % 4);
}
static inline const kvq_f16 *block_scales(const void *p, int64_t nb, int64_t g, int64_t b, int k, int G) {
    return (const kvq_f16 *)(chunk_base(p, nb, g, b, k, G) + 2 * G * (b % 4));
}
/* the R % G last rows keep the GGUF layout */
static inline const uint8_t *tail_row(const void *p, int64_t nb, int64_t r, int k) {
    return (const uint8_t *)p + r * nb * block_bytes(k);
}

/* Rows r0..r1-1 of a matrix into the layout (each row writes only its own
 * bytes, so threads can share the rows out in any ranges). */
static void pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1, void *dst,
                 int k, int G) {
    const int64_t nb = cols / 32, full = rows / G * G, bb = block_bytes(k);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = (const uint8_t *)src + r * row_bytes;
        if (r >= full) {
            memcpy((uint8_t *)tail_row(dst, nb, r, k), s, (size_t)(nb * bb));
            continue;
        }
        const int lane = (int)(r % G);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *q = (uint8_t *)block_codes(dst, nb, r / G, b, k, G);
            const uint8_t *blk = s + b * bb;
            memcpy((kvq_f16 *)block_scales(dst, nb, r / G, b, k, G) + lane, blk, 2);
            if (k != K5) {
                for (int j = 0; j < (k == K8 ? 8 : 4); j++) memcpy(q + 4 * G * j + 4 * lane, blk + 2 + 4 * j, 4);
                continue;
            }
            const kvq_block_q5_0 *x = (const kvq_block_q5_0 *)blk;
            uint32_t h;
            memcpy(&h, x->qh, 4);
            for (int j = 0; j < 4; j++) memcpy(q + 4 * G * j + 4 * lane, x->qs + 4 * j, 4);
            for (int c = 0; c < 4; c++) {
                uint8_t hb = 0;
                for (int u = 0; u < 8; u++) hb |= (uint8_t)(((h >> (u < 4 ? 4 * u + c : 16 + 4 * (u - 4) + c)) & 1u) << u);
                q[16 * G + 4 * lane + c] = hb;
            }
        }
    }
}

/* The integer dot of one packed block's 32 codes (4 at a time, `stride`
 * bytes apart; Q5_0's fifth bits 4 x stride bytes after the nibbles) with
 * its activations. Q4_0 and Q5_0 sum unsigned codes and take 8 or 16 times
 * the activations' sum off (c = -8 sum); IQ4_NL sums its grid's values. */
static inline int32_t block_dot(const uint8_t *q, int stride, const kvq_x8_act *a, int k) {
    int32_t s = k == K8 || k == KNL ? 0 : k == K5 ? 2 * a->c : a->c;
    for (int j = 0; j < (k == K8 ? 8 : 4); j++)
        for (int c = 0; c < 4; c++) {
            const uint8_t v = q[stride * j + c];
            if (k == K8) {
                s += (int8_t)v * a->qs[4 * j + c];
                continue;
            }
            if (k == KNL) {
                s += kvq_iq4nl_grid[v & 15] * a->qs[4 * j + c] + kvq_iq4nl_grid[v >> 4] * a->qs[16 + 4 * j + c];
                continue;
            }
            const int h = k == K5 ? q[4 * stride + c] : 0;
            s += ((v & 15) | ((h >> j & 1) << 4)) * a->qs[4 * j + c] + ((v >> 4) | ((h >> (j + 4) & 1) << 4)) * a->qs[16 + 4 * j + c];
        }
    return s;
}

/* the same for a GGUF block (the R % G last rows) */
static inline int32_t gguf_block_dot(const uint8_t *blk, const kvq_x8_act *a, int k) {
    if (k != K5) return block_dot(blk + 2, 4, a, k);
    const kvq_block_q5_0 *x = (const kvq_block_q5_0 *)blk;
    int32_t s = 2 * a->c;
    for (int i = 0; i < 32; i++) s += kvq_q5_code(x->qs, x->qh, i) * a->qs[i];
    return s;
}

static float tail_dot(const uint8_t *w, const kvq_x8_act *a, int64_t nb, int k) {
    float acc = 0;
    for (int64_t b = 0; b < nb; b++, w += block_bytes(k)) {
        kvq_f16 d;
        memcpy(&d, w, 2);
        acc = fmaf((float)gguf_block_dot(w, &a[b], k), kvq_f16_to_f32(d) * a[b].d, acc);
    }
    return acc;
}

/* The scalar reference of the kernels: per row, exact integer block dots,
 * then fmaf in block order (what the SIMD lanes do). */
static inline void rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                            size_t as, int n, float *Y, int64_t ldy, int k, int G) {
    const int64_t nb = cols / 32, full = rows / G * G;
    for (int t = 0; t < n; t++) {
        const kvq_x8_act *a = (const kvq_x8_act *)((const uint8_t *)act + (size_t)t * as);
        for (int64_t r = r0; r < r1; r++) {
            if (r >= full) {
                Y[t * ldy + r] = tail_dot(tail_row(p, nb, r, k), a, nb, k);
                continue;
            }
            const int64_t g = r / G, lane = r % G;
            float acc = 0;
            for (int64_t b = 0; b < nb; b++)
                acc = fmaf((float)block_dot(block_codes(p, nb, g, b, k, G) + 4 * lane, 4 * G, &a[b], k),
                           kvq_f16_to_f32(block_scales(p, nb, g, b, k, G)[lane]) * a[b].d, acc);
            Y[t * ldy + r] = acc;
        }
    }
}

/* rows r0..r0+nr-1 back to f32 */
static inline void dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst, int k,
                           int G) {
    const int64_t nb = cols / 32, full = rows / G * G;
    for (int64_t r = r0; r < r0 + nr; r++) {
        float *o = dst + (r - r0) * cols;
        if (r >= full) {
            (k == K8    ? kvq_q8_0_to_float_ref
             : k == K5  ? kvq_q5_0_to_float_ref
             : k == KNL ? kvq_iq4_nl_to_float_ref
                        : kvq_q4_0_to_float_ref)(tail_row(p, nb, r, k), o, cols);
            continue;
        }
        const int64_t g = r / G, lane = r % G;
        for (int64_t b = 0; b < nb; b++, o += 32) {
            const uint8_t *q = block_codes(p, nb, g, b, k, G) + 4 * lane;
            const float s = kvq_f16_to_f32(block_scales(p, nb, g, b, k, G)[lane]);
            for (int j = 0; j < (k == K8 ? 8 : 4); j++)
                for (int c = 0; c < 4; c++) {
                    const uint8_t v = q[4 * G * j + c];
                    if (k == K8) {
                        o[4 * j + c] = (float)(int8_t)v * s;
                    } else if (k == KNL) {
                        o[4 * j + c] = (float)kvq_iq4nl_grid[v & 15] * s;
                        o[16 + 4 * j + c] = (float)kvq_iq4nl_grid[v >> 4] * s;
                    } else if (k == K5) {
                        const int h = q[16 * G + c];
                        o[4 * j + c] = (float)(((v & 15) | ((h >> j & 1) << 4)) - 16) * s;
                        o[16 + 4 * j + c] = (float)(((v >> 4) | ((h >> (j + 4) & 1) << 4)) - 16) * s;
                    } else {
                        o[4 * j + c] = (float)((v & 15) - 8) * s;
                        o[16 + 4 * j + c] = (float)((v >> 4) - 8) * s;
                    }
                }
        }
    }
}

#endif
