/* Q4_K interleaved by 8 rows (repack.h), against Q8_K activations.
 *
 * Per group of 8 rows, per super-block of 256 inputs, 1152 bytes (8 GGUF
 * blocks of 144, so the copy is as large as the matrix):
 *   d[8], dmin[8]  fp16, one per row                              32 bytes
 *   W0, W1, W2     the rows' 12 scale bytes, bytes 4k..4k+3 of
 *                  row r at 4r of Wk                               96 bytes
 *   codes          4 chunks of 64 inputs, each 8 registers: byte
 *                  4r + k of register j of chunk c is qs[32c + 4j + k]
 *                  of row r: low nibble input 64c + 4j + k (sub-block
 *                  2c), high nibble input 64c + 32 + 4j + k (2c + 1)  1024 bytes
 * The six-bit scales and minimums of all 8 rows then unpack with the
 * GGUF bit layout's own word arithmetic, once per super-block for 8 rows
 * (the file layout pays it per row), and one byte shuffle puts a sub-block's
 * 8 scales where its int16 sums are. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant_ref.h"
#include "repack.h"
#include "repack_kx8.h"
#include "simd_x86.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

enum { SB = 1152, META = 128 };

static const uint8_t *group_sb(const void *p, int64_t nb, int64_t g, int64_t b) {
    return (const uint8_t *)p + (g * nb + b) * SB;
}
static const kvq_block_q4_K *tail_row(const void *p, int64_t nb, int64_t r) {
    return (const kvq_block_q4_K *)((const uint8_t *)p + r * nb * 144);
}

void kvq_q4_Kx8_pack(const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0, int64_t r1,
                     void *dst) {
    const int64_t nb = cols / 256, full = rows / 8 * 8;
    for (int64_t r = r0; r < r1; r++) {
        const kvq_block_q4_K *s = (const kvq_block_q4_K *)((const uint8_t *)src + r * row_bytes);
        if (r >= full) {
            memcpy((uint8_t *)tail_row(dst, nb, r), s, (size_t)nb * 144);
            continue;
        }
        const int lane = (int)(r % 8);
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = (uint8_t *)group_sb(dst, nb, r / 8, b);
            memcpy(o + 2 * lane, &s[b].d, 2);
            memcpy(o + 16 + 2 * lane, &s[b].dmin, 2);
            for (int k = 0; k < 3; k++) memcpy(o + 32 + 32 * k + 4 * lane, s[b].scales + 4 * k, 4);
            for (int c = 0; c < 4; c++)
                for (int j = 0; j < 8; j++) memcpy(o + META + 256 * c + 32 * j + 4 * lane, s[b].qs + 32 * c + 4 * j, 4);
        }
    }
}

static size_t act_size(int64_t cols) { return (size_t)(cols / 256) * sizeof(kvq_block_q8_K); }

/* the scales, minimums and codes of row `lane` of a packed super-block, in
 * the GGUF block's form */
static void unpack_sb(const uint8_t *o, int lane, kvq_block_q4_K *blk) {
    memcpy(&blk->d, o + 2 * lane, 2);
    memcpy(&blk->dmin, o + 16 + 2 * lane, 2);
    for (int k = 0; k < 3; k++) memcpy(blk->scales + 4 * k, o + 32 + 32 * k + 4 * lane, 4);
    for (int c = 0; c < 4; c++)
        for (int j = 0; j < 8; j++) memcpy(blk->qs + 32 * c + 4 * j, o + META + 256 * c + 32 * j + 4 * lane, 4);
}

/* One GGUF-layout block against its activations, in the kernels' order:
 * the scaled integer sum, then the minimums' */
static float block_dot(const kvq_block_q4_K *w, const kvq_block_q8_K *y, float acc) {
    uint8_t sc[8], mn[8];
    kvq_k4_scales_mins(w->scales, sc, mn);
    int32_t isum = 0, msum = 0;
    for (int s = 0; s < 8; s++) {
        int32_t dot = 0;
        for (int i = 0; i < 32; i++) {
            const uint8_t v = w->qs[32 * (s / 2) + i];
            dot += (s % 2 ? v >> 4 : v & 15) * y->qs[32 * s + i];
        }
        isum += sc[s] * dot;
        msum += mn[s] * (y->bsums[2 * s] + y->bsums[2 * s + 1]);
    }
    acc = fmaf((float)isum, kvq_f16_to_f32(w->d) * y->d, acc);
    return fmaf(-(float)msum, kvq_f16_to_f32(w->dmin) * y->d, acc);
}

static void get_block(const void *p, int64_t nb, int64_t rows, int64_t r, int64_t b, void *blk) {
    if (r >= rows / 8 * 8) memcpy(blk, tail_row(p, nb, r) + b, 144);
    else unpack_sb(group_sb(p, nb, r / 8, b), (int)(r % 8), blk);
}
static float dot_block(const void *blk, const kvq_block_q8_K *y, float acc) { return block_dot(blk, y, acc); }
static const kvq_kx8_type Q4 = {SB, 144, get_block, dot_block, kvq_q4_K_to_float_ref};

