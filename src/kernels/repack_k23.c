/* Q2_K and Q3_K interleaved by 8 rows (repack.h), against Q8_K activations:
 * the matrices of llama.cpp's Q2_K and Q3_K_* files.
 *
 * Both types keep their 2 low code bits in 64 bytes per row: byte 32n + b
 * (n = 0, 1; b = 0..31) holds, in bit pair j, input 128n + 32j + b. Per
 * group of 8 rows and super-block of 256 inputs, with Q(n, kb) the register
 * whose byte 4r + k is qs[32n + 4kb + k] of row r (kb = 0..7):
 *   Q2_K (672 bytes = 8 x 84):  d[8], dmin[8] (fp16)                   32
 *                               S0..S3: scales[4m + i] of row r at 4r + i  128
 *                               Q(0, 0..7), Q(1, 0..7)                     512
 *   Q3_K (880 bytes = 8 x 110): d[8] (fp16)                              16
 *                               W0..W2: scales[4m + i] of row r at 4r + i   96
 *                               M(0..7): hmask[4kb + k] of row r at 4r + k 256
 *                               Q(0, 0..7), Q(1, 0..7)                     512
 * Input 128n + 32j + 4kb + k of row r is then bit pair j of byte 4r + k of
 * Q(n, kb) (and, for Q3_K, bit 4n + j of M(kb)'s byte): one shift and mask
 * give 4 inputs of 8 rows, against one broadcast word of activations. Its
 * sub-block is 8n + 2j + (kb >= 4). Codes enter maddubs unsigned (Q3_K:
 * u = code + 4, 0..7; 4 x its scaled activation sums come off at the end). */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "quant_ref.h"
#include "repack.h"
#include "repack_kx8.h"
#include "simd_x86.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

/* Offsets within a packed super-block: Q2_K, Q3_K */
enum { SB2 = 672, SB3 = 880, Q2_OFF = 160, Q3_M = 112, Q3_OFF = 368 };

static size_t sb_bytes(bool three) { return three ? SB3 : SB2; }
static size_t blk_bytes(bool three) { return three ? 110 : 84; }
static const uint8_t *group_sb(bool three, const void *p, int64_t nb, int64_t g, int64_t b) {
    return (const uint8_t *)p + (size_t)(g * nb + b) * sb_bytes(three);
}
static const uint8_t *tail_blk(bool three, const void *p, int64_t nb, int64_t r, int64_t b) {
    return (const uint8_t *)p + (size_t)(r * nb + b) * blk_bytes(three);
}
static size_t q_off(bool three, int n, int kb) { return (three ? Q3_OFF : Q2_OFF) + (size_t)(256 * n + 32 * kb); }

/* a GGUF block <-> row `lane` of a packed super-block */
static void move_block(bool three, uint8_t *o, int lane, uint8_t *blk, bool to_packed) {
#define MV(po, bo, len) (to_packed ? memcpy(o + (po), blk + (bo), len) : memcpy(blk + (bo), o + (po), len))
    if (three) { /* kvq_block_q3_K: hmask 0, qs 32, scales 96, d 108 */
        MV(2 * lane, 108, 2);
        for (int m = 0; m < 3; m++) MV(16 + 32 * m + 4 * lane, 96 + 4 * m, 4);
        for (int kb = 0; kb < 8; kb++) MV(Q3_M + 32 * kb + 4 * lane, 4 * kb, 4);
    } else { /* kvq_block_q2_K: scales 0, qs 16, d 80, dmin 82 */
        MV(2 * lane, 80, 2);
        MV(16 + 2 * lane, 82, 2);
        for (int m = 0; m < 4; m++) MV(32 + 32 * m + 4 * lane, 4 * m, 4);
    }
    for (int n = 0; n < 2; n++)
        for (int kb = 0; kb < 8; kb++) MV(q_off(three, n, kb) + 4 * lane, (three ? 32 : 16) + 32 * n + 4 * kb, 4);
#undef MV
}

static void pack(bool three, const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                 void *dst) {
    const int64_t nb = cols / 256, full = rows / 8 * 8;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = (const uint8_t *)src + r * row_bytes;
        if (r >= full) {
            memcpy((uint8_t *)tail_blk(three, dst, nb, r, 0), s, (size_t)nb * blk_bytes(three));
            continue;
        }
        for (int64_t b = 0; b < nb; b++)
            move_block(three, (uint8_t *)group_sb(three, dst, nb, r / 8, b), (int)(r % 8),
                       (uint8_t *)s + b * blk_bytes(three), true);
    }
}
void kvq_q2_Kx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    pack(false, src, row_bytes, cols, rows, r0, r1, dst);
}
void kvq_q3_Kx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    pack(true, src, row_bytes, cols, rows, r0, r1, dst);
}

