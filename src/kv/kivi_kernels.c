#include "kivi_kernels.h"

#include <immintrin.h>
#include <stdbool.h>
#include <string.h>
#include "../core/cpu.h"
#include "../kernels/simd_x86.h"
#include "kv_simd.h"
#include "kvquant.h"

/* ------------------------------------------------------------------ scalar */
static void qk_block_ref(const uint8_t *codes, const kvq_f16 *ms, int G, int hd, int kb, const float *q, int nq,
                         float *s, int lds) {
    const int cb = kvq_code_bytes(G, kb);
    for (int g = 0; g < nq; g++) {
        float *acc = s + (size_t)g * lds;
        for (int j = 0; j < G; j++) acc[j] = 0;
        for (int d = 0; d < hd; d++) {
            float mn = kvq_f16_to_f32(ms[d]), sc = kvq_f16_to_f32(ms[hd + d]), qd = q[g * hd + d];
            for (int j = 0; j < G; j++) acc[j] += qd * (mn + sc * (float)kvq_code_at(codes + d * cb, G, kb, j));
        }
    }
}

static void av_rows_ref(const uint8_t *codes, int t0, const kvq_f16 *ms, int n, int hd, int vb, int vg, const float *w,
                        int ldw, int nq, float *out) {
    const int ng = hd / vg, gb = kvq_code_bytes(vg, vb), rb = ng * gb;
    uint8_t row[1024];
    for (int i = 0; i < n; i++) {
        kvq_vrow_get(codes, t0 + i, rb, row);
        const kvq_f16 *m = ms + (size_t)i * 2 * ng;
        for (int gr = 0; gr < ng; gr++) {
            float mn = kvq_f16_to_f32(m[2 * gr]), sc = kvq_f16_to_f32(m[2 * gr + 1]);
            for (int c = 0; c < vg; c++) {
                float v = mn + sc * (float)kvq_code_at(row + gr * gb, vg, vb, c);
                for (int g = 0; g < nq; g++) out[g * hd + gr * vg + c] += w[(size_t)g * ldw + i] * v;
            }
        }
    }
}

static const kvq_kivi_kernels K_REF = {qk_block_ref, av_rows_ref};

#if defined(__x86_64__)
/* ---------------------------------------------------------------- AVX-512 */
#define T5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

/* The 32 codes of one packed group as two vectors of 16 floats. */
T5 static inline void unpack32(const uint8_t *p, int b, __m512 *lo, __m512 *hi) {
    __m512i a, c;
    if (b == 8) {
        a = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
        c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16)));
    } else if (b == 4) {
        __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
        a = _mm512_and_si512(x, _mm512_set1_epi32(15));
        c = _mm512_srli_epi32(x, 4);
    } else { /* 2 bits: 8 bytes, lanes 0..15 = bytes 0..7 twice */
        uint64_t u;
        memcpy(&u, p, 8);
        __m512i x = _mm512_cvtepu8_epi32(_mm_set1_epi64x((long long)u));
        const __m512i s01 = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
        const __m512i s23 = _mm512_set_epi32(6, 6, 6, 6, 6, 6, 6, 6, 4, 4, 4, 4, 4, 4, 4, 4);
        a = _mm512_and_si512(_mm512_srlv_epi32(x, s01), _mm512_set1_epi32(3));
        c = _mm512_and_si512(_mm512_srlv_epi32(x, s23), _mm512_set1_epi32(3));
    }
    *lo = _mm512_cvtepi32_ps(a);
    *hi = _mm512_cvtepi32_ps(c);
}

/* q . (min + s*code) = sum_d (q_d s_d) code_d + sum_d q_d min_d: the scales
 * fold into the query once per block and the minimums into one constant. */
