/* AVX2 + FMA + F16C kernels. */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "quant_ref.h"
#include "simd.h"
#include "simd_x86.h"
#include "slim.h"

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

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
    float s = kvq_hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
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
    float s = kvq_hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += _cvtsh_ss(a[i]) * b[i];
    return s;
}

T_AVX2 static void f16_to_float(const void *src, float *dst, int64_t n) {
    const kvq_f16 *a = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))));
    for (; i < n; i++) dst[i] = _cvtsh_ss(a[i]);
}

T_AVX2 static void f16_from_float(const float *src, void *dst, int64_t n) {
    kvq_f16 *a = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(a + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) a[i] = kvq_f32_to_f16(src[i]);
}

/* Dequantizing Q8_0 / Q4_0 (the KV cache types of those names read rows back
 * this way): d * q in float, as the scalar reference, so results are equal. */
T_AVX2 static void q8_0_to_float(const void *src, float *dst, int64_t n) {
    const kvq_block_q8_0 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[b].d));
        for (int k = 0; k < 32; k += 8) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x[b].qs + k)));
            _mm256_storeu_ps(dst + 32 * b + k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

T_AVX2 static void q4_0_to_float(const void *src, float *dst, int64_t n) {
    const kvq_block_q4_0 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[b].d));
        const __m128i raw = _mm_loadu_si128((const __m128i *)x[b].qs), m4 = _mm_set1_epi8(15), e8 = _mm_set1_epi8(8);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m4), e8);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), e8);
        const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(dst + 32 * b + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[k])), d));
    }
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
    float s = kvq_hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += kvq_bf16_to_f32(a[i]) * b[i];
    return s;
}


T_AVX2 static float q8_0_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q8_0 *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(a[i].d) * _cvtsh_ss(b[i].d));
        __m256i qa = _mm256_loadu_si256((const __m256i *)a[i].qs);
        __m256i qb = _mm256_loadu_si256((const __m256i *)b[i].qs);
        acc = _mm256_fmadd_ps(d, kvq_sdot_i8x32_avx2(qa, qb), acc);
    }
    return kvq_hsum8(acc);
}

/* One q8_0 weight row against nx activation rows: the weights' absolute
 * values are taken once per block, each activation row pays only its own
 * sign, multiply-add and scale (dot_i8x32 split in two). */
T_AVX2 static void q8_0_dot_xn(const void *w, const void *x, size_t xs, int nx, int64_t n, float *out) {
    const kvq_block_q8_0 *a = w;
    __m256 acc[KVQ_DOT_XN];
    for (int t = 0; t < nx; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)a[i].qs), aq = _mm256_sign_epi8(q, q);
        const float dw = _cvtsh_ss(a[i].d);
        for (int t = 0; t < nx; t++) {
            const kvq_block_q8_0 *b = (const kvq_block_q8_0 *)((const uint8_t *)x + (size_t)t * xs) + i;
            __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)b->qs), q);
            __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(aq, sy), _mm256_set1_epi16(1)));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * _cvtsh_ss(b->d)), p, acc[t]);
        }
    }
    for (int t = 0; t < nx; t++) out[t] = kvq_hsum8(acc[t]);
}

void kvq_simd_install_avx2_quants(kvq_type_traits *t);

void kvq_simd_install_avx2(kvq_type_traits *t) {
    kvq_simd_install_avx2_quants(t);
    kvq_simd_install_avx2_lowbit(t);
    t[KVQ_TYPE_F32].vec_dot = f32_dot;
    t[KVQ_TYPE_F16].vec_dot = f16_dot;
    t[KVQ_TYPE_F16].to_float = f16_to_float;
    t[KVQ_TYPE_F16].from_float = f16_from_float;
    t[KVQ_TYPE_BF16].vec_dot = bf16_dot;
    t[KVQ_TYPE_Q8_0].vec_dot = q8_0_dot;
    t[KVQ_TYPE_Q8_0].vec_dot_xn = q8_0_dot_xn;
    t[KVQ_TYPE_Q8_0].to_float = q8_0_to_float;
    t[KVQ_TYPE_Q4_0].to_float = q4_0_to_float;
    for (int ty = KVQ_TYPE_SLIM2; ty <= KVQ_TYPE_SLIM4; ty++) t[ty].matvec = &kvq_slim_kernel_avx2;
}

