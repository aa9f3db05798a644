/* Small x86 helpers shared by the SIMD kernel files. Their target (AVX2, FMA,
 * F16C) is a subset of every SIMD file's, so they inline into AVX2 and AVX-512
 * functions alike. */
#ifndef KVQ_KERNELS_SIMD_X86_H
#define KVQ_KERNELS_SIMD_X86_H
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* Sum of the 8 lanes. */
__attribute__((target("avx2,fma,f16c"))) static inline float kvq_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
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