static size_t act_size(int64_t cols) { return (size_t)(cols / 256) * sizeof(kvq_block_q8_K); }

/* Row r's block b, in the GGUF form, from either part of the layout. */
static void get_block(bool three, const void *p, int64_t nb, int64_t rows, int64_t r, int64_t b, uint8_t *blk) {
    if (r >= rows / 8 * 8) memcpy(blk, tail_blk(three, p, nb, r, b), blk_bytes(three));
    else move_block(three, (uint8_t *)group_sb(three, p, nb, r / 8, b), (int)(r % 8), blk, false);
}

/* One GGUF-layout block against its activations, in the kernel's order. */
static float block_dot(bool three, const uint8_t *blk, const kvq_block_q8_K *y, float acc) {
    const uint8_t *qs = blk + (three ? 32 : 16);
    int8_t sc3[16];
    if (three) kvq_q3_K_scales(((const kvq_block_q3_K *)blk)->scales, sc3);
    int32_t isum = 0, msum = 0;
    for (int s = 0; s < 16; s++) {
        const int n = s / 8, j = (s % 8) / 2, half = s % 2;
        int32_t dot = 0;
        for (int i = 0; i < 16; i++) {
            int u = (qs[32 * n + 16 * half + i] >> (2 * j)) & 3;
            if (three) u |= ((blk[16 * half + i] >> (4 * n + j)) & 1) << 2;
            dot += u * y->qs[16 * s + i];
        }
        if (three) {
            isum += sc3[s] * dot;
            msum += sc3[s] * y->bsums[s];
        } else {
            isum += (((const kvq_block_q2_K *)blk)->scales[s] & 15) * dot;
            msum += (((const kvq_block_q2_K *)blk)->scales[s] >> 4) * y->bsums[s];
        }
    }
    if (three)
        return fmaf((float)(isum - 4 * msum), kvq_f16_to_f32(((const kvq_block_q3_K *)blk)->d) * y->d, acc);
    const kvq_block_q2_K *w = (const kvq_block_q2_K *)blk;
    acc = fmaf((float)isum, kvq_f16_to_f32(w->d) * y->d, acc);
    return fmaf(-(float)msum, kvq_f16_to_f32(w->dmin) * y->d, acc);
}

static void get2(const void *p, int64_t nb, int64_t rows, int64_t r, int64_t b, void *blk) {
    get_block(false, p, nb, rows, r, b, blk);
}
static void get3(const void *p, int64_t nb, int64_t rows, int64_t r, int64_t b, void *blk) {
    get_block(true, p, nb, rows, r, b, blk);
}
static float dot2(const void *blk, const kvq_block_q8_K *y, float acc) { return block_dot(false, blk, y, acc); }
static float dot3(const void *blk, const kvq_block_q8_K *y, float acc) { return block_dot(true, blk, y, acc); }
static const kvq_kx8_type K2 = {SB2, 84, get2, dot2, kvq_q2_K_to_float_ref};
static const kvq_kx8_type K3 = {SB3, 110, get3, dot3, kvq_q3_K_to_float_ref};

static void rows2_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act, size_t as,
                      int n, float *Y, int64_t ldy) {
    kvq_kx8_rows_ref(&K2, p, cols, rows, r0, r1, act, as, n, Y, ldy);
}
static void rows3_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act, size_t as,
                      int n, float *Y, int64_t ldy) {
    kvq_kx8_rows_ref(&K3, p, cols, rows, r0, r1, act, as, n, Y, ldy);
}
static void dequant2(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {
    kvq_kx8_dequant(&K2, p, cols, rows, r0, nr, dst);
}
static void dequant3(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {
    kvq_kx8_dequant(&K3, p, cols, rows, r0, nr, dst);
}

const kvq_packed_kernel kvq_q2_Kx8_ref = {"q2_Kx8 (scalar)", act_size, kvq_q8_K_from_float_ref, rows2_ref, dequant2, NULL, NULL, 0};
const kvq_packed_kernel kvq_q3_Kx8_ref = {"q3_Kx8 (scalar)", act_size, kvq_q8_K_from_float_ref, rows3_ref, dequant3, NULL, NULL, 0};


/* The 16 scales of 8 rows, scales 4m..4m+3 of row r at bytes 4r.. of sc[m]:
 * Q2_K's low nibbles (mn: the high ones), Q3_K's 6-bit values (offset 32). */
T_AVX2 static inline void scales8(bool three, const uint8_t *o, __m256i sc[4], __m256i mn[4]) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    if (!three) {
        for (int m = 0; m < 4; m++) {
            const __m256i s = _mm256_loadu_si256((const __m256i *)(o + 32 + 32 * m));
            sc[m] = _mm256_and_si256(s, m4);
            mn[m] = _mm256_and_si256(_mm256_srli_epi16(s, 4), m4);
        }
        return;
    }
    /* kvq_q3_K_scales on 8 rows at once */
    const __m256i w0 = _mm256_loadu_si256((const __m256i *)(o + 16)), w1 = _mm256_loadu_si256((const __m256i *)(o + 48)),
                  w2 = _mm256_loadu_si256((const __m256i *)(o + 80));
    sc[0] = _mm256_or_si256(_mm256_and_si256(w0, m4), _mm256_slli_epi16(_mm256_and_si256(w2, m2), 4));
    sc[1] = _mm256_or_si256(_mm256_and_si256(w1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(w2, 2), m2), 4));
    sc[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(w0, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(w2, 4), m2), 4));
    sc[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(w1, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(w2, 6), m2), 4));
}