T5 static void qk_block_avx512(const uint8_t *codes, const kvq_f16 *ms, int G, int hd, int kb, const float *q,
                               int nq, float *s, int lds) {
    if (G != 32 || hd > 1024) { qk_block_ref(codes, ms, G, hd, kb, q, nq, s, lds); return; }
    const int cb = kvq_code_bytes(KVQ_KT, kb);
    float qs[4][1024];
    for (int g0 = 0; g0 < nq; g0 += 4) {
        const int ng = nq - g0 < 4 ? nq - g0 : 4;
        __m512 acc[8];
        for (int g = 0; g < ng; g++) {
            const float *qg = q + (size_t)(g0 + g) * hd;
            __m512 vb = _mm512_setzero_ps();
            int d = 0;
            for (; d + 16 <= hd; d += 16) {
                __m512 mn = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ms + d)));
                __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ms + hd + d)));
                __m512 qv = _mm512_loadu_ps(qg + d);
                _mm512_storeu_ps(qs[g] + d, _mm512_mul_ps(qv, sc));
                vb = _mm512_fmadd_ps(qv, mn, vb);
            }
            float base = _mm512_reduce_add_ps(vb);
            for (; d < hd; d++) {
                qs[g][d] = qg[d] * kvq_f16_to_f32(ms[hd + d]);
                base += qg[d] * kvq_f16_to_f32(ms[d]);
            }
            acc[2 * g] = acc[2 * g + 1] = _mm512_set1_ps(base);
        }
        for (int d = 0; d < hd; d++) {
            __m512 lo, hi;
            unpack32(codes + d * cb, kb, &lo, &hi);
            for (int g = 0; g < ng; g++) {
                __m512 x = _mm512_set1_ps(qs[g][d]);
                acc[2 * g] = _mm512_fmadd_ps(x, lo, acc[2 * g]);
                acc[2 * g + 1] = _mm512_fmadd_ps(x, hi, acc[2 * g + 1]);
            }
        }
        for (int g = 0; g < ng; g++) {
            _mm512_storeu_ps(s + (size_t)(g0 + g) * lds, acc[2 * g]);
            _mm512_storeu_ps(s + (size_t)(g0 + g) * lds + 16, acc[2 * g + 1]);
        }
    }
}

#define T5V __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

/* Channel row d of a key block (32 tokens) as 32 bytes, one code per token. */
T5V static inline __m256i key_row_bytes(const uint8_t *p, int b) {
    if (b == 8) return _mm256_loadu_si256((const __m256i *)p);
    __m128i lo, hi;
    if (b == 4) {
        __m128i x = _mm_loadu_si128((const __m128i *)p);
        lo = _mm_and_si128(x, _mm_set1_epi8(15));
        hi = _mm_and_si128(_mm_srli_epi16(x, 4), _mm_set1_epi8(15));
    } else { /* byte j holds tokens j, j+8, j+16, j+24 in bits 0-1, 2-3, 4-5, 6-7 */
        uint64_t u;
        memcpy(&u, p, 8);
        __m128i x = _mm_set1_epi64x((long long)u);
        lo = _mm_and_si128(_mm_srlv_epi64(x, _mm_set_epi64x(2, 0)), _mm_set1_epi8(3));
        hi = _mm_and_si128(_mm_srlv_epi64(x, _mm_set_epi64x(6, 4)), _mm_set1_epi8(3));
    }
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* Scores of one key block for NH heads (compile-time, so the accumulators stay in registers). */
T5V static inline __attribute__((always_inline)) void qk_heads(const uint8_t *codes, int cb, int kb, int hd,
                                                               int8_t (*qi)[1024], const float *alpha,
                                                               const float *base, float *s, int lds, const int NH) {
    __m256i acc[4][4];
#pragma GCC unroll 4
    for (int g = 0; g < NH; g++)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) acc[g][k] = _mm256_setzero_si256();
    for (int d = 0; d < hd; d += 4) {
        __m256i r0 = key_row_bytes(codes + d * cb, kb), r1 = key_row_bytes(codes + (d + 1) * cb, kb);
        __m256i r2 = key_row_bytes(codes + (d + 2) * cb, kb), r3 = key_row_bytes(codes + (d + 3) * cb, kb);
        __m256i a = _mm256_unpacklo_epi8(r0, r1), b = _mm256_unpackhi_epi8(r0, r1);
        __m256i c = _mm256_unpacklo_epi8(r2, r3), e = _mm256_unpackhi_epi8(r2, r3);
        /* tokens {0-3,16-19}, {4-7,20-23}, {8-11,24-27}, {12-15,28-31} */
        __m256i x[4] = {_mm256_unpacklo_epi16(a, c), _mm256_unpackhi_epi16(a, c), _mm256_unpacklo_epi16(b, e),
                        _mm256_unpackhi_epi16(b, e)};
#pragma GCC unroll 4
        for (int g = 0; g < NH; g++) {
            int32_t w;
            memcpy(&w, qi[g] + d, 4);
            __m256i qv = _mm256_set1_epi32(w);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) acc[g][k] = _mm256_dpbusd_epi32(acc[g][k], x[k], qv);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NH; g++) {
        __m256 al = _mm256_set1_ps(alpha[g]), bs = _mm256_set1_ps(base[g]);
        float *o = s + (size_t)g * lds;
        __m256i n[4] = {_mm256_permute2x128_si256(acc[g][0], acc[g][1], 0x20),
                        _mm256_permute2x128_si256(acc[g][2], acc[g][3], 0x20),
                        _mm256_permute2x128_si256(acc[g][0], acc[g][1], 0x31),
                        _mm256_permute2x128_si256(acc[g][2], acc[g][3], 0x31)};
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(o + 8 * k, _mm256_fmadd_ps(al, _mm256_cvtepi32_ps(n[k]), bs));
    }
}

