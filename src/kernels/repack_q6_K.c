/* Q6_K interleaved by 8 rows (repack.h), against Q8_K activations. Q6_K is
 * the output head (and some ffn_down / attn_v) of llama.cpp's Q2_K, Q3_K_M,
 * Q4_K_M and Q5_K_M files: for Llama-3.2-1B's Q2_K file, 40% of the bytes
 * a token reads.
 *
 * Per group of 8 rows, per super-block of 256 inputs, 1680 bytes (8 GGUF
 * blocks of 210, so the copy is as large as the matrix):
 *   d[8]       fp16, one per row                                   16 bytes
 *   S0..S3     the rows' signed scales, scales 4m..4m+3 of row r at
 *              bytes 4r..4r+3 of Sm                                128 bytes
 *   codes      2 halves of 128 inputs, each 8 steps j of 3 registers
 *              (A, B, H): byte 4r + k of A is ql[64h + 4j + k] of row
 *              r, of B ql[64h + 32 + 4j + k], of H qh[32h + 4j + k]    1536 bytes
 * In half h, input 128h + 32p + 4j + k (p = 0..3) is the low nibble of A
 * (p = 0), of B (p = 1), the high nibble of A (2), of B (3), with bits
 * 2p..2p+1 of H on top: one AND/shift/OR per 4 inputs of 8 rows. The codes
 * enter maddubs unsigned (0..63); 32 times each sub-block's activation sum
 * comes off at the end. */
#include <immintrin.h>
#include <string.h>

#include "quant_ref.h"
#include "repack.h"
#include "repack_kx8.h"
#include "simd_x86.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

enum { SB = 1680, BB = 210, META = 144 };

static const uint8_t *group_sb(const void *p, int64_t nb, int64_t g, int64_t b) {
    return (const uint8_t *)p + (g * nb + b) * SB;
}
static const kvq_block_q6_K *tail_row(const void *p, int64_t nb, int64_t r) {
    return (const kvq_block_q6_K *)((const uint8_t *)p + r * nb * BB);
}
/* register (h, j, which: 0 A, 1 B, 2 H) of a packed super-block */
static size_t reg_off(int h, int j, int which) { return META + (size_t)(768 * h + 96 * j + 32 * which); }

void kvq_q6_Kx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    const int64_t nb = cols / 256, full = rows / 8 * 8;
    for (int64_t r = r0; r < r1; r++) {
        const kvq_block_q6_K *s = (const kvq_block_q6_K *)((const uint8_t *)src + r * row_bytes);
        if (r >= full) {
            memcpy((uint8_t *)tail_row(dst, nb, r), s, (size_t)nb * BB);
            continue;
        }
        const int lane = (int)(r % 8);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = (uint8_t *)group_sb(dst, nb, r / 8, b);
            memcpy(o + 2 * lane, &s[b].d, 2);
            for (int m = 0; m < 4; m++) memcpy(o + 16 + 32 * m + 4 * lane, s[b].scales + 4 * m, 4);
            for (int h = 0; h < 2; h++)
                for (int j = 0; j < 8; j++) {
                    memcpy(o + reg_off(h, j, 0) + 4 * lane, s[b].ql + 64 * h + 4 * j, 4);
                    memcpy(o + reg_off(h, j, 1) + 4 * lane, s[b].ql + 64 * h + 32 + 4 * j, 4);
                    memcpy(o + reg_off(h, j, 2) + 4 * lane, s[b].qh + 32 * h + 4 * j, 4);
                }
        }
    }
}

static size_t act_size(int64_t cols) { return (size_t)(cols / 256) * sizeof(kvq_block_q8_K); }

/* row `lane` of a packed super-block, in the GGUF block's form */
static void unpack_sb(const uint8_t *o, int lane, kvq_block_q6_K *blk) {
    memcpy(&blk->d, o + 2 * lane, 2);
    for (int m = 0; m < 4; m++) memcpy(blk->scales + 4 * m, o + 16 + 32 * m + 4 * lane, 4);
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 8; j++) {
            memcpy(blk->ql + 64 * h + 4 * j, o + reg_off(h, j, 0) + 4 * lane, 4);
            memcpy(blk->ql + 64 * h + 32 + 4 * j, o + reg_off(h, j, 1) + 4 * lane, 4);
            memcpy(blk->qh + 32 * h + 4 * j, o + reg_off(h, j, 2) + 4 * lane, 4);
        }
}

/* One GGUF-layout block against its activations, in the kernel's order: the
 * unsigned codes' scaled sums, less 32 x the scaled activation sums, then one
 * multiply-add in float. */
static float block_dot(const kvq_block_q6_K *w, const kvq_block_q8_K *y, float acc) {
    int32_t isum = 0, corr = 0;
    for (int s = 0; s < 16; s++) {
        int32_t dot = 0;
        for (int i = 0; i < 16; i++) {
            const int e = 16 * s + i, h = e / 128, p = e % 128 / 32, l = e % 32;
            const uint8_t lo = w->ql[64 * h + l + 32 * (p & 1)], hi = w->qh[32 * h + l];
            const int v = ((p & 2 ? lo >> 4 : lo) & 15) | ((hi >> (2 * p)) & 3) << 4;
            dot += v * y->qs[e];
        }
        isum += w->scales[s] * dot;
        corr += w->scales[s] * y->bsums[s];
    }
    return fmaf((float)(isum - 32 * corr), kvq_f16_to_f32(w->d) * y->d, acc);
}

