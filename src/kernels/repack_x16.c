/* Q4_0, Q5_0, IQ4_NL and Q8_0 interleaved by 16 rows for AVX-512 VNNI
 * (repack.h): the layout, its scalar reference and its kernels.
 *
 * Why a second layout beside the 8-row one (repack_x8.c): a 64-byte
 * register holds 4 inputs of 16 rows, so one `vpdpbusd` against one
 * broadcast 32-bit word of activations does 64 products and leaves one
 * int32 sum per row, where the AVX2 kernel needs a `maddubs`, a share of a
 * `madd` and adds for 32. On a Zen 5 host the file-layout AVX-512 kernels
 * (gemv_q4_0.c, simd_avx512.c) streamed Q4_0 from DRAM at 38 GB/s on two
 * threads and the AVX2 8-row kernel at 62, against a 65-73 GB/s read loop.
 *
 * Group layout, as the 8-row one with 16 rows: blocks of 32 inputs in
 * chunks of four, each chunk its 4 x 16 fp16 scales (128 bytes) then the
 * blocks' codes, CB bytes each (256 for Q4_0 and IQ4_NL, 512 for Q8_0, 320
 * for Q5_0); group g starts at byte g * 16 * row_bytes, so the copy is as
 * large as the matrix, and the rows % 16 last rows keep the GGUF layout.
 * A block's codes are CB/64 registers of 64 bytes; byte 4r + c of register
 * j is byte 4j + c of row r's GGUF codes. Q4_0: register j holds inputs
 * 4j.. (low nibbles) and 16+4j.. (high) of the 16 rows. Q5_0 adds 64 bytes:
 * bit u of byte 4r + c is the fifth bit of byte 4r + c of unpacked register
 * u (u < 4: low nibbles of register u; u >= 4: high nibbles of u - 4).
 *
 * vpdpbusd multiplies unsigned by signed bytes: Q8_0's codes and IQ4_NL's
 * grid values are offset by 128 (a xor) and 128 times the activations' sum
 * is taken off (16 c, c = -8 sum); Q4_0 and Q5_0 take off 8 and 16 times it
 * (c, 2c). The integer dots are exact, and the float steps are the scalar
 * reference's, so the kernels equal it bit for bit. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant_ref.h"
#include "repack.h"
#include "repack_act.h"

#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define PF_DIST 4096 /* as the 8-row kernels: ahead of the hardware prefetcher */

enum { K4, K8, K5, KNL }; /* Q4_0, Q8_0, Q5_0, IQ4_NL */
static inline int64_t code_bytes(int k) { return k == K8 ? 512 : k == K5 ? 320 : 256; }
static inline int64_t block_bytes(int k) { return k == K8 ? 34 : k == K5 ? 22 : 18; } /* the GGUF block */

static inline const uint8_t *chunk_base(const void *p, int64_t nb, int64_t g, int64_t b, int k) {
    return (const uint8_t *)p + (g * nb + b / 4 * 4) * 16 * block_bytes(k);
}
static inline const uint8_t *block_codes(const void *p, int64_t nb, int64_t g, int64_t b, int k) {
    const int64_t kc = nb - b / 4 * 4 < 4 ? nb - b / 4 * 4 : 4;
    return chunk_base(p, nb, g, b, k) + 32 * kc + code_bytes(k) * (b % 4);
}
static inline const kvq_f16 *block_scales(const void *p, int64_t nb, int64_t g, int64_t b, int k) {
    return (const kvq_f16 *)(chunk_base(p, nb, g, b, k) + 32 * (b % 4));
}
static inline const uint8_t *tail_row(const void *p, int64_t nb, int64_t r, int k) {
    return (const uint8_t *)p + r * nb * block_bytes(k);
}