T_AVX2 static inline __attribute__((always_inline)) __m256 sb_avx2(const bool three, const uint8_t *o,
                                                                   const kvq_block_q8_K *y, __m256 acc) {
    const __m256i m3 = _mm256_set1_epi8(3), off = _mm256_set1_epi16(three ? 32 : 0);
    __m256i sc[4], mn[4];
    scales8(three, o, sc, mn);
    __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int n = 0; n < 2; n++) {
#pragma GCC unroll 2
        for (int half = 0; half < 2; half++) {
            /* per plane j, 4 steps kb of int16 sums: at most 4 x 2 x 7 x 127 */
            __m256i s16[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                              _mm256_setzero_si256()};
#pragma GCC unroll 4
            for (int kb = 4 * half; kb < 4 * half + 4; kb++) {
                const __m256i Q = _mm256_loadu_si256((const __m256i *)(o + q_off(three, n, kb)));
                const __m256i M = three ? _mm256_loadu_si256((const __m256i *)(o + Q3_M + 32 * kb)) : Q;
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    __m256i u = _mm256_and_si256(_mm256_srli_epi16(Q, 2 * j), m3);
                    if (three) {
                        const __m256i bit = _mm256_set1_epi8((char)(1 << (4 * n + j)));
                        u = _mm256_or_si256(u, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(M, bit), bit),
                                                                _mm256_set1_epi8(4)));
                    }
                    s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(u, kvq_bcast4_avx2(y->qs + 128 * n + 32 * j + 4 * kb)));
                }
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                const int s = 8 * n + 2 * j + half;
                const __m256i scl = _mm256_sub_epi16(kvq_kx8_pair_u16(sc[s / 4], s % 4, s % 4), off);
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(s16[j], scl));
            }
        }
    }
    /* sum over sub-blocks of (Q2_K: min, Q3_K: scale) x activation sum, two sub-blocks per madd */
    __m256i msum = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int s = 0; s < 16; s += 2) {
        int32_t bs;
        memcpy(&bs, y->bsums + s, 4);
        const __m256i f = three ? _mm256_sub_epi16(kvq_kx8_pair_u16(sc[s / 4], s % 4, s % 4 + 1), off)
                                : kvq_kx8_pair_u16(mn[s / 4], s % 4, s % 4 + 1);
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(f, _mm256_set1_epi32(bs)));
    }
    const __m256 dy = _mm256_set1_ps(y->d), d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)o));
    if (three)
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum, _mm256_slli_epi32(msum, 2))),
                               _mm256_mul_ps(d, dy), acc);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, dy), acc);
    const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 16)));
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dm, dy), acc);
}

T_AVX2 static inline __attribute__((always_inline)) __m256 sb2(const uint8_t *o, const kvq_block_q8_K *y, __m256 acc) { return sb_avx2(false, o, y, acc); }
T_AVX2 static inline __attribute__((always_inline)) __m256 sb3(const uint8_t *o, const kvq_block_q8_K *y, __m256 acc) { return sb_avx2(true, o, y, acc); }
T_AVX2 static void rows2_avx2(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                              size_t as, int n, float *Y, int64_t ldy) {
    kvq_kx8_rows_avx2(&K2, sb2, p, cols, rows, r0, r1, act, as, n, Y, ldy);
}
T_AVX2 static void rows3_avx2(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                              size_t as, int n, float *Y, int64_t ldy) {
    kvq_kx8_rows_avx2(&K3, sb3, p, cols, rows, r0, r1, act, as, n, Y, ldy);
}

const kvq_packed_kernel kvq_q2_Kx8_avx2 = {"q2_Kx8 (avx2)", act_size, kvq_q8_K_quant_avx2, rows2_avx2, dequant2, NULL, NULL, 0};
const kvq_packed_kernel kvq_q3_Kx8_avx2 = {"q3_Kx8 (avx2)", act_size, kvq_q8_K_quant_avx2, rows3_avx2, dequant3, NULL, NULL, 0};