/* Keys with VNNI. In f32 a quantized key costs as many FMAs per value as an
 * f16 one, so it could never be faster than f16 at depth; in int8 it costs a
 * quarter. The scale-folded query (q_d s_d) is quantized to int8 per block and
 * head (as llama.cpp quantizes queries to q8 for its quantized caches), the
 * codes stay exact, and dpbusd sums 4 channels of one token per lane, so four
 * channel rows are transposed to [token][4 channels] on the fly. */
T5V static void qk_block_vnni(const uint8_t *codes, const kvq_f16 *ms, int G, int hd, int kb, const float *q, int nq,
                              float *s, int lds) {
    if (G != 32 || hd > 1024 || hd % 16 || kb > 4) { qk_block_avx512(codes, ms, G, hd, kb, q, nq, s, lds); return; }
    const int cb = kvq_code_bytes(KVQ_KT, kb);
    int8_t qi[4][1024];
    float alpha[4], base[4];
    for (int g0 = 0; g0 < nq; g0 += 4) {
        const int ng = nq - g0 < 4 ? nq - g0 : 4;
        for (int g = 0; g < ng; g++) {
            const float *qg = q + (size_t)(g0 + g) * hd;
            float qs[1024];
            __m512 vb = _mm512_setzero_ps(), vm = _mm512_setzero_ps();
            for (int d = 0; d < hd; d += 16) {
                __m512 mn = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ms + d)));
                __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ms + hd + d)));
                __m512 qv = _mm512_loadu_ps(qg + d), x = _mm512_mul_ps(qv, sc);
                _mm512_storeu_ps(qs + d, x);
                vm = _mm512_max_ps(vm, _mm512_abs_ps(x));
                vb = _mm512_fmadd_ps(qv, mn, vb);
            }
            base[g] = _mm512_reduce_add_ps(vb);
            float amax = _mm512_reduce_max_ps(vm);
            alpha[g] = amax / 127.0f;
            __m512 inv = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
            for (int d = 0; d < hd; d += 16)
                _mm_storeu_si128((__m128i *)(qi[g] + d),
                                 _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(qs + d), inv))));
        }
        float *o = s + (size_t)g0 * lds;
        if (ng == 4) qk_heads(codes, cb, kb, hd, qi, alpha, base, o, lds, 4);
        else {
            int g = 0;
            if (ng >= 2) { qk_heads(codes, cb, kb, hd, qi, alpha, base, o, lds, 2); g = 2; }
            if (ng & 1) qk_heads(codes, cb, kb, hd, qi + g, alpha + g, base + g, o + (size_t)g * lds, lds, 1);
        }
    }
}

/* One value group of 32 channels for NH heads: a compile-time head count keeps
 * the 4*NH accumulators in registers (a runtime count spilled them). */
