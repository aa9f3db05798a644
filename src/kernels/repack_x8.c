/* Q4_0, Q5_0, IQ4_NL and Q8_0 interleaved by 8 rows (repack.h): the layout,
 * its scalar reference and its AVX2 kernels. The types share everything but
 * the unpacking of a block, so each function takes the kind (a constant
 * once inlined) instead of existing four times.
 *
 * Group layout: blocks of 32 inputs in chunks of four, each chunk its 4 x 8
 * fp16 scales (64 bytes) then the 4 blocks' codes, CB bytes each (CB = 128
 * for Q4_0, 256 for Q8_0); a last chunk of fewer blocks has the same form.
 * A block's codes are CB/32 registers of 32 bytes; byte 4r + c of register
 * j is byte 4j + c of row r's GGUF codes. For Q8_0 that is input 4j + c.
 * For Q4_0 a code byte holds input i in its low nibble and input 16 + i in
 * its high one, so register j & 15 holds inputs 4j..4j+3 of all 8 rows and
 * register j >> 4 inputs 16+4j..: either way, 4 inputs of 8 rows against one
 * broadcast 32-bit word of activations. Q5_0 (CB = 160) is Q4_0's 128 bytes
 * and then 32 bytes of fifth bits: bit u of byte 4r + c is the fifth bit of
 * byte 4r + c of unpacked register u (0-3: the low nibbles of register u,
 * inputs 4u + c; 4-7: the high nibbles of register u - 4, inputs 16 + 4(u-4)
 * + c), so one shift and one mask per register bring them to bit 4.
 * IQ4_NL has Q4_0's layout; its nibbles index kvq_iq4nl_grid. A thread reads one stream of whole
 * 64-byte lines (chunks are 9 or 17 lines). With the scales after all of a
 * group's codes instead (two streams), Q4_0 decode on 2 Zen 3 threads ran
 * 16.0-16.6 tok/s against 17.7-20.1 (Llama-3.2-1B, alternated runs). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant_ref.h"
#include "repack.h"
#include "repack_act.h"
#include "simd_x86.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
/* How far ahead the AVX2 kernels prefetch their codes (the slim kernel's
 * distance, slim_x8.c): the hardware prefetcher alone leaves a Zen 3 core
 * short of its DRAM stream. */
#define PF_DIST 4096

enum { K4, K8, K5, KNL }; /* Q4_0, Q8_0, Q5_0, IQ4_NL */
static inline int64_t code_bytes(int k) { return k == K8 ? 256 : k == K5 ? 160 : 128; }
static inline int64_t block_bytes(int k) { return k == K8 ? 34 : k == K5 ? 22 : 18; } /* the GGUF block */

/* Blocks go in chunks of four: the chunk's 4 x 8 scales (64 bytes), then
 * its codes, so a thread reads one stream of whole aligned lines (a last
 * chunk of fewer blocks has the same form). */
static inline const uint8_t *chunk_base(const void *p, int64_t nb, int64_t g, int64_t b, int k) {
    return (const uint8_t *)p + (g * nb + b / 4 * 4) * 8 * block_bytes(k);
}
static inline const uint8_t *block_codes(const void *p, int64_t nb, int64_t g, int64_t b, int k) {
    const int64_t kc = nb - b / 4 * 4 < 4 ? nb - b / 4 * 4 : 4;
    return chunk_base(p, nb, g, b, k) + 16 * kc + code_bytes(k) * (b % 4);
}
static inline const kvq_f16 *block_scales(const void *p, int64_t nb, int64_t g, int64_t b, int k) {
    return (const kvq_f16 *)(chunk_base(p, nb, g, b, k) + 16 * (b % 4));
}
/* the R % 8 last rows keep the GGUF layout */
static inline const uint8_t *tail_row(const void *p, int64_t nb, int64_t r, int k) {
    return (const uint8_t *)p + r * nb * block_bytes(k);
}