static void rows_ref(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act, size_t as,
                     int n, float *Y, int64_t ldy) {
    kvq_kx8_rows_ref(&Q4, p, cols, rows, r0, r1, act, as, n, Y, ldy);
}
static void dequant(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {
    kvq_kx8_dequant(&Q4, p, cols, rows, r0, nr, dst);
}

const kvq_packed_kernel kvq_q4_Kx8_ref = {"q4_Kx8 (scalar)", act_size, kvq_q8_K_from_float_ref, rows_ref, dequant, NULL, NULL, 0};


#define SPLAT(X, s) _mm256_shuffle_epi8(X, kvq_kx8_pair_idx((s) % 4, (s) % 4))

T_AVX2 static inline __m256 sb_avx2(const uint8_t *o, const kvq_block_q8_K *y, __m256 acc) {
    const __m256i m4 = _mm256_set1_epi8(15), m6 = _mm256_set1_epi8(63), m2 = _mm256_set1_epi8(3);
    const __m256i w0 = _mm256_loadu_si256((const __m256i *)(o + 32)), w1 = _mm256_loadu_si256((const __m256i *)(o + 64)),
                  w2 = _mm256_loadu_si256((const __m256i *)(o + 96));
    /* kvq_k4_scales_mins on 8 rows at once */
    const __m256i sc03 = _mm256_and_si256(w0, m6), mn03 = _mm256_and_si256(w1, m6);
    const __m256i sc47 = _mm256_or_si256(_mm256_and_si256(w2, m4),
                                         _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w0, 6), m2), 4));
    const __m256i mn47 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w2, 4), m4),
                                         _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w1, 6), m2), 4));
    const uint8_t *q = o + META;
    __m256i isum = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++, q += 256) {
        __m256i slo = _mm256_setzero_si256(), shi = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(q + 32 * j));
            slo = _mm256_add_epi16(slo, _mm256_maddubs_epi16(_mm256_and_si256(raw, m4), kvq_bcast4_avx2(y->qs + 64 * c + 4 * j)));
            shi = _mm256_add_epi16(shi, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4),
                                                             kvq_bcast4_avx2(y->qs + 64 * c + 32 + 4 * j)));
        }
        const __m256i s_lo = c < 2 ? SPLAT(sc03, 2 * c) : SPLAT(sc47, 2 * c);
        const __m256i s_hi = c < 2 ? SPLAT(sc03, 2 * c + 1) : SPLAT(sc47, 2 * c + 1);
        isum = _mm256_add_epi32(isum, _mm256_add_epi32(_mm256_madd_epi16(slo, s_lo), _mm256_madd_epi16(shi, s_hi)));
    }
    /* minimums: sub-block sums of the activations, two sub-blocks per madd */
    const __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)y->bsums),
                                      _mm_loadu_si128((const __m128i *)(y->bsums + 8)));
    const __m256i bsv = _mm256_broadcastsi128_si256(bs);
    const __m256i pair01 = kvq_kx8_pair_idx(0, 1), pair23 = kvq_kx8_pair_idx(2, 3);
    __m256i msum = _mm256_madd_epi16(_mm256_shuffle_epi8(mn03, pair01), _mm256_shuffle_epi32(bsv, 0x00));
    msum = _mm256_add_epi32(msum, _mm256_madd_epi16(_mm256_shuffle_epi8(mn03, pair23), _mm256_shuffle_epi32(bsv, 0x55)));
    msum = _mm256_add_epi32(msum, _mm256_madd_epi16(_mm256_shuffle_epi8(mn47, pair01), _mm256_shuffle_epi32(bsv, 0xaa)));
    msum = _mm256_add_epi32(msum, _mm256_madd_epi16(_mm256_shuffle_epi8(mn47, pair23), _mm256_shuffle_epi32(bsv, 0xff)));
    const __m256 dy = _mm256_set1_ps(y->d);
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)o)),
                 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 16)));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, dy), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dm, dy), acc);
}

T_AVX2 static void rows_avx2(const void *p, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                             size_t as, int n, float *Y, int64_t ldy) {
    kvq_kx8_rows_avx2(&Q4, sb_avx2, p, cols, rows, r0, r1, act, as, n, Y, ldy);
}

/* kvq_q8_K_from_float_ref's bytes (simd_x86.h says why they are the same);
 * scalar, it took longer than the product of a 2048-wide matrix in L2. */
T_AVX2 void kvq_q8_K_quant_avx2(const float *x, void *dst, int64_t cols) {
    kvq_block_q8_K *yb = dst;
    const __m256i lo = _mm256_set1_epi8(-127);
    for (int64_t b = 0; b < cols / 256; b++, x += 256) {
        const float d = kvq_absmax_avx2(x, 256) / 127.0f;
        const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
        yb[b].d = d;
        for (int i = 0; i < 256; i += 32) {
            const __m256i q = _mm256_max_epi8(kvq_i8x32_avx2(x + i, id), lo);
            _mm256_storeu_si256((__m256i *)(yb[b].qs + i), q);
            int32_t s4[8];
            _mm256_storeu_si256((__m256i *)s4, kvq_i8_sum4_avx2(q));
            yb[b].bsums[i / 16] = (int16_t)(s4[0] + s4[1] + s4[2] + s4[3]);
            yb[b].bsums[i / 16 + 1] = (int16_t)(s4[4] + s4[5] + s4[6] + s4[7]);
        }
    }
}

const kvq_packed_kernel kvq_q4_Kx8_avx2 = {"q4_Kx8 (avx2)", act_size, kvq_q8_K_quant_avx2, rows_avx2, dequant, NULL, NULL, 0};
