/* Small x86 helpers shared by the SIMD kernel files. Most have the target
 * AVX2 + FMA + F16C, a subset of every SIMD file's, so they inline into AVX2
 * and AVX-512 functions alike; kvq_exp512 and kvq_quant32_512 are for AVX-512
 * functions only. */
#ifndef KVQ_KERNELS_SIMD_X86_H
#define KVQ_KERNELS_SIMD_X86_H
#include <immintrin.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

/* Sum of the 8 lanes. */
__attribute__((target("avx2,fma,f16c"))) static inline float kvq_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The activation quantizers' shared steps (kvq_x8_quant_avx2, Q8_K's and
 * the slim kernels'): they write the scalar references' bytes, because
 * cvtps rounds to nearest even under the default MXCSR, as lrintf does, and
 * a maximum does not depend on order. */
/* max |v[i]| over n floats, n a multiple of 8 */
__attribute__((target("avx2,fma,f16c"))) static inline float kvq_absmax_avx2(const float *v, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + i)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}
/* 32 floats times id, rounded and saturated to int8, in their order */
__attribute__((target("avx2,fma,f16c"))) static inline __m256i kvq_i8x32_avx2(const float *v, __m256 id) {
    const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v), id)),
                  i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 8), id)),
                  i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 16), id)),
                  i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 24), id));
    /* the packs interleave 128-bit lanes; one permute restores the order */
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3)),
                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
/* lane i: the sum of int8 bytes 4i..4i+3 of q */
__attribute__((target("avx2,fma,f16c"))) static inline __m256i kvq_i8_sum4_avx2(__m256i q) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
}
/* 4 bytes broadcast to every dword (4 activations against 8 interleaved rows) */
__attribute__((target("avx2,fma,f16c"))) static inline __m256i kvq_bcast4_avx2(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
/* sum of the 8 int32 lanes */
__attribute__((target("avx2,fma,f16c"))) static inline int32_t kvq_hsum8_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* The 32-value blocks' dot steps (simd_avx2.c, simd_avx2_lowbit.c). */
/* 16 bytes of nibble pairs -> 32 bytes: the low nibbles, then the high ones
 * (the value order of Q4_0-style blocks) */
__attribute__((target("avx2,fma,f16c"))) static inline __m256i kvq_nibbles32_avx2(const uint8_t *qs) {
    const __m128i b = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m4), _mm_and_si128(b, m4));
}
/* signed int8 dot of 32 pairs -> 8 float lanes (the sign moves onto y so that
 * maddubs, unsigned x signed, applies; |x| <= 127 cannot saturate) */
__attribute__((target("avx2,fma,f16c"))) static inline __m256 kvq_sdot_i8x32_avx2(__m256i x, __m256i y) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}
/* unsigned codes x signed activations, 32 pairs -> 8 int32 lanes */
__attribute__((target("avx2,fma,f16c"))) static inline __m256i kvq_udot_i32_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* One channel of the attention kernels' score loops: for the NG queries q,
 * q + ldq, ..., acc[2g] += q[g] * a and acc[2g + 1] += q[g] * b, where a and
 * b hold that channel for 16 cached tokens. NG must be a constant at the
 * call, so the accumulators stay in registers. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void kvq_fma2_ng(const float *q, size_t ldq,
                                                                                     const int NG, __m256 a,
                                                                                     __m256 b, __m256 *acc) {
#pragma GCC unroll 6
    for (int g = 0; g < NG; g++) {
        const __m256 x = _mm256_broadcast_ss(q + (size_t)g * ldq);
        acc[2 * g] = _mm256_fmadd_ps(x, a, acc[2 * g]);
        acc[2 * g + 1] = _mm256_fmadd_ps(x, b, acc[2 * g + 1]);
    }
}

/* e^x for x <= 0 or moderate x (clamped below at -87): 2^(x log2 e) split
 * into integer and fraction, a degree-6 polynomial for 2^f, scalef for the
 * integer part. Relative error about 1e-7. For AVX-512 functions only. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))) static inline __m512 kvq_exp512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 fi = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, fi);
    __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fi);
}

/* kvq_quant32_ref with AVX-512, the same bytes: cvtps rounds to nearest even
 * under the default MXCSR, as lrintf does. For AVX-512 functions only. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))) static inline void
kvq_quant32_512(const float *x, int8_t *q, float *d) {
    __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    *d = amax / 127.0f;
    __m512 id = _mm512_set1_ps(*d ? 1.0f / *d : 0.0f);
    _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(a, id))));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(b, id))));
}

/* sum_j mins[j] * (bsums[2j] + bsums[2j+1]) for the 8 sub-blocks of 32 */
__attribute__((target("avx2,fma,f16c"))) static inline int kvq_k_mins_dot(const uint8_t mn[8], const int16_t *bsums) {
    __m128i pairs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)bsums), _mm_loadu_si128((const __m128i *)(bsums + 8)));
    uint64_t m8;
    memcpy(&m8, mn, 8);
    __m128i m = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)m8));
    __m128i p = _mm_madd_epi16(m, pairs);
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0x4e));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0xb1));
    return _mm_cvtsi128_si32(p);
}

#endif
