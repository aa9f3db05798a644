/* AVX-512 (F, BW, VL, DQ, VNNI) kernels. */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "quant_ref.h"
#include "simd.h"
#include "gemv_q4_0.h"
#include "gemv_q4_K.h"
#include "simd_x86.h"

#define T_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

T_512 static float f32_dot(const void *w, const void *x, int64_t n) {
    const float *a = w, *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

T_512 static float f16_dot(const void *w, const void *x, int64_t n) {
    const kvq_f16 *a = w;
    const float *b = x;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i))), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i + 16))),
                             _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i))), _mm512_loadu_ps(b + i), s0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; i < n; i++) s += _cvtsh_ss(a[i]) * b[i];
    return s;
}

T_512 static float bf16_dot(const void *w, const void *x, int64_t n) {
    const kvq_bf16 *a = w;
    const float *b = x;
    __m512 s0 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(a + i)));
        s0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), _mm512_loadu_ps(b + i), s0);
    }
    float s = _mm512_reduce_add_ps(s0);
    for (; i < n; i++) s += kvq_bf16_to_f32(a[i]) * b[i];
    return s;
}

/* VNNI: u8 x s8 dot into int32 lanes; the sign of x is moved onto y. */
T_512 static inline __m256i dp_i8x32(__m256i acc, __m256i x, __m256i y) {
    __m256i ax = _mm256_sign_epi8(x, x);
    __m256i sy = _mm256_sign_epi8(y, x);
    return _mm256_dpbusd_epi32(acc, ax, sy);
}

T_512 static inline __m256 q8_0_block(const kvq_block_q8_0 *a, const kvq_block_q8_0 *b, __m256 acc) {
    __m256 d = _mm256_set1_ps(_cvtsh_ss(a->d) * _cvtsh_ss(b->d));
    __m256i p = dp_i8x32(_mm256_setzero_si256(), _mm256_loadu_si256((const __m256i *)a->qs),
                         _mm256_loadu_si256((const __m256i *)b->qs));
    return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
}

/* Two accumulators: one FMA chain would wait on its own latency every block. */
T_512 static float q8_0_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q8_0 *a = w, *b = x;
    const int64_t nb = n / 32;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        acc0 = q8_0_block(a + i, b + i, acc0);
        acc1 = q8_0_block(a + i + 1, b + i + 1, acc1);
    }
    if (i < nb) acc0 = q8_0_block(a + i, b + i, acc0);
    __m256 acc = _mm256_add_ps(acc0, acc1);
    return kvq_hsum8(acc);
}

/* q4_0 with VNNI: unsigned nibbles straight into dpbusd, the -8 offset
 * removed through the activations' sum. */
T_512 static inline __m256 q4_0_block(const kvq_block_q4_0 *a, const kvq_block_q8_0 *b, __m256 acc) {
    __m128i raw = _mm_loadu_si128((const __m128i *)a->qs);
    __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15)),
                                 _mm_and_si128(raw, _mm_set1_epi8(15)));
    __m256i y = _mm256_loadu_si256((const __m256i *)b->qs);
    /* (q - 8) . y = q . y - 8 * sum(y): q is unsigned, as VNNI wants */
    __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, y);
    __m256i sy = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), y);
    __m256 d = _mm256_set1_ps(_cvtsh_ss(a->d) * _cvtsh_ss(b->d));
    return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(p, sy)), acc);
}

/* Two blocks per 512-bit register: [w0 lo, w1 lo, w0 hi, w1 hi] against the
 * activations rearranged the same way; fewer instructions per block. */
T_512 static inline __m512 q4_0_pair(const kvq_block_q4_0 *a, const kvq_block_q8_0 *b, __m512 acc) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i r = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a[0].qs)),
                                        _mm_loadu_si128((const __m128i *)a[1].qs), 1);
    __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(r, m4)),
                                   _mm256_and_si256(_mm256_srli_epi16(r, 4), m4), 1);
    __m512i y = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b[0].qs)),
                                   _mm256_loadu_si256((const __m256i *)b[1].qs), 1);
    y = _mm512_shuffle_i64x2(y, y, _MM_SHUFFLE(3, 1, 2, 0));
    /* (q - 8) . y = q . y - 8 * sum(y): q is unsigned, as VNNI wants */
    __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
    __m512i sy = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), y);
    __m128 d = _mm_unpacklo_ps(_mm_set_ss(_cvtsh_ss(a[0].d) * _cvtsh_ss(b[0].d)),
                               _mm_set_ss(_cvtsh_ss(a[1].d) * _cvtsh_ss(b[1].d)));
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
    __m512 dv = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d));
    return _mm512_fmadd_ps(dv, _mm512_cvtepi32_ps(_mm512_sub_epi32(p, sy)), acc);
}