T5V static inline __attribute__((always_inline)) void av_group(const uint8_t *p0, size_t qstride, int n4, int vb,
                                                               uint8_t (*wq)[272], const float *beta,
                                                               const float *mterm, float *o, int hd, const int NH) {
    __m256i acc[4][4];
#pragma GCC unroll 16
    for (int g = 0; g < NH; g++)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) acc[g][k] = _mm256_setzero_si256();
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    for (int t = 0; t < n4; t += 4) {
        /* x[k]: channels 8k..8k+7 of the group, 4 tokens per lane */
        const uint8_t *p = p0 + (size_t)(t >> 2) * qstride;
        __m256i x[4];
        if (vb == 4) {
            __m256i y0 = _mm256_loadu_si256((const __m256i *)p), y1 = _mm256_loadu_si256((const __m256i *)(p + 32));
            x[0] = _mm256_and_si256(y0, m4);
            x[1] = _mm256_and_si256(y1, m4);
            x[2] = _mm256_and_si256(_mm256_srli_epi16(y0, 4), m4);
            x[3] = _mm256_and_si256(_mm256_srli_epi16(y1, 4), m4);
        } else {
            __m256i y = _mm256_loadu_si256((const __m256i *)p);
            x[0] = _mm256_and_si256(y, m2);
            x[1] = _mm256_and_si256(_mm256_srli_epi16(y, 2), m2);
            x[2] = _mm256_and_si256(_mm256_srli_epi16(y, 4), m2);
            x[3] = _mm256_and_si256(_mm256_srli_epi16(y, 6), m2);
        }
#pragma GCC unroll 4
        for (int g = 0; g < NH; g++) {
            int32_t v;
            memcpy(&v, wq[g] + t, 4);
            __m256i wv = _mm256_set1_epi32(v);
            /* weights unsigned (u8 operand), codes < 16 fit the signed one */
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) acc[g][k] = _mm256_dpbusd_epi32(acc[g][k], wv, x[k]);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NH; g++) {
        __m256 be = _mm256_set1_ps(beta[g]), mt = _mm256_set1_ps(mterm[g]);
        float *og = o + (size_t)g * hd;
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(og + 8 * k, _mm256_add_ps(_mm256_loadu_ps(og + 8 * k),
                                                       _mm256_fmadd_ps(be, _mm256_cvtepi32_ps(acc[g][k]), mt)));
    }
}

/* Values with VNNI, for the same reason as keys: out_d = sum_t (w_t s_t) code_td
 * + sum_t w_t min_t. The weights w_t s_t (>= 0) are quantized to 8 unsigned bits
 * per (tile, head, group); their rounding error (<= 1/510 of the tile's largest
 * weight) stays well below a 2- or 4-bit code's. The quad layout puts one
 * channel's 4 token codes in one lane, so no transpose is needed. 8-bit values
 * keep the f32 path, where that rounding would dominate their error. */