static void get_block(const void *p, int64_t nb, int64_t rows, int64_t r, int64_t b, void *blk) {
    if (r >= rows / 8 * 8) memcpy(blk, tail_row(p, nb, r) + b, BB);
    else unpack_sb(group_sb(p, nb, r / 8, b), (int)(r % 8), blk);
}
static float dot_block(const void *blk, const kvq_block_q8_K *y, float acc) { return block_dot(blk, y, acc); }
static const kvq_kx8_type Q6 = {SB, BB, get_block, dot_block, kvq_q6_K_to_float_ref};

static void rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act, size_t as,
                     int n, float *Y, int64_t ldy) {
    kvq_kx8_rows_ref(&Q6, p, cols, rows, r0, r1, act, as, n, Y, ldy);
}
static void dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {
    kvq_kx8_dequant(&Q6, p, cols, rows, r0, nr, dst);
}

const kvq_packed_kernel kvq_q6_Kx8_ref = {"q6_Kx8 (scalar)", act_size, kvq_q8_K_from_float_ref, rows_ref, dequant, NULL, NULL, 0};


/* kvq_kx8_pair_u16 for signed bytes: the pair sign-extended */
T_AVX2 static inline __m256i pair_s16(__m256i w, int a, int b) {
    return _mm256_srai_epi16(_mm256_slli_epi16(kvq_kx8_pair_u16(w, a, b), 8), 8);
}

T_AVX2 static inline __m256 sb_avx2(const uint8_t *o, const kvq_block_q8_K *y, __m256 acc) {
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256i S[4];
    for (int m = 0; m < 4; m++) S[m] = _mm256_loadu_si256((const __m256i *)(o + 16 + 32 * m));
    __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        /* per part p, the int16 sums of two steps j (at most 2 x 2 x 63 x 127, no overflow) */
#pragma GCC unroll 4
        for (int jj = 0; jj < 8; jj += 2) {
            __m256i s16[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                              _mm256_setzero_si256()};
#pragma GCC unroll 2
            for (int j = jj; j < jj + 2; j++) {
                const __m256i A = _mm256_loadu_si256((const __m256i *)(o + reg_off(h, j, 0)));
                const __m256i B = _mm256_loadu_si256((const __m256i *)(o + reg_off(h, j, 1)));
                const __m256i H = _mm256_loadu_si256((const __m256i *)(o + reg_off(h, j, 2)));
                const __m256i v0 = _mm256_or_si256(_mm256_and_si256(A, m4), _mm256_slli_epi16(_mm256_and_si256(H, m3), 4));
                const __m256i v1 = _mm256_or_si256(_mm256_and_si256(B, m4),
                                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2), m3), 4));
                const __m256i v2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(A, 4), m4),
                                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 4), m3), 4));
                const __m256i v3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(B, 4), m4),
                                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 6), m3), 4));
                const int8_t *yq = y->qs + 128 * h + 4 * j;
                s16[0] = _mm256_add_epi16(s16[0], _mm256_maddubs_epi16(v0, kvq_bcast4_avx2(yq)));
                s16[1] = _mm256_add_epi16(s16[1], _mm256_maddubs_epi16(v1, kvq_bcast4_avx2(yq + 32)));
                s16[2] = _mm256_add_epi16(s16[2], _mm256_maddubs_epi16(v2, kvq_bcast4_avx2(yq + 64)));
                s16[3] = _mm256_add_epi16(s16[3], _mm256_maddubs_epi16(v3, kvq_bcast4_avx2(yq + 96)));
            }
            /* input 128h + 32p + 4j lies in sub-block 8h + 2p + (j >= 4) */
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                const int s = 8 * h + 2 * p + (jj >= 4);
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(s16[p], pair_s16(S[s / 4], s % 4, s % 4)));
            }
        }
    }
    /* 32 x sum over sub-blocks of scale x activation sum, two sub-blocks per madd */
    __m256i corr = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int s = 0; s < 16; s += 2) {
        int32_t bs;
        memcpy(&bs, y->bsums + s, 4);
        corr = _mm256_add_epi32(corr, _mm256_madd_epi16(pair_s16(S[s / 4], s % 4, s % 4 + 1), _mm256_set1_epi32(bs)));
    }
    isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(corr, 5));
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)o));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, _mm256_set1_ps(y->d)), acc);
}

T_AVX2 static void rows_avx2(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                             size_t as, int n, float *Y, int64_t ldy) {
    kvq_kx8_rows_avx2(&Q6, sb_avx2, p, cols, rows, r0, r1, act, as, n, Y, ldy);
}

const kvq_packed_kernel kvq_q6_Kx8_avx2 = {"q6_Kx8 (avx2)", act_size, kvq_q8_K_quant_avx2, rows_avx2, dequant, NULL, NULL, 0};