static void pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1, void *dst,
                 int k) {
    const int64_t nb = cols / 32, full = rows / 16 * 16, bb = block_bytes(k);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = (const uint8_t *)src + r * row_bytes;
        if (r >= full) {
            memcpy((uint8_t *)tail_row(dst, nb, r, k), s, (size_t)(nb * bb));
            continue;
        }
        const int lane = (int)(r % 16);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *q = (uint8_t *)block_codes(dst, nb, r / 16, b, k);
            const uint8_t *blk = s + b * bb;
            memcpy((kvq_f16 *)block_scales(dst, nb, r / 16, b, k) + lane, blk, 2);
            if (k != K5) {
                for (int j = 0; j < (k == K8 ? 8 : 4); j++) memcpy(q + 64 * j + 4 * lane, blk + 2 + 4 * j, 4);
                continue;
            }
            const kvq_block_q5_0 *x = (const kvq_block_q5_0 *)blk;
            uint32_t h;
            memcpy(&h, x->qh, 4);
            for (int j = 0; j < 4; j++) memcpy(q + 64 * j + 4 * lane, x->qs + 4 * j, 4);
            for (int c = 0; c < 4; c++) {
                uint8_t hb = 0;
                for (int u = 0; u < 8; u++) hb |= (uint8_t)(((h >> (u < 4 ? 4 * u + c : 16 + 4 * (u - 4) + c)) & 1u) << u);
                q[256 + 4 * lane + c] = hb;
            }
        }
    }
}

/* Row r of a group: its 32 codes' integer dot with the activations (codes
 * 4 at a time, 64 bytes apart). */
static int32_t block_dot(const uint8_t *q, const kvq_x8_act *a, int k) {
    int32_t s = k == K8 || k == KNL ? 0 : k == K5 ? 2 * a->c : a->c;
    for (int j = 0; j < (k == K8 ? 8 : 4); j++)
        for (int c = 0; c < 4; c++) {
            const uint8_t v = q[64 * j + c];
            if (k == K8) {
                s += (int8_t)v * a->qs[4 * j + c];
            } else if (k == KNL) {
                s += kvq_iq4nl_grid[v & 15] * a->qs[4 * j + c] + kvq_iq4nl_grid[v >> 4] * a->qs[16 + 4 * j + c];
            } else {
                const int h = k == K5 ? q[256 + c] : 0;
                s += ((v & 15) | ((h >> j & 1) << 4)) * a->qs[4 * j + c] +
                     ((v >> 4) | ((h >> (j + 4) & 1) << 4)) * a->qs[16 + 4 * j + c];
            }
        }
    return s;
}

/* a GGUF block (the tail rows) */
static int32_t gguf_block_dot(const uint8_t *blk, const kvq_x8_act *a, int k) {
    int32_t s = k == K8 || k == KNL ? 0 : k == K5 ? 2 * a->c : a->c;
    for (int i = 0; i < 32; i++) {
        int w;
        if (k == K8) w = ((const int8_t *)blk)[2 + i];
        else if (k == K5) w = kvq_q5_code(((const kvq_block_q5_0 *)blk)->qs, ((const kvq_block_q5_0 *)blk)->qh, i);
        else {
            const uint8_t v = blk[2 + i % 16];
            const int code = i < 16 ? v & 15 : v >> 4;
            w = k == KNL ? kvq_iq4nl_grid[code] : code;
        }
        s += w * a->qs[i];
    }
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

static void rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act, size_t as,
                     int n, float *Y, int64_t ldy, int k) {
    const int64_t nb = cols / 32, full = rows / 16 * 16;
    for (int t = 0; t < n; t++) {
        const kvq_x8_act *a = (const kvq_x8_act *)((const uint8_t *)act + (size_t)t * as);
        for (int64_t r = r0; r < r1; r++) {
            if (r >= full) {
                Y[t * ldy + r] = tail_dot(tail_row(p, nb, r, k), a, nb, k);
                continue;
            }
            const int64_t g = r / 16, lane = r % 16;
            float acc = 0;
            for (int64_t b = 0; b < nb; b++)
                acc = fmaf((float)block_dot(block_codes(p, nb, g, b, k) + 4 * lane, &a[b], k),
                           kvq_f16_to_f32(block_scales(p, nb, g, b, k)[lane]) * a[b].d, acc);
            Y[t * ldy + r] = acc;
        }
    }
}