static void pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1, void *dst,
                 int k) {
    const int64_t nb = cols / 32, full = rows / 8 * 8, bb = block_bytes(k), cb = code_bytes(k);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = (const uint8_t *)src + r * row_bytes;
        if (r >= full) {
            memcpy((uint8_t *)tail_row(dst, nb, r, k), s, (size_t)(nb * bb));
            continue;
        }
        const int lane = (int)(r % 8);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *q = (uint8_t *)block_codes(dst, nb, r / 8, b, k);
            const uint8_t *blk = s + b * bb;
            memcpy((kvq_f16 *)block_scales(dst, nb, r / 8, b, k) + lane, blk, 2);
            if (k != K5) {
                for (int j = 0; j < cb / 32; j++) memcpy(q + 32 * j + 4 * lane, blk + 2 + 4 * j, 4);
                continue;
            }
            const kvq_block_q5_0 *x = (const kvq_block_q5_0 *)blk;
            uint32_t h;
            memcpy(&h, x->qh, 4);
            for (int j = 0; j < 4; j++) memcpy(q + 32 * j + 4 * lane, x->qs + 4 * j, 4);
            for (int c = 0; c < 4; c++) {
                uint8_t hb = 0;
                for (int u = 0; u < 8; u++) hb |= (uint8_t)(((h >> (u < 4 ? 4 * u + c : 16 + 4 * (u - 4) + c)) & 1u) << u);
                q[128 + 4 * lane + c] = hb;
            }
        }
    }
}

void kvq_q4_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    pack(src, row_bytes, cols, rows, r0, r1, dst, K4);
}
void kvq_q8_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    pack(src, row_bytes, cols, rows, r0, r1, dst, K8);
}
void kvq_q5_0x8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    pack(src, row_bytes, cols, rows, r0, r1, dst, K5);
}
void kvq_iq4_nlx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                       void *dst) {
    pack(src, row_bytes, cols, rows, r0, r1, dst, KNL);
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

/* the same for a GGUF block (the R % 8 last rows) */
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

static inline void rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                            size_t as, int n, float *Y, int64_t ldy, int k) {
    const int64_t nb = cols / 32, full = rows / 8 * 8;
    for (int t = 0; t < n; t++) {
        const kvq_x8_act *a = (const kvq_x8_act *)((const uint8_t *)act + (size_t)t * as);
        for (int64_t r = r0; r < r1; r++) {
            if (r >= full) {
                Y[t * ldy + r] = tail_dot(tail_row(p, nb, r, k), a, nb, k);
                continue;
            }
            const int64_t g = r / 8, lane = r % 8;
            float acc = 0;
            for (int64_t b = 0; b < nb; b++)
                acc = fmaf((float)block_dot(block_codes(p, nb, g, b, k) + 4 * lane, 32, &a[b], k),
                           kvq_f16_to_f32(block_scales(p, nb, g, b, k)[lane]) * a[b].d, acc);
            Y[t * ldy + r] = acc;
        }
    }
}

