/* AVX2 dot products for the types llama.cpp's mixed files add beside the
 * K-quants: Q5_0, Q5_1 and IQ4_NL (32-value blocks, the fallbacks for rows
 * that are no multiple of 256) and Q2_K, Q3_K and IQ4_XS (256-value blocks).
 * Each is compared with its scalar reference in tests/unit/test_kernels.c,
 * and with ggml's by bench/ggml-types-check.sh. */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "quant_ref.h"
#include "simd.h"
#include "simd_x86.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))


/* Bit i of a 32-bit word -> 0xFF in byte i (the fifth bits of Q5_0/Q5_1). */
T_AVX2 static inline __m256i bits_to_bytes(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                            3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* signed x signed int8, 32 pairs -> 16 int16 pair sums (the sign moves onto
 * y so that maddubs, unsigned x signed, applies; |x| <= 127 cannot saturate) */
T_AVX2 static inline __m256i sdot16(__m256i x, __m256i y) {
    return _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}


T_AVX2 static float q5_0_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q5_0 *a = w;
    const kvq_block_q8_0 *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        const __m256i h = _mm256_and_si256(bits_to_bytes(a[i].qh), _mm256_set1_epi8(16));
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(kvq_nibbles32_avx2(a[i].qs), h), _mm256_set1_epi8(16));
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(a[i].d) * _cvtsh_ss(b[i].d));
        acc = _mm256_fmadd_ps(d, kvq_sdot_i8x32_avx2(q, _mm256_loadu_si256((const __m256i *)b[i].qs)), acc);
    }
    return kvq_hsum8(acc);
}

T_AVX2 static float q5_1_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q5_1 *a = w;
    const kvq_block_q8_1 *b = x;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        const __m256i h = _mm256_and_si256(bits_to_bytes(a[i].qh), _mm256_set1_epi8(16));
        const __m256i u = _mm256_or_si256(kvq_nibbles32_avx2(a[i].qs), h); /* 0..31: unsigned operand as is */
        const __m256i p = kvq_udot_i32_avx2(u, _mm256_loadu_si256((const __m256i *)b[i].qs));
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(a[i].d) * _cvtsh_ss(b[i].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
        mins += _cvtsh_ss(a[i].m) * _cvtsh_ss(b[i].s);
    }
    return kvq_hsum8(acc) + mins;
}

T_AVX2 static inline __m256i iq4_grid(void) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvq_iq4nl_grid));
}

T_AVX2 static float iq4_nl_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_iq4_nl *a = w;
    const kvq_block_q8_0 *b = x;
    const __m256i grid = iq4_grid();
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        const __m256i q = _mm256_shuffle_epi8(grid, kvq_nibbles32_avx2(a[i].qs));
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(a[i].d) * _cvtsh_ss(b[i].d));
        acc = _mm256_fmadd_ps(d, kvq_sdot_i8x32_avx2(q, _mm256_loadu_si256((const __m256i *)b[i].qs)), acc);
    }
    return kvq_hsum8(acc);
}

T_AVX2 static float iq4_xs_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_iq4_xs *a = w;
    const kvq_block_q8_K *b = x;
    const __m256i grid = iq4_grid();
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        __m256i s = _mm256_setzero_si256();
        for (int ib = 0; ib < 8; ib++) {
            const int ls = kvq_iq4_xs_ls(&a[i], ib);
            const __m256i q = _mm256_shuffle_epi8(grid, kvq_nibbles32_avx2(a[i].qs + 16 * ib));
            const __m256i p = sdot16(q, _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * ib)));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(p, _mm256_set1_epi16((short)(ls - 32))));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(a[i].d) * b[i].d), _mm256_cvtepi32_ps(s), acc);
    }
    return kvq_hsum8(acc);
}

/* Q2_K/Q3_K: plane j of the 32 code bytes at 32n holds sub-blocks 8n + 2j
 * (bytes 0-15, the low 128-bit lane) and 8n + 2j + 1 (the high lane); each
 * lane's 8 int16 pair sums take that sub-block's scale. */
T_AVX2 static inline __m256i lane_scales(const int16_t *sc, int s) {
    return _mm256_set_m128i(_mm_set1_epi16(sc[s + 1]), _mm_set1_epi16(sc[s]));
}