/* ------------------------------------------------------ 4/5/6-bit weights */


T_AVX2 static float q4_0_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q4_0 *a = w;
    const kvq_block_q8_0 *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        __m256i q = _mm256_sub_epi8(kvq_nibbles32_avx2(a[i].qs), _mm256_set1_epi8(8));
        __m256 d = _mm256_set1_ps(_cvtsh_ss(a[i].d) * _cvtsh_ss(b[i].d));
        acc = _mm256_fmadd_ps(d, kvq_sdot_i8x32_avx2(q, _mm256_loadu_si256((const __m256i *)b[i].qs)), acc);
    }
    return kvq_hsum8(acc);
}

/* q4_0_dot for nx activation rows: the nibbles are unpacked once per block.
 * Eight, four or two rows at a time keep their accumulators in registers (a
 * variable count would spill them on every block); a last one goes alone. */
T_AVX2 static inline __m256 q4_0_term(__m256i aq, __m256i q, const kvq_block_q8_0 *b, float dw) {
    __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)b->qs), q);
    __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(aq, sy), _mm256_set1_epi16(1)));
    return _mm256_mul_ps(_mm256_set1_ps(dw * _cvtsh_ss(b->d)), p);
}

/* One q4_0 row against nx activation rows, nx a constant at every call (8,
 * 4, 2): inlined and unrolled per count, so acc[] lives in registers. */
T_AVX2 static inline __attribute__((always_inline)) void q4_0_dot_rows(const kvq_block_q4_0 *a, const uint8_t *x,
                                                                      size_t xs, int64_t nb, const int nx, float *out) {
    __m256 acc[KVQ_DOT_XN];
#pragma GCC unroll 8
    for (int t = 0; t < nx; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m256i q = _mm256_sub_epi8(kvq_nibbles32_avx2(a[i].qs), _mm256_set1_epi8(8)), aq = _mm256_sign_epi8(q, q);
        const float dw = _cvtsh_ss(a[i].d);
#pragma GCC unroll 8
        for (int t = 0; t < nx; t++)
            acc[t] = _mm256_add_ps(acc[t], q4_0_term(aq, q, (const kvq_block_q8_0 *)(x + (size_t)t * xs) + i, dw));
    }
#pragma GCC unroll 8
    for (int t = 0; t < nx; t++) out[t] = kvq_hsum8(acc[t]);
}

T_AVX2 static void q4_0_dot_xn(const void *w, const void *x, size_t xs, int nx, int64_t n, float *out) {
    int t = 0;
    for (; t + 8 <= nx; t += 8) q4_0_dot_rows(w, (const uint8_t *)x + (size_t)t * xs, xs, n / 32, 8, out + t);
    for (; t + 4 <= nx; t += 4) q4_0_dot_rows(w, (const uint8_t *)x + (size_t)t * xs, xs, n / 32, 4, out + t);
    for (; t + 2 <= nx; t += 2) q4_0_dot_rows(w, (const uint8_t *)x + (size_t)t * xs, xs, n / 32, 2, out + t);
    for (; t < nx; t++) out[t] = q4_0_dot(w, (const uint8_t *)x + (size_t)t * xs, n);
}


T_AVX2 static float q4_1_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q4_1 *a = w;
    const kvq_block_q8_1 *b = x;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        __m256i p = kvq_udot_i32_avx2(kvq_nibbles32_avx2(a[i].qs), _mm256_loadu_si256((const __m256i *)b[i].qs));
        __m256 d = _mm256_set1_ps(_cvtsh_ss(a[i].d) * _cvtsh_ss(b[i].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
        mins += _cvtsh_ss(a[i].m) * _cvtsh_ss(b[i].s);
    }
    return kvq_hsum8(acc) + mins;
}