T5V static bool av_rows_vnni(const uint8_t *codes, int t0, const kvq_f16 *ms, int n, int hd, int vb, const float *w,
                             int ldw, int nq, float *out) {
    const int off = t0 & 3, span = off + n;
    const int ng = hd / 32, gb = kvq_code_bytes(32, vb), rb = ng * gb, n4 = (span + 3) & ~3, n16 = (span + 15) & ~15;
    const uint8_t *quad0 = codes + (size_t)(t0 >> 2) * 4 * rb;
    /* (min, scale) per group, indexed from the first quad, zero outside [off, span):
     * converted 16 at a time, then de-interleaved with gathers from L1 */
    float msf[272 * 2 * 16];
    const int per = 2 * ng, cnt = n * per;
    memset(msf, 0, (size_t)off * per * sizeof(float));
    memset(msf + (size_t)span * per, 0, (size_t)(n16 - span) * per * sizeof(float));
    float *mf = msf + (size_t)off * per;
    int k0 = 0;
    for (; k0 + 16 <= cnt; k0 += 16) _mm512_storeu_ps(mf + k0, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ms + k0))));
    for (; k0 < cnt; k0++) mf[k0] = kvq_f16_to_f32(ms[k0]);
    float sc[16][272], mn[16][272];
    const __m512i lane = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(per));
    __mmask16 neg = 0;
    for (int gr = 0; gr < ng; gr++)
        for (int i = 0; i < n16; i += 16) {
            const float *src = msf + (size_t)i * per + 2 * gr;
            __m512 vm = _mm512_i32gather_ps(lane, src, 4), vs = _mm512_i32gather_ps(lane, src + 1, 4);
            neg |= _mm512_cmp_ps_mask(vs, _mm512_setzero_ps(), _CMP_LT_OQ);
            _mm512_storeu_ps(mn[gr] + i, vm);
            _mm512_storeu_ps(sc[gr] + i, vs);
        }
    if (neg) return false; /* unsigned weights need scales >= 0, as the quantizer makes them */
    uint8_t wq[4][272];
    float wf[4][272];
    for (int g0 = 0; g0 < nq; g0 += 4) {
        const int nh = nq - g0 < 4 ? nq - g0 : 4;
        for (int g = 0; g < nh; g++) {
            memset(wf[g], 0, (size_t)n16 * sizeof(float));
            memcpy(wf[g] + off, w + (size_t)(g0 + g) * ldw, (size_t)n * sizeof(float));
        }
        for (int gr = 0; gr < ng; gr++) {
            float beta[4], mterm[4];
            for (int g = 0; g < nh; g++) {
                __m512 vmx = _mm512_setzero_ps(), vmt = _mm512_setzero_ps();
                float ws[272];
                for (int i = 0; i < n16; i += 16) {
                    __m512 wv = _mm512_loadu_ps(wf[g] + i), x = _mm512_mul_ps(wv, _mm512_loadu_ps(sc[gr] + i));
                    _mm512_storeu_ps(ws + i, x);
                    vmx = _mm512_max_ps(vmx, x);
                    vmt = _mm512_fmadd_ps(wv, _mm512_loadu_ps(mn[gr] + i), vmt);
                }
                const float mx = _mm512_reduce_max_ps(vmx);
                const __m512 inv = _mm512_set1_ps(mx > 0 ? 255.0f / mx : 0.0f);
                for (int i = 0; i < n16; i += 16)
                    _mm_storeu_si128((__m128i *)(wq[g] + i),
                                     _mm512_cvtusepi32_epi8(_mm512_cvtps_epu32(_mm512_mul_ps(_mm512_loadu_ps(ws + i), inv))));
                beta[g] = mx / 255.0f;
                mterm[g] = _mm512_reduce_add_ps(vmt);
            }
            const uint8_t *p0 = quad0 + (size_t)gr * 4 * gb;
            float *o = out + (size_t)g0 * hd + gr * 32;
            const size_t qs = (size_t)4 * rb;
            if (nh == 4) av_group(p0, qs, n4, vb, wq, beta, mterm, o, hd, 4);
            else {
                int g = 0;
                if (nh >= 2) { av_group(p0, qs, n4, vb, wq, beta, mterm, o, hd, 2); g = 2; }
                if (nh & 1) av_group(p0, qs, n4, vb, wq + g, beta + g, mterm + g, o + (size_t)g * hd, hd, 1);
            }
        }
    }
    return true;
}

/* 8-bit values: rows gathered from their quads, dequantized to f32 in L1, then
 * the f32 kernel that keeps every head's accumulators in registers. */
T5V static void av_rows_f32(const uint8_t *codes, int t0, const kvq_f16 *ms, int n, int hd, int vb, int vg,
                            const float *w, int ldw, int nq, float *out) {
    if (vg != 32 || hd > 512) { av_rows_ref(codes, t0, ms, n, hd, vb, vg, w, ldw, nq, out); return; }
    const int ng = hd / 32, gb = kvq_code_bytes(32, vb), rb = ng * gb;
    const kvq_attn_kernels *ak = kvq_attn_kernels_isa(KVQ_ISA_AVX512);
    float buf[32 * 512];
    uint8_t row[512];
    for (int i0 = 0; i0 < n; i0 += 32) {
        const int m = n - i0 < 32 ? n - i0 : 32;
        for (int i = 0; i < m; i++) {
            kvq_vrow_get(codes, t0 + i0 + i, rb, row);
            const kvq_f16 *mm = ms + (size_t)(i0 + i) * 2 * ng;
            float *dst = buf + (size_t)i * hd;
            for (int gr = 0; gr < ng; gr++) {
                __m512 lo, hi;
                unpack32(row + gr * gb, vb, &lo, &hi);
                __m512 mn = _mm512_set1_ps(kvq_f16_to_f32(mm[2 * gr])), sc = _mm512_set1_ps(kvq_f16_to_f32(mm[2 * gr + 1]));
                _mm512_storeu_ps(dst + gr * 32, _mm512_fmadd_ps(sc, lo, mn));
                _mm512_storeu_ps(dst + gr * 32 + 16, _mm512_fmadd_ps(sc, hi, mn));
            }
        }
        ak->av_f32(buf, m, hd, w + i0, ldw, nq, out);
    }
}