static inline void dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst, int k) {
    const int64_t nb = cols / 32, full = rows / 8 * 8, cb = code_bytes(k);
    for (int64_t r = r0; r < r0 + nr; r++) {
        float *o = dst + (r - r0) * cols;
        if (r >= full) {
            (k == K8    ? kvq_q8_0_to_float_ref
             : k == K5  ? kvq_q5_0_to_float_ref
             : k == KNL ? kvq_iq4_nl_to_float_ref
                        : kvq_q4_0_to_float_ref)(tail_row(p, nb, r, k), o, cols);
            continue;
        }
        const int64_t g = r / 8, lane = r % 8;
        for (int64_t b = 0; b < nb; b++, o += 32) {
            const uint8_t *q = block_codes(p, nb, g, b, k) + 4 * lane;
            const float s = kvq_f16_to_f32(block_scales(p, nb, g, b, k)[lane]);
            for (int j = 0; j < (k == K8 ? cb / 32 : 4); j++)
                for (int c = 0; c < 4; c++) {
                    const uint8_t v = q[32 * j + c];
                    if (k == K8) {
                        o[4 * j + c] = (float)(int8_t)v * s;
                    } else if (k == KNL) {
                        o[4 * j + c] = (float)kvq_iq4nl_grid[v & 15] * s;
                        o[16 + 4 * j + c] = (float)kvq_iq4nl_grid[v >> 4] * s;
                    } else if (k == K5) {
                        const int h = q[128 + c];
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

/* NT tokens against one group. Q4_0: the 8 unpacked registers serve every
 * token, and eight maddubs sums (at most 8 x 2 x 15 x 128 = 30720) add up
 * in int16 without saturating before one madd. Q5_0: the same registers
 * with their fifth bits, in two sums of four. Q8_0: maddubs wants one
 * unsigned operand, so each register goes through |W| and sign(y, W), and
 * two int16 sums could reach 2 x 32258, so each is widened by madd first. */
T_AVX2 static inline __attribute__((always_inline)) void group_avx2(const void *p, int64_t g, int64_t nb,
                                                                   const uint8_t *act, size_t as, const int NT,
                                                                   __m256 *acc, const int k) {
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *q = block_codes(p, nb, g, b, k);
        for (int o = 0; o < code_bytes(k); o += 64) _mm_prefetch((const char *)q + PF_DIST + o, _MM_HINT_T0);
        __m256i w[8];
        if (k != K8) {
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(q + 32 * m));
                w[m] = _mm256_and_si256(raw, m4);
                w[m + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            }
        }
        if (k == K5) { /* each register's fifth bits, from bit u of the 32 bytes after the nibbles to bit 4 */
            const __m256i hb = _mm256_loadu_si256((const __m256i *)(q + 128)), b4 = _mm256_set1_epi8(16);
            w[0] = _mm256_or_si256(w[0], _mm256_and_si256(_mm256_slli_epi16(hb, 4), b4));
            w[1] = _mm256_or_si256(w[1], _mm256_and_si256(_mm256_slli_epi16(hb, 3), b4));
            w[2] = _mm256_or_si256(w[2], _mm256_and_si256(_mm256_slli_epi16(hb, 2), b4));
            w[3] = _mm256_or_si256(w[3], _mm256_and_si256(_mm256_slli_epi16(hb, 1), b4));
            w[4] = _mm256_or_si256(w[4], _mm256_and_si256(hb, b4));
            w[5] = _mm256_or_si256(w[5], _mm256_and_si256(_mm256_srli_epi16(hb, 1), b4));
            w[6] = _mm256_or_si256(w[6], _mm256_and_si256(_mm256_srli_epi16(hb, 2), b4));
            w[7] = _mm256_or_si256(w[7], _mm256_and_si256(_mm256_srli_epi16(hb, 3), b4));
        }
        if (k == KNL) { /* the grid's values, signed bytes */
            const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvq_iq4nl_grid));
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++) w[u] = _mm256_shuffle_epi8(grid, w[u]);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)block_scales(p, nb, g, b, k)));
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const kvq_x8_act *y = (const kvq_x8_act *)(act + (size_t)t * as) + b;
            __m256i s32;
            if (k == K8) {
                s32 = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * j));
                    const __m256i p =
                        _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(kvq_bcast4_avx2(y->qs + 4 * j), v));
                    s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, ones));
                }
            } else if (k == KNL) { /* signed values up to 127, as Q8_0's: |W| and sign(y, W), widened one by one */
                s32 = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w[j], w[j]),
                                                           _mm256_sign_epi8(kvq_bcast4_avx2(y->qs + (j < 4 ? 4 * j : 16 + 4 * (j - 4))), w[j]));
                    s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(p, ones));
                }
            } else if (k == K5) { /* 5-bit codes: four maddubs sums at most 4 x 2 x 31 x 127 = 31496 */
                __m256i s0 = _mm256_maddubs_epi16(w[0], kvq_bcast4_avx2(y->qs)),
                        s1 = _mm256_maddubs_epi16(w[4], kvq_bcast4_avx2(y->qs + 16));
#pragma GCC unroll 3
                for (int j = 1; j < 4; j++) {
                    s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(w[j], kvq_bcast4_avx2(y->qs + 4 * j)));
                    s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(w[j + 4], kvq_bcast4_avx2(y->qs + 16 + 4 * j)));
                }
                s32 = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(s0, ones), _mm256_madd_epi16(s1, ones)),
                                       _mm256_set1_epi32(2 * y->c));
            } else {
                __m256i s = _mm256_maddubs_epi16(w[0], kvq_bcast4_avx2(y->qs));
#pragma GCC unroll 8
                for (int j = 1; j < 8; j++) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[j], kvq_bcast4_avx2(y->qs + 4 * j)));
                s32 = _mm256_add_epi32(_mm256_madd_epi16(s, ones), _mm256_set1_epi32(y->c));
            }
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(dw, _mm256_set1_ps(y->d)), acc[t]);
        }
    }
}