T_512 static float q4_0_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q4_0 *a = w;
    const kvq_block_q8_0 *b = x;
    const int64_t nb = n / 32;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        acc0 = q4_0_pair(a + i, b + i, acc0);
        acc1 = q4_0_pair(a + i + 2, b + i + 2, acc1);
    }
    __m256 t = _mm256_setzero_ps();
    for (; i < nb; i++) t = q4_0_block(a + i, b + i, t);
    __m512 z = _mm512_add_ps(acc0, acc1);
    __m256 acc = _mm256_add_ps(t, _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1)));
    return kvq_hsum8(acc);
}

/* q6_K x q8_K. Per half (128 values): ql's 64 bytes give the low nibbles
 * of values 0..63 and the high nibbles of 64..127, in the natural order of
 * the activations; qh's 32 bytes, broadcast to both 256-bit halves and
 * shifted per 64-bit lane, give bits 4-5. Each 32-bit lane of a VNNI result
 * is 4 values of one 16-value sub-block, so the scales apply per lane. The
 * -32 offset of the 6-bit values is removed once per block through Q8_K's
 * 16-value sums. */
T_512 static float q6_K_dot(const void *w, const void *x, int64_t n) {
    const kvq_block_q6_K *a = w;
    const kvq_block_q8_K *b = x;
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30), lo16 = _mm512_set1_epi32(0xFFFF);
    const __m512i sh_lo = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4), sh_hi = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    float corr = 0;
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        /* scales as int16 in the low half of each 32-bit lane, zero above:
         * madd_epi16 with a lane sum |p| <= 4 * 63 * 127 is then exact */
        const __m512i sc = _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)a[i].scales)), lo16);
        __m512i t = _mm512_setzero_si512();
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512(a[i].ql + 64 * h);
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h)));
            /* values 0..31 take qh bits 0-1, 32..63 bits 2-3, 64..95 bits 4-5, 96..127 bits 6-7 */
            const __m512i q0 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi64(qh, sh_lo), m30));
            const __m512i q1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                               _mm512_and_si512(_mm512_srlv_epi64(qh, sh_hi), m30));
            const int8_t *y = b[i].qs + 128 * h;
            const __m512i p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q0, _mm512_loadu_si512(y));
            const __m512i p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q1, _mm512_loadu_si512(y + 64));
            /* lane j of p0 is sub-block 8h + j/4, of p1 8h + 4 + j/4 */
            const __m512i i0 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
            const __m512i s0 = _mm512_permutexvar_epi32(_mm512_add_epi32(i0, _mm512_set1_epi32(8 * h)), sc);
            const __m512i s1 = _mm512_permutexvar_epi32(_mm512_add_epi32(i0, _mm512_set1_epi32(8 * h + 4)), sc);
            t = _mm512_add_epi32(t, _mm512_madd_epi16(p0, s0));
            t = _mm512_add_epi32(t, _mm512_madd_epi16(p1, s1));
        }
        const float dd = _cvtsh_ss(a[i].d) * b[i].d;
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(dd), acc);
        /* 32 * sum_j scale_j * (sum of sub-block j's activations) */
        const __m256i ms = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a[i].scales)),
                                             _mm256_loadu_si256((const __m256i *)b[i].bsums));
        corr += dd * 32.0f * (float)_mm512_reduce_add_epi32(_mm512_zextsi256_si512(ms));
    }
    return _mm512_reduce_add_ps(acc) - corr;
}

/* Q4_K and Q5_K x Q8_K in one kernel; five (a constant after inlining) adds
 * the fifth bit. The low nibbles of qs bytes 0..63 are sub-blocks 0 and 2,
 * the high ones 1 and 3; one 128-bit-lane shuffle puts them in the natural
 * order of the activations. Bit j of qh[l] is the fifth bit of value l of
 * sub-block j: a per-64-bit-lane rotate brings it to bit 4 of the same byte.
 * (Q4_K decode in kvq_matmul uses gemv_q4_K.c, which reads aligned lines;
 * this is the trait-table kernel for other callers.) */