T5V static void av_rows_avx512(const uint8_t *codes, int t0, const kvq_f16 *ms, int n, int hd, int vb, int vg,
                               const float *w, int ldw, int nq, float *out) {
    if (vg == 32 && hd <= 512 && vb <= 4 && (t0 & 3) + n <= 256 &&
        av_rows_vnni(codes, t0, ms, n, hd, vb, w, ldw, nq, out))
        return;
    av_rows_f32(codes, t0, ms, n, hd, vb, vg, w, ldw, nq, out);
}

static const kvq_kivi_kernels K_AVX512 = {qk_block_vnni, av_rows_avx512};

/* ------------------------------------------------------------------- AVX2 */
#define T2 __attribute__((target("avx2,fma,f16c")))
#define AI __attribute__((always_inline))

/* Tokens 16h .. 16h+15 of one channel's 32-token key row as two vectors of
 * 8 floats (4 bits: low nibbles are tokens 0-15; 2 bits: byte k holds tokens
 * k, k+8, k+16, k+24). KB and h are constants at every call. */
T2 static inline AI void half16(const uint8_t *p, const int KB, const int h, __m256 *a, __m256 *b) {
    __m256i x, y;
    if (KB == 8) {
        x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 16 * h)));
        y = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 16 * h + 8)));
    } else if (KB == 4) {
        const __m256i m = _mm256_set1_epi32(15);
        x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
        y = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
        x = _mm256_and_si256(h ? _mm256_srli_epi32(x, 4) : x, m);
        y = _mm256_and_si256(h ? _mm256_srli_epi32(y, 4) : y, m);
    } else {
        const __m256i m = _mm256_set1_epi32(3), z = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
        x = _mm256_and_si256(_mm256_srli_epi32(z, 4 * h), m);
        y = _mm256_and_si256(_mm256_srli_epi32(z, 4 * h + 2), m);
    }
    *a = _mm256_cvtepi32_ps(x);
    *b = _mm256_cvtepi32_ps(y);
}

/* NG (<= 6) queries against a block of 32 tokens, 16 at a time: 12
 * accumulators, 2 code vectors and a broadcast fit the 16 registers, and
 * constant NG and KB keep them there (a run-time count put them on the
 * stack). A query's sums run in the same order whatever its batch. */
T2 static inline AI void qk_ng(const uint8_t *codes, int cb, int hd, const int KB, const float *qs, const float *base,
                               const int NG, float *s, int lds) {
    for (int h = 0; h < 2; h++) {
        __m256 acc[12];
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) acc[2 * g] = acc[2 * g + 1] = _mm256_set1_ps(base[g]);
        for (int d = 0; d < hd; d++) {
            __m256 a, b;
            half16(codes + (size_t)d * cb, KB, h, &a, &b);
            kvq_fma2_ng(qs + d, (size_t)hd, NG, a, b, acc);
        }
#pragma GCC unroll 6
        for (int g = 0; g < NG; g++) {
            _mm256_storeu_ps(s + (size_t)g * lds + 16 * h, acc[2 * g]);
            _mm256_storeu_ps(s + (size_t)g * lds + 16 * h + 8, acc[2 * g + 1]);
        }
    }
}

#define QK_NG_CASES(KB)                                                                                               \
    switch (ng) {                                                                                                     \
    case 6: qk_ng(codes, cb, hd, KB, qs, base, 6, sg, lds); break;                                                    \
    case 5: qk_ng(codes, cb, hd, KB, qs, base, 5, sg, lds); break;                                                    \
    case 4: qk_ng(codes, cb, hd, KB, qs, base, 4, sg, lds); break;                                                    \
    case 3: qk_ng(codes, cb, hd, KB, qs, base, 3, sg, lds); break;                                                    \
    case 2: qk_ng(codes, cb, hd, KB, qs, base, 2, sg, lds); break;                                                    \
    default: qk_ng(codes, cb, hd, KB, qs, base, 1, sg, lds); break;                                                   \
    }

/* n fp16 values to f32 with F16C (the portable conversion costs more than
 * the multiply-adds it feeds) */
T2 static void f16_to_f32_n(const kvq_f16 *h, float *f, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) f[i] = _cvtsh_ss(h[i]);
}