T_AVX2 static float q2_K_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q2_K *a = w;
    const kvq_block_q8_K *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        const __m128i raw_sc = _mm_loadu_si128((const __m128i *)a[i].scales), m4 = _mm_set1_epi8(15);
        int16_t sc[16];
        _mm256_storeu_si256((__m256i *)sc, _mm256_cvtepu8_epi16(_mm_and_si128(raw_sc, m4)));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw_sc, 4), m4));
        __m256i s = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(a[i].qs + 32 * h));
            for (int j = 0; j < 4; j++) {
                const __m256i v = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * j), _mm256_set1_epi8(3));
                const __m256i p = _mm256_maddubs_epi16(v, _mm256_loadu_si256((const __m256i *)(b[i].qs + 128 * h + 32 * j)));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(p, lane_scales(sc, 8 * h + 2 * j)));
            }
        }
        /* the mins: sum over sub-blocks of min * (sum of its activations) */
        const __m256i m = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)b[i].bsums), mins);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(b[i].d * _cvtsh_ss(a[i].d)), _mm256_cvtepi32_ps(s), acc);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(b[i].d * _cvtsh_ss(a[i].dmin)), _mm256_cvtepi32_ps(m), acc);
    }
    return kvq_hsum8(acc);
}

T_AVX2 static float q3_K_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q3_K *a = w;
    const kvq_block_q8_K *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        int8_t sc8[16];
        kvq_q3_K_scales(a[i].scales, sc8);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc8));
        int16_t sc[16];
        _mm256_storeu_si256((__m256i *)sc, sc16);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)a[i].hmask);
        __m256i s = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(a[i].qs + 32 * h));
            for (int j = 0; j < 4; j++) {
                /* u = code + 4 (0..7): the low bits, and 4 where the mask bit is set */
                const __m256i bit = _mm256_set1_epi8((char)(1 << (4 * h + j)));
                const __m256i hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), _mm256_set1_epi8(4));
                const __m256i u = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 2 * j), _mm256_set1_epi8(3)), hi);
                const __m256i p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(b[i].qs + 128 * h + 32 * j)));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(p, lane_scales(sc, 8 * h + 2 * j)));
            }
        }
        /* code = u - 4: remove 4 * scale * (sum of the sub-block's activations) */
        const __m256i c = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)b[i].bsums), sc16);
        s = _mm256_sub_epi32(s, _mm256_slli_epi32(c, 2));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(b[i].d * _cvtsh_ss(a[i].d)), _mm256_cvtepi32_ps(s), acc);
    }
    return kvq_hsum8(acc);
}

/* ------------------------------------------------------------ dequantizers
 * (prefill's weight tiles). Each value is q * s + o in float, the scalar
 * reference's operations in its order, so both give the same bits. */
T_AVX2 static inline __m256 scale8(__m128i q, __m256 s, __m256 o, bool off) {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), s);
    return off ? _mm256_add_ps(v, o) : v; /* 0 * -d is -0, and -0 + 0 would be +0 */
}
/* off: the type adds an offset (Q5_1's m, Q2_K's -min), a constant at every call */
T_AVX2 static inline void put16(__m128i q, __m256 s, __m256 o, bool off, float *dst) {
    _mm256_storeu_ps(dst, scale8(q, s, o, off));
    _mm256_storeu_ps(dst + 8, scale8(_mm_srli_si128(q, 8), s, o, off));
}
T_AVX2 static inline void put32(__m256i q, __m256 s, __m256 o, bool off, float *dst) {
    put16(_mm256_castsi256_si128(q), s, o, off, dst);
    put16(_mm256_extracti128_si256(q, 1), s, o, off, dst + 16);
}

T_AVX2 static void q5_0_to_float(const void *src, float *dst, int64_t n) {
    const kvq_block_q5_0 *x = src;
    for (int64_t i = 0; i < n / 32; i++) {
        const __m256i h = _mm256_and_si256(bits_to_bytes(x[i].qh), _mm256_set1_epi8(16));
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(kvq_nibbles32_avx2(x[i].qs), h), _mm256_set1_epi8(16));
        put32(q, _mm256_set1_ps(_cvtsh_ss(x[i].d)), _mm256_setzero_ps(), false, dst + 32 * i);
    }
}

T_AVX2 static void q5_1_to_float(const void *src, float *dst, int64_t n) {
    const kvq_block_q5_1 *x = src;
    for (int64_t i = 0; i < n / 32; i++) {
        const __m256i h = _mm256_and_si256(bits_to_bytes(x[i].qh), _mm256_set1_epi8(16));
        put32(_mm256_or_si256(kvq_nibbles32_avx2(x[i].qs), h), _mm256_set1_ps(_cvtsh_ss(x[i].d)), _mm256_set1_ps(_cvtsh_ss(x[i].m)), true,
              dst + 32 * i);
    }
}