T_512 static inline __attribute__((always_inline)) float k45_dot(const void *w, const void *x, int64_t n,
                                                                 const bool five) {
    const kvq_block_q4_K *a4 = w;
    const kvq_block_q5_K *a5 = w;
#define K45(i, field) (five ? a5[i].field : a4[i].field)
    const kvq_block_q8_K *b = x;
    const __m512i m4 = _mm512_set1_epi8(0x0F), m10 = _mm512_set1_epi8(0x10);
    /* rotate left by 4 - j for the qwords of sub-block j (right by j - 4 past 4) */
    const __m512i rot[4] = {_mm512_set_epi64(3, 3, 3, 3, 4, 4, 4, 4), _mm512_set_epi64(1, 1, 1, 1, 2, 2, 2, 2),
                            _mm512_set_epi64(63, 63, 63, 63, 0, 0, 0, 0),
                            _mm512_set_epi64(61, 61, 61, 61, 62, 62, 62, 62)};
    const __m512i half = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    float summ = 0;
    for (int64_t i = 0; i < n / KVQ_QK_K; i++) {
        uint8_t sc[8], mn[8];
        kvq_k4_scales_mins(K45(i, scales), sc, mn);
        uint64_t sc64;
        memcpy(&sc64, sc, 8);
        const __m512i scv = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc64));
        const __m512i qh =
            five ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)a5[i].qh)) : _mm512_setzero_si512();
        __m512i t = _mm512_setzero_si512();
        /* unrolled, or q[] and rot[] live on the stack */
        _Pragma("GCC unroll 2") for (int c = 0; c < 2; c++) {
            const __m512i raw = _mm512_loadu_si512(K45(i, qs) + 64 * c);
            const __m512i lo = _mm512_and_si512(raw, m4), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            /* [sub 4c | sub 4c+1] and [sub 4c+2 | sub 4c+3] */
            __m512i q[2] = {_mm512_shuffle_i64x2(lo, hi, 0x44), _mm512_shuffle_i64x2(lo, hi, 0xEE)};
            _Pragma("GCC unroll 2") for (int k = 0; k < 2; k++) {
                const int j = 4 * c + 2 * k; /* first sub-block of q[k] */
                if (five) q[k] = _mm512_or_si512(q[k], _mm512_and_si512(_mm512_rolv_epi64(qh, rot[j / 2]), m10));
                const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[k], _mm512_loadu_si512(b[i].qs + 32 * j));
                /* |p| <= 4 * 31 * 127 and scales < 64: madd_epi16 is exact */
                const __m512i s = _mm512_permutexvar_epi32(_mm512_add_epi32(half, _mm512_set1_epi32(j)), scv);
                t = _mm512_add_epi32(t, _mm512_madd_epi16(p, s));
            }
        }
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(_cvtsh_ss(K45(i, d)) * b[i].d), acc);
        summ += b[i].d * _cvtsh_ss(K45(i, dmin)) * (float)kvq_k_mins_dot(mn, b[i].bsums);
    }
#undef K45
    return _mm512_reduce_add_ps(acc) - summ;
}

T_512 static float q4_K_dot(const void *w, const void *x, int64_t n) { return k45_dot(w, x, n, false); }
T_512 static float q5_K_dot(const void *w, const void *x, int64_t n) { return k45_dot(w, x, n, true); }

/* Q8_K activations (the partner of the K-quants): the scalar reference's
 * arithmetic; cvtps rounds to nearest even under the default MXCSR, as
 * lrintf does. */
T_512 static void q8_K_from_float(const float *src, void *dst, int64_t n) {
    kvq_block_q8_K *y = dst;
    const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float *v = src + b * KVQ_QK_K;
        __m512 m = _mm512_setzero_ps();
        for (int i = 0; i < KVQ_QK_K; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(v + i)));
        const float d = _mm512_reduce_max_ps(m) / 127.0f;
        const __m512 id = _mm512_set1_ps(d ? 1.0f / d : 0.0f);
        y[b].d = d;
        for (int i = 0; i < KVQ_QK_K; i += 16) {
            __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + i), id));
            r = _mm512_max_epi32(_mm512_min_epi32(r, lim), nlim);
            _mm_storeu_si128((__m128i *)(y[b].qs + i), _mm512_cvtepi32_epi8(r));
            y[b].bsums[i / 16] = (int16_t)_mm512_reduce_add_epi32(r);
        }
    }
}

void kvq_simd_install_avx512(kvq_type_traits *t, bool vbmi) {
    static const kvq_matvec_kernel Q4_0 = {.act_size = kvq_q4_0x4_act_size, .quant = kvq_q4_0x4_quant,
                                           .dot = kvq_q4_0x4_dot_vbmi, .rows = kvq_q4_0x4_rows_vbmi};
    static const kvq_matvec_kernel Q4_K = {.act_size = kvq_q4_Kx_act_size, .quant = kvq_q4_Kx_quant,
                                           .dot = kvq_q4_Kx_dot_512, .rows = kvq_q4_Kx_rows_512};
    if (vbmi) t[KVQ_TYPE_Q4_0].matvec = &Q4_0;
    t[KVQ_TYPE_Q4_K].matvec = &Q4_K;
    t[KVQ_TYPE_Q8_K].from_float = q8_K_from_float;
    t[KVQ_TYPE_Q4_K].vec_dot = q4_K_dot;
    t[KVQ_TYPE_Q5_K].vec_dot = q5_K_dot;
    t[KVQ_TYPE_Q6_K].vec_dot = q6_K_dot;
    t[KVQ_TYPE_Q4_0].vec_dot = q4_0_dot;
    t[KVQ_TYPE_F32].vec_dot = f32_dot;
    t[KVQ_TYPE_F16].vec_dot = f16_dot;
    t[KVQ_TYPE_BF16].vec_dot = bf16_dot;
    t[KVQ_TYPE_Q8_0].vec_dot = q8_0_dot;
}