static void dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst, int k) {
    const int64_t nb = cols / 32, full = rows / 16 * 16;
    for (int64_t r = r0; r < r0 + nr; r++) {
        float *o = dst + (r - r0) * cols;
        if (r >= full) {
            (k == K8    ? kvq_q8_0_to_float_ref
             : k == K5  ? kvq_q5_0_to_float_ref
             : k == KNL ? kvq_iq4_nl_to_float_ref
                        : kvq_q4_0_to_float_ref)(tail_row(p, nb, r, k), o, cols);
            continue;
        }
        const int64_t g = r / 16, lane = r % 16;
        for (int64_t b = 0; b < nb; b++, o += 32) {
            const uint8_t *q = block_codes(p, nb, g, b, k) + 4 * lane;
            const float s = kvq_f16_to_f32(block_scales(p, nb, g, b, k)[lane]);
            for (int j = 0; j < (k == K8 ? 8 : 4); j++)
                for (int c = 0; c < 4; c++) {
                    const uint8_t v = q[64 * j + c];
                    if (k == K8) {
                        o[4 * j + c] = (float)(int8_t)v * s;
                    } else if (k == KNL) {
                        o[4 * j + c] = (float)kvq_iq4nl_grid[v & 15] * s;
                        o[16 + 4 * j + c] = (float)kvq_iq4nl_grid[v >> 4] * s;
                    } else {
                        const int h = k == K5 ? q[256 + c] : 0, off = k == K5 ? 16 : 8;
                        o[4 * j + c] = (float)(((v & 15) | ((h >> j & 1) << 4)) - off) * s;
                        o[16 + 4 * j + c] = (float)(((v >> 4) | ((h >> (j + 4) & 1) << 4)) - off) * s;
                    }
                }
        }
    }
}

/* 4 activation bytes to every 32-bit lane, from memory: a broadcast from a
 * general register (what a copy to an int32 became) costs a move between
 * register files per word, and it was most of a prefill's kernel time. */
T_512 static inline __m512i bcast4(const int8_t *p) { return _mm512_broadcastd_epi32(_mm_loadu_si32(p)); }

/* NT tokens against one group of 16 rows. The unpacked registers (8 for
 * every type: Q8_0's 8 registers of codes, or the 4-bit types' low and
 * high nibbles) serve all NT tokens; each token adds 8 vpdpbusd in two
 * chains, so the adds do not wait on one another. */
T_512 static inline __attribute__((always_inline)) void group_512(const void *p, int64_t g, int64_t nb,
                                                                 const uint8_t *act, size_t as, const int NT,
                                                                 __m512 *acc, const int k) {
    const __m512i m4 = _mm512_set1_epi8(15), x80 = _mm512_set1_epi8((char)0x80);
    /* IQ4_NL's grid + 128 (unsigned), in each 16-byte lane */
    const __m512i grid =
        k == KNL ? _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)kvq_iq4nl_grid)), x80)
                 : _mm512_setzero_si512();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *q = block_codes(p, nb, g, b, k);
        for (int o = 0; o < code_bytes(k); o += 64) _mm_prefetch((const char *)q + PF_DIST + o, _MM_HINT_T0);
        __m512i w[8];
        if (k == K8) {
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) w[j] = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * j), x80);
        } else {
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                const __m512i raw = _mm512_loadu_si512(q + 64 * m);
                w[m] = _mm512_and_si512(raw, m4);
                w[m + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            }
        }
        if (k == K5) { /* fifth bit u of each byte to bit 4 of register u */
            const __m512i hb = _mm512_loadu_si512(q + 256), b4 = _mm512_set1_epi8(16);
            w[0] = _mm512_or_si512(w[0], _mm512_and_si512(_mm512_slli_epi16(hb, 4), b4));
            w[1] = _mm512_or_si512(w[1], _mm512_and_si512(_mm512_slli_epi16(hb, 3), b4));
            w[2] = _mm512_or_si512(w[2], _mm512_and_si512(_mm512_slli_epi16(hb, 2), b4));
            w[3] = _mm512_or_si512(w[3], _mm512_and_si512(_mm512_slli_epi16(hb, 1), b4));
            w[4] = _mm512_or_si512(w[4], _mm512_and_si512(hb, b4));
            w[5] = _mm512_or_si512(w[5], _mm512_and_si512(_mm512_srli_epi16(hb, 1), b4));
            w[6] = _mm512_or_si512(w[6], _mm512_and_si512(_mm512_srli_epi16(hb, 2), b4));
            w[7] = _mm512_or_si512(w[7], _mm512_and_si512(_mm512_srli_epi16(hb, 3), b4));
        }
        if (k == KNL) {
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++) w[u] = _mm512_shuffle_epi8(grid, w[u]);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)block_scales(p, nb, g, b, k)));
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const kvq_x8_act *y = (const kvq_x8_act *)(act + (size_t)t * as) + b;
            const int32_t c = k == K4 ? y->c : k == K5 ? 2 * y->c : 16 * y->c;
            __m512i s0 = _mm512_set1_epi32(c), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                s0 = _mm512_dpbusd_epi32(s0, w[j], bcast4(y->qs + 4 * j));
                s1 = _mm512_dpbusd_epi32(s1, w[j + 4], bcast4(y->qs + 16 + 4 * j));
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dw, _mm512_set1_ps(y->d)),
                                     acc[t]);
        }
    }
}