T_AVX2 static inline int hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Q4_K and Q5_K x Q8_K in one kernel: five (a constant after inlining) adds
 * the fifth bit from qh. The two block layouts share d, dmin and the scales. */
T_AVX2 static inline __attribute__((always_inline)) float k45_dot(const void *w, const void *x, int64_t n,
                                                                  const bool five) {
    const kvq_block_q4_K *a4 = w;
    const kvq_block_q5_K *a5 = w;
#define K45(i, field) (five ? a5[i].field : a4[i].field)
    const kvq_block_q8_K *b = x;
    __m256 accf = _mm256_setzero_ps();
    float summ = 0;
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        __m256i acc = _mm256_setzero_si256();
        uint8_t sc[8], mn[8];
        kvq_k4_scales_mins(K45(i, scales), sc, mn);
        const uint8_t *q = K45(i, qs);
        const int8_t *y = b[i].qs;
        const __m256i hb = five ? _mm256_loadu_si256((const __m256i *)a5[i].qh) : _mm256_setzero_si256();
        for (int c = 0; c < 4; c++, q += 32, y += 64) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)q);
            __m256i lo = _mm256_and_si256(raw, _mm256_set1_epi8(15));
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), _mm256_set1_epi8(15));
            if (five) {
                __m256i m1b = _mm256_set1_epi8((char)(1 << (2 * c))), m2b = _mm256_set1_epi8((char)(2 << (2 * c)));
                /* high bit: 16 where qh has this sub-block's bit */
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, m1b), m1b),
                                                          _mm256_set1_epi8(16)));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, m2b), m2b),
                                                          _mm256_set1_epi8(16)));
            }
            __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)y));
            __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 32)));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p0, _mm256_set1_epi16(sc[2 * c])));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c + 1])));
        }
        /* one vector accumulator across blocks: no horizontal sum per block */
        accf = _mm256_fmadd_ps(_mm256_set1_ps(b[i].d * _cvtsh_ss(K45(i, d))), _mm256_cvtepi32_ps(acc), accf);
        summ += b[i].d * _cvtsh_ss(K45(i, dmin)) * (float)kvq_k_mins_dot(mn, b[i].bsums);
    }
#undef K45
    return kvq_hsum8(accf) - summ;
}

T_AVX2 static float q4_K_dot(const void *w, const void *x, int64_t n) { return k45_dot(w, x, n, false); }
T_AVX2 static float q5_K_dot(const void *w, const void *x, int64_t n) { return k45_dot(w, x, n, true); }

T_AVX2 static float q6_K_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q6_K *a = w;
    const kvq_block_q8_K *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        __m256i acc = _mm256_setzero_si256();
        const int8_t *y = b[i].qs;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = a[i].ql + 64 * h, *qh = a[i].qh + 32 * h;
            const int8_t *sc = a[i].scales + 8 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hh = _mm256_loadu_si256((const __m256i *)qh);
            const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hh, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                /* (q - 32) . y = q . y - 32 * sum(y); codes are unsigned 0..63 here */
                __m256i yv = _mm256_loadu_si256((const __m256i *)(y + 128 * h + 32 * k));
                __m256i p = _mm256_maddubs_epi16(q[k], yv);
                __m256i s16 = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, s16));
            }
        }
        int corr = 0;
        for (int j = 0; j < 16; j++) corr += a[i].scales[j] * b[i].bsums[j];
        sum += _cvtsh_ss(a[i].d) * b[i].d * (float)(hsum_i32(acc) - 32 * corr);
    }
    return sum;
}

void kvq_simd_install_avx2_quants(kvq_type_traits *t) {
    t[KVQ_TYPE_Q4_0].vec_dot = q4_0_dot;
    t[KVQ_TYPE_Q4_0].vec_dot_xn = q4_0_dot_xn;
    t[KVQ_TYPE_Q4_1].vec_dot = q4_1_dot;
    t[KVQ_TYPE_Q4_K].vec_dot = q4_K_dot;
    t[KVQ_TYPE_Q5_K].vec_dot = q5_K_dot;
    t[KVQ_TYPE_Q6_K].vec_dot = q6_K_dot;
}