T2 static void qk_block_avx2(const uint8_t *codes, const kvq_f16 *ms, int G, int hd, int kb, const float *q, int nq,
                             float *s, int lds) {
    if (G != 32 || hd > 1024 || (kb != 2 && kb != 4 && kb != 8)) {
        qk_block_ref(codes, ms, G, hd, kb, q, nq, s, lds);
        return;
    }
    if (kb == 4 && kvq_kivi_qk4_int_avx2(codes, ms, hd, q, nq, s, lds)) return; /* integer: kivi_int_avx2.c */
    const int cb = kvq_code_bytes(KVQ_KT, kb);
    float mn[1024], sc[1024], qs[6 * 1024];
    f16_to_f32_n(ms, mn, hd);
    f16_to_f32_n(ms + hd, sc, hd);
    for (int g0 = 0; g0 < nq; g0 += 6) {
        const int ng = nq - g0 < 6 ? nq - g0 : 6;
        float base[6];
        for (int g = 0; g < ng; g++) { /* per block and query: vectorized, it costs as much as a token's products */
            const float *qg = q + (size_t)(g0 + g) * hd;
            __m256 bv = _mm256_setzero_ps();
            int d = 0;
            for (; d + 8 <= hd; d += 8) {
                const __m256 x = _mm256_loadu_ps(qg + d);
                _mm256_storeu_ps(qs + (size_t)g * hd + d, _mm256_mul_ps(x, _mm256_loadu_ps(sc + d)));
                bv = _mm256_fmadd_ps(x, _mm256_loadu_ps(mn + d), bv);
            }
            float r[8];
            _mm256_storeu_ps(r, bv);
            base[g] = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for (; d < hd; d++) {
                qs[(size_t)g * hd + d] = qg[d] * sc[d];
                base[g] += qg[d] * mn[d];
            }
        }
        float *sg = s + (size_t)g0 * lds;
        if (kb == 4) {
            QK_NG_CASES(4)
        } else if (kb == 2) {
            QK_NG_CASES(2)
        } else {
            QK_NG_CASES(8)
        }
    }
}

/* The value codes of one group (32 channels) for the 4 tokens of a quad,
 * each token's bytes in one register (8 bits: two), out of the interleaved
 * rows (byte k of the 4 tokens side by side): a byte shuffle groups each
 * token's 4 bytes per 16-byte load, a dword transpose joins them. */
T2 static inline AI void quad_rows(const uint8_t *p, const int VB, __m128i t[8]) {
    const __m128i m = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    if (VB == 2) {
        const __m128i x0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), m);
        const __m128i x1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16)), m);
        const __m128i a = _mm_unpacklo_epi32(x0, x1), b = _mm_unpackhi_epi32(x0, x1);
        t[0] = a, t[1] = _mm_srli_si128(a, 8), t[2] = b, t[3] = _mm_srli_si128(b, 8);
        return;
    }
    for (int half = 0; half < (VB == 8 ? 2 : 1); half++) {
        __m128i x[4];
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) x[j] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 64 * half + 16 * j)), m);
        const __m128i a = _mm_unpacklo_epi32(x[0], x[1]), b = _mm_unpacklo_epi32(x[2], x[3]);
        const __m128i c = _mm_unpackhi_epi32(x[0], x[1]), d = _mm_unpackhi_epi32(x[2], x[3]);
        __m128i *o = t + 4 * half;
        o[0] = _mm_unpacklo_epi64(a, b), o[1] = _mm_unpackhi_epi64(a, b);
        o[2] = _mm_unpacklo_epi64(c, d), o[3] = _mm_unpackhi_epi64(c, d);
    }
}

/* one token's 32 codes of a group (in lo, and hi for 8 bits) as 4 vectors of 8 floats */
T2 static inline AI void unpack_reg(__m128i lo, __m128i hi, const int VB, __m256 v[4]) {
    __m256i x[4];
    if (VB == 8) {
        x[0] = _mm256_cvtepu8_epi32(lo), x[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
        x[2] = _mm256_cvtepu8_epi32(hi), x[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
    } else if (VB == 4) {
        const __m256i m = _mm256_set1_epi32(15);
        const __m256i a = _mm256_cvtepu8_epi32(lo), c = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
        x[0] = _mm256_and_si256(a, m), x[1] = _mm256_and_si256(c, m);
        x[2] = _mm256_srli_epi32(a, 4), x[3] = _mm256_srli_epi32(c, 4);
    } else {
        const __m256i m = _mm256_set1_epi32(3), a = _mm256_cvtepu8_epi32(lo);
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) x[k] = _mm256_and_si256(_mm256_srli_epi32(a, 2 * k), m);
    }
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++) v[k] = _mm256_cvtepi32_ps(x[k]);
}