T_512 static inline __attribute__((always_inline)) void groups_512(const void *p, int64_t nb, int64_t g0, int64_t g1,
                                                                  const uint8_t *act, size_t as, const int NT,
                                                                  float *Y, int64_t ldy, const int k) {
    for (int64_t g = g0; g < g1; g++) {
        __m512 acc[8];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
        group_512(p, g, nb, act, as, NT, acc, k);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) _mm512_storeu_ps(Y + t * ldy + 16 * g, acc[t]);
    }
}

/* r0 a multiple of 16; r1 ends a group or is `rows` (a thread's row blocks
 * are multiples of 16) */
T_512 static inline __attribute__((always_inline)) void rows_512(const void *p, int64_t cols, int64_t rows,
                                                                int64_t r0, int64_t r1, const void *act, size_t as,
                                                                int n, float *Y, int64_t ldy, const int k) {
    const int64_t nb = cols / 32, full = rows / 16 * 16, g0 = r0 / 16, g1 = (r1 < full ? r1 : full) / 16;
    const uint8_t *a = act;
    int t = 0;
    /* with 32 registers, 8 unpacked registers and up to 8 tokens' sums fit */
    for (; t + 8 <= n; t += 8) groups_512(p, nb, g0, g1, a + (size_t)t * as, as, 8, Y + t * ldy, ldy, k);
    for (; t + 4 <= n; t += 4) groups_512(p, nb, g0, g1, a + (size_t)t * as, as, 4, Y + t * ldy, ldy, k);
    for (; t + 2 <= n; t += 2) groups_512(p, nb, g0, g1, a + (size_t)t * as, as, 2, Y + t * ldy, ldy, k);
    for (; t < n; t++) groups_512(p, nb, g0, g1, a + (size_t)t * as, as, 1, Y + t * ldy, ldy, k);
    for (int64_t r = full > r0 ? full : r0; r < r1; r++)
        for (int tk = 0; tk < n; tk++)
            Y[tk * ldy + r] = tail_dot(tail_row(p, nb, r, k), (const kvq_x8_act *)(a + (size_t)tk * as), nb, k);
}

#define KERNELS(T, K)                                                                                                \
    static void T##_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,   \
                         void *dst) {                                                                               \
        pack(src, row_bytes, cols, rows, r0, r1, dst, K);                                                          \
    }                                                                                                               \
    static void T##_rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,   \
                             size_t as, int n, float *Y, int64_t ldy) {                                              \
        rows_ref(p, cols, rows, r0, r1, act, as, n, Y, ldy, K);                                                    \
    }                                                                                                               \
    T_512 static void T##_rows_512(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1,              \
                                   const void *act, size_t as, int n, float *Y, int64_t ldy) {                       \
        rows_512(p, cols, rows, r0, r1, act, as, n, Y, ldy, K);                                                    \
    }                                                                                                               \
    static void T##_dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {       \
        dequant(p, cols, rows, r0, nr, dst, K);                                                                    \
    }                                                                                                               \
    const kvq_packed_kernel kvq_##T##x16_ref = {#T "x16 (scalar)", kvq_x8_act_size, kvq_x8_quant_ref,             \
                                                T##_rows_ref,      T##_dequant,     T##_pack,                        \
                                                NULL};                                                               \
    const kvq_packed_kernel kvq_##T##x16_vnni = {#T "x16 (avx512 vnni)", kvq_x8_act_size, kvq_x8_quant_avx2,       \
                                                 T##_rows_512,         T##_dequant,     T##_pack,                    \
                                                 &kvq_##T##x16_ref};
KERNELS(q4_0, K4)
KERNELS(q8_0, K8)
KERNELS(q5_0, K5)
KERNELS(iq4_nl, KNL)