T_AVX2 static inline __attribute__((always_inline)) void groups_avx2(const void *p, int64_t nb, int64_t g0, int64_t g1,
                                                                    const uint8_t *act, size_t as, const int NT,
                                                                    float *Y, int64_t ldy, const int k) {
    for (int64_t g = g0; g < g1; g++) {
        __m256 acc[4];
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
        group_avx2(p, g, nb, act, as, NT, acc, k);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) _mm256_storeu_ps(Y + t * ldy + 8 * g, acc[t]);
    }
}

/* r1 must end a group or be `rows` (a thread's row blocks are multiples of 16) */
T_AVX2 static inline __attribute__((always_inline)) void rows_avx2(const void *p, int64_t cols, int64_t rows,
                                                                  int64_t r0, int64_t r1, const void *act, size_t as,
                                                                  int n, float *Y, int64_t ldy, const int k) {
    const int64_t nb = cols / 32, full = rows / 8 * 8, g0 = r0 / 8, g1 = (r1 < full ? r1 : full) / 8;
    const uint8_t *a = act;
    int t = 0;
    /* four tokens at a time keep their accumulators in registers */
    for (; t + 4 <= n; t += 4) groups_avx2(p, nb, g0, g1, a + (size_t)t * as, as, 4, Y + t * ldy, ldy, k);
    for (; t + 2 <= n; t += 2) groups_avx2(p, nb, g0, g1, a + (size_t)t * as, as, 2, Y + t * ldy, ldy, k);
    for (; t < n; t++) groups_avx2(p, nb, g0, g1, a + (size_t)t * as, as, 1, Y + t * ldy, ldy, k);
    for (int64_t r = full > r0 ? full : r0; r < r1; r++)
        for (int tk = 0; tk < n; tk++)
            Y[tk * ldy + r] = tail_dot(tail_row(p, nb, r, k), (const kvq_x8_act *)(a + (size_t)tk * as), nb, k);
}

#define KERNELS(T, K)                                                                                                \
    static void T##_rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,   \
                             size_t as, int n, float *Y, int64_t ldy) {                                              \
        rows_ref(p, cols, rows, r0, r1, act, as, n, Y, ldy, K);                                                    \
    }                                                                                                               \
    T_AVX2 static void T##_rows_avx2(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1,            \
                                     const void *act, size_t as, int n, float *Y, int64_t ldy) {                     \
        rows_avx2(p, cols, rows, r0, r1, act, as, n, Y, ldy, K);                                                   \
    }                                                                                                               \
    static void T##_dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {       \
        dequant(p, cols, rows, r0, nr, dst, K);                                                                    \
    }                                                                                                               \
    const kvq_packed_kernel kvq_##T##x8_ref = {#T "x8 (scalar)", kvq_x8_act_size, kvq_x8_quant_ref, T##_rows_ref,   \
                                               T##_dequant, NULL, NULL};                                             \
    const kvq_packed_kernel kvq_##T##x8_avx2 = {#T "x8 (avx2)", kvq_x8_act_size, kvq_x8_quant_avx2, T##_rows_avx2,  \
                                                T##_dequant, NULL, NULL};
KERNELS(q4_0, K4)
KERNELS(q8_0, K8)
KERNELS(q5_0, K5)
KERNELS(iq4_nl, KNL)