/* NG (<= 2) queries over the whole quads [i0, i1) of one group: 8
 * accumulators in registers over all the tokens, each unpacked token
 * serving both queries; the minimums' share (sum of w * min) is added once. */
T2 static inline AI void av_quads_ng(const uint8_t *codes, int t0, const kvq_f16 *ms, int i0, int i1, int ng, int gr,
                                     int rb, const int VB, const float *w, int ldw, const int NG, float *out, int hd) {
    const int gb = 4 * VB;
    __m256 acc[8];
    float wm[2] = {0, 0};
    #pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) acc[4 * g + k] = _mm256_loadu_ps(out + (size_t)g * hd + 32 * gr + 8 * k);
    for (int i = i0; i < i1; i += 4) {
        __m128i t[8];
        quad_rows(codes + (size_t)((t0 + i) >> 2) * 4 * rb + 4 * (size_t)gr * gb, VB, t);
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const kvq_f16 *p = ms + ((size_t)(i + j) * ng + gr) * 2;
            const float mn = _cvtsh_ss(p[0]), sc = _cvtsh_ss(p[1]);
            __m256 v[4];
            unpack_reg(t[j], t[4 + j], VB, v);
            #pragma GCC unroll 4
            for (int g = 0; g < NG; g++) {
                const float wi = w[(size_t)g * ldw + i + j];
                const __m256 x = _mm256_set1_ps(wi * sc);
                #pragma GCC unroll 4
                for (int k = 0; k < 4; k++) acc[4 * g + k] = _mm256_fmadd_ps(x, v[k], acc[4 * g + k]);
                wm[g] += wi * mn;
            }
        }
    }
    #pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(out + (size_t)g * hd + 32 * gr + 8 * k, _mm256_add_ps(acc[4 * g + k], _mm256_set1_ps(wm[g])));
}

#define AV_CASES(VB)                                                                                                  \
    do {                                                                                                              \
        if (nq - g >= 2) av_quads_ng(codes, t0, ms, i0, i1, ng, gr, rb, VB, w + (size_t)g * ldw, ldw, 2, og, hd);    \
        else av_quads_ng(codes, t0, ms, i0, i1, ng, gr, rb, VB, w + (size_t)g * ldw, ldw, 1, og, hd);                 \
    } while (0)

/* Tokens outside whole quads of 4 go through the reference. */
T2 static void av_rows_avx2(const uint8_t *codes, int t0, const kvq_f16 *ms, int n, int hd, int vb, int vg,
                            const float *w, int ldw, int nq, float *out) {
    if (vg != 32 || hd > 1024 || (vb != 2 && vb != 4 && vb != 8)) {
        av_rows_ref(codes, t0, ms, n, hd, vb, vg, w, ldw, nq, out);
        return;
    }
    if (vb <= 4 && kvq_kivi_av_int_avx2(codes, t0, ms, n, hd, vb, w, ldw, nq, out)) return; /* kivi_int_avx2.c */
    const int ng = hd / 32, gb = kvq_code_bytes(32, vb), rb = ng * gb;
    int i0 = (4 - t0 % 4) % 4;
    if (i0 > n) i0 = n;
    const int i1 = i0 + (n - i0) / 4 * 4;
    if (i0 > 0) av_rows_ref(codes, t0, ms, i0, hd, vb, vg, w, ldw, nq, out);
    for (int gr = 0; gr < ng && i1 > i0; gr++)
        for (int g = 0; g < nq; g += 2) {
            float *og = out + (size_t)g * hd;
            if (vb == 4) AV_CASES(4);
            else if (vb == 2) AV_CASES(2);
            else AV_CASES(8);
        }
    if (i1 < n) av_rows_ref(codes, t0 + i1, ms + (size_t)i1 * ng * 2, n - i1, hd, vb, vg, w + i1, ldw, nq, out);
}

static const kvq_kivi_kernels K_AVX2 = {qk_block_avx2, av_rows_avx2};
#endif

const kvq_kivi_kernels *kvq_kivi_kernels_isa(int isa) {
#if defined(__x86_64__)
    static const void *const T[KVQ_ISA_COUNT] = {&K_REF, &K_AVX2, &K_AVX512};
#else
    static const void *const T[KVQ_ISA_COUNT] = {&K_REF};
#endif
    return kvq_isa_pick(isa, T);
}
