/* AVX2 + FMA + F16C kernels. */
#include <immintrin.h>

#include "quant_ref.h"
#include "simd.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

T_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

T_AVX2 static float f32_dot(const void *w, const void *x, int64_t n) {
    const float *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

T_AVX2 static float f16_dot(const void *w, const void *x, int64_t n) {
    const kvq_f16 *a = w;
    const float *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8)));
        s0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += kvq_f16_to_f32(a[i]) * b[i];
    return s;
}

T_AVX2 static void f16_to_float(const void *src, float *dst, int64_t n) {
    const kvq_f16 *a = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))));
    for (; i < n; i++) dst[i] = kvq_f16_to_f32(a[i]);
}

T_AVX2 static void f16_from_float(const float *src, void *dst, int64_t n) {
    kvq_f16 *a = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(a + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) a[i] = kvq_f32_to_f16(src[i]);
}

T_AVX2 static inline __m256 bf16x8(const kvq_bf16 *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

T_AVX2 static float bf16_dot(const void *w, const void *x, int64_t n) {
    const kvq_bf16 *a = w;
    const float *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(bf16x8(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(bf16x8(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += kvq_bf16_to_f32(a[i]) * b[i];
    return s;
}

/* Signed int8 dot of 32 pairs -> 8 int32 lanes (sign moved onto y so that
 * the unsigned x signed maddubs instruction applies). */
T_AVX2 static inline __m256 dot_i8x32(__m256i x, __m256i y) {
    __m256i ax = _mm256_sign_epi8(x, x);
    __m256i sy = _mm256_sign_epi8(y, x);
    __m256i p16 = _mm256_maddubs_epi16(ax, sy);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

T_AVX2 static float q8_0_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q8_0 *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        __m256 d = _mm256_set1_ps(kvq_f16_to_f32(a[i].d) * kvq_f16_to_f32(b[i].d));
        __m256i qa = _mm256_loadu_si256((const __m256i *)a[i].qs);
        __m256i qb = _mm256_loadu_si256((const __m256i *)b[i].qs);
        acc = _mm256_fmadd_ps(d, dot_i8x32(qa, qb), acc);
    }
    return hsum8(acc);
}

void kvq_simd_install_avx2(kvq_type_traits *t) {
    t[KVQ_TYPE_F32].vec_dot = f32_dot;
    t[KVQ_TYPE_F16].vec_dot = f16_dot;
    t[KVQ_TYPE_F16].to_float = f16_to_float;
    t[KVQ_TYPE_F16].from_float = f16_from_float;
    t[KVQ_TYPE_BF16].vec_dot = bf16_dot;
    t[KVQ_TYPE_Q8_0].vec_dot = q8_0_dot;
}