T_AVX2 static void iq4_nl_to_float(const void *src, float *dst, int64_t n) {
    const kvq_block_iq4_nl *x = src;
    const __m256i grid = iq4_grid();
    for (int64_t i = 0; i < n / 32; i++)
        put32(_mm256_shuffle_epi8(grid, kvq_nibbles32_avx2(x[i].qs)), _mm256_set1_ps(_cvtsh_ss(x[i].d)), _mm256_setzero_ps(),
              false, dst + 32 * i);
}

T_AVX2 static void iq4_xs_to_float(const void *src, float *dst, int64_t n) {
    const kvq_block_iq4_xs *x = src;
    const __m256i grid = iq4_grid();
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        const float d = _cvtsh_ss(x[i].d);
        for (int ib = 0; ib < 8; ib++) {
            const int ls = kvq_iq4_xs_ls(&x[i], ib);
            put32(_mm256_shuffle_epi8(grid, kvq_nibbles32_avx2(x[i].qs + 16 * ib)), _mm256_set1_ps(d * (float)(ls - 32)),
                  _mm256_setzero_ps(), false, dst + KVQ_QK_K * i + 32 * ib);
        }
    }
}

T_AVX2 static void q2_K_to_float(const void *src, float *dst, int64_t n) {
    const kvq_block_q2_K *x = src;
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        const float d = _cvtsh_ss(x[i].d), dmin = _cvtsh_ss(x[i].dmin);
        float *y = dst + KVQ_QK_K * i;
        for (int h = 0; h < 2; h++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * h));
            for (int j = 0; j < 4; j++) {
                const __m256i v = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * j), _mm256_set1_epi8(3));
                for (int l = 0; l < 2; l++) {
                    const int s = 8 * h + 2 * j + l;
                    const float dl = d * (float)(x[i].scales[s] & 0xF), ml = dmin * (float)(x[i].scales[s] >> 4);
                    put16(l ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v), _mm256_set1_ps(dl),
                          _mm256_set1_ps(-ml), true, y + 16 * s);
                }
            }
        }
    }
}

T_AVX2 static void q3_K_to_float(const void *src, float *dst, int64_t n) {
    const kvq_block_q3_K *x = src;
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        const float d = _cvtsh_ss(x[i].d);
        int8_t sc[16];
        kvq_q3_K_scales(x[i].scales, sc);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x[i].hmask);
        float *y = dst + KVQ_QK_K * i;
        for (int h = 0; h < 2; h++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * h));
            for (int j = 0; j < 4; j++) {
                const __m256i bit = _mm256_set1_epi8((char)(1 << (4 * h + j)));
                const __m256i hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), _mm256_set1_epi8(4));
                const __m256i q = _mm256_sub_epi8(
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 2 * j), _mm256_set1_epi8(3)), hi),
                    _mm256_set1_epi8(4));
                for (int l = 0; l < 2; l++) {
                    const int s = 8 * h + 2 * j + l;
                    put16(l ? _mm256_extracti128_si256(q, 1) : _mm256_castsi256_si128(q), _mm256_set1_ps(d * (float)sc[s]),
                          _mm256_setzero_ps(), false, y + 16 * s);
                }
            }
        }
    }
}

void kvq_simd_install_avx2_lowbit(kvq_type_traits *t) {
    t[KVQ_TYPE_Q5_0].to_float = q5_0_to_float;
    t[KVQ_TYPE_Q5_1].to_float = q5_1_to_float;
    t[KVQ_TYPE_IQ4_NL].to_float = iq4_nl_to_float;
    t[KVQ_TYPE_IQ4_XS].to_float = iq4_xs_to_float;
    t[KVQ_TYPE_Q2_K].to_float = q2_K_to_float;
    t[KVQ_TYPE_Q3_K].to_float = q3_K_to_float;
    t[KVQ_TYPE_Q5_0].vec_dot = q5_0_dot;
    t[KVQ_TYPE_Q5_1].vec_dot = q5_1_dot;
    t[KVQ_TYPE_IQ4_NL].vec_dot = iq4_nl_dot;
    t[KVQ_TYPE_IQ4_XS].vec_dot = iq4_xs_dot;
    t[KVQ_TYPE_Q2_K].vec_dot = q2_K_dot;
    t[KVQ_TYPE_Q3_K].vec_dot = q3_K_dot;
}
