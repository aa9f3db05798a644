/* Small x86 helpers shared by the SIMD kernel files. Their target (AVX2, FMA,
 * F16C) is a subset of every SIMD file's, so they inline into AVX2 and AVX-512
 * functions alike. */
#ifndef KVQ_KERNELS_SIMD_X86_H
#define KVQ_KERNELS_SIMD_X86_H
#include <immintrin.h>

/* Sum of the 8 lanes. */
__attribute__((target("avx2,fma,f16c"))) static inline float kvq_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
