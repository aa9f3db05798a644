/* Fast Walsh-Hadamard transform (fwht.h): log2(n) rounds of butterflies
 * (a, b) -> (a + b, a - b). In AVX2 the rounds of stride 8 and more are whole
 * vectors; the strides 4, 2 and 1 stay inside a vector, one permute each. */
#include "fwht.h"

#include <immintrin.h>
#include "../core/cpu.h"

void kvq_fwht_ref(float *x, int n) {
    for (int len = 1; len < n; len <<= 1)
        for (int i = 0; i < n; i += 2 * len)
            for (int j = i; j < i + len; j++) {
                const float a = x[j], b = x[j + len];
                x[j] = a + b;
                x[j + len] = a - b;
            }
}

__attribute__((target("avx2,fma"))) void kvq_fwht_avx2(float *x, int n) {
    if (n < 8) {
        kvq_fwht_ref(x, n);
        return;
    }
    for (int i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), s;
        s = _mm256_permute_ps(v, 0xB1); /* stride 1: swap neighbours */
        v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xAA);
        s = _mm256_permute_ps(v, 0x4E); /* stride 2: swap pairs */
        v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xCC);
        s = _mm256_permute2f128_ps(v, v, 1); /* stride 4: swap halves */
        v = _mm256_blend_ps(_mm256_add_ps(v, s), _mm256_sub_ps(s, v), 0xF0);
        _mm256_storeu_ps(x + i, v);
    }
    for (int len = 8; len < n; len <<= 1)
        for (int i = 0; i < n; i += 2 * len)
            for (int j = i; j < i + len; j += 8) {
                const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + len);
                _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
                _mm256_storeu_ps(x + j + len, _mm256_sub_ps(a, b));
            }
}

void kvq_fwht(float *x, int n) {
    if (kvq_isa_active() >= KVQ_ISA_AVX2) kvq_fwht_avx2(x, n);
    else kvq_fwht_ref(x, n);
}
