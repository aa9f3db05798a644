/* The hier codec's fused attention kernels on AVX-512 VNNI (hier_kernels.h
 * says what they compute; hier_kernels.c has the scalar reference and AVX2).
 *
 * Why a second x86 kernel: with pmaddubsw the target view needs three products
 * of 4-bit codes (16 U + L against a factor's high and low bytes), each
 * widened through int16, and on an AVX-512 host it took 3 times f16's time per
 * cached token. vpdpbusd multiplies unsigned by signed bytes straight into
 * int32, so the target view's 8-bit code c = 16 U + L can be formed in place
 * (two shifts and two bit selects per 64 bytes of each plane) and multiplied
 * whole:
 *   keys:   sum_d hi_d c_d (codes unsigned, query signed) and sum_d lo_d 16 U_d;
 *           128 * the first + the second = the reference's
 *           2048 hi U + 128 hi L + 16 lo U, exactly;
 *   values: the weights are the unsigned operand, so the codes must be signed:
 *           c - 128 (one xor), and sum_i wq_i c_i = sum_i wq_i (c_i - 128) +
 *           128 sum_i wq_i; the low parts multiply 16 U (unsigned) as signed.
 * The integer sums are the reference's and the AVX2 kernel's; queries and
 * weights are rounded as AVX2 rounds them (qint, wint below), and the float
 * steps after the sums are the same operations, so AVX-512 and AVX2 agree bit
 * for bit (test_quantspec; the scalar reference sums its floats in another
 * order).
 *
 * Keys: one 64-byte load holds two tiles (channels 16p..16p+15) of 8 tokens,
 * so lanes 0-7 and 8-15 carry the same tokens for different channels; the
 * query is laid out to match (qk_vectors) and the halves are added at the end
 * of a tile row. Values: a 64-byte load is 16 row bytes of a quad of 4 tokens
 * (32 channels: 16 in low nibbles, 16 in high); the 4 weights of the quad are
 * one broadcast dword. */
#include "hier_kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "../core/cpu.h"
#include "../kernels/simd_x86.h"
#include "hier_x86.h"

#if defined(__x86_64__)
#define T5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

enum { NGQ = 4, HD_MAX = 256 };

/* A query's int8 factors as the key loads see them: vector (2p + h) holds in
 * lanes 0-7 the 4 channels of tile 2p that nibble half h carries (dword
 * 4p + h of the query), in lanes 8-15 those of tile 2p + 1 (dword 4p + 2 + h). */
T5 static inline void qk_vectors(const int8_t *qi, int hd, int8_t *qv) {
    for (int p = 0; p < hd / 16; p++) {
        const __m512i z = _mm512_loadu_si512(qi + 64 * (p >> 2)); /* dwords 16 (p / 4) .. + 15 */
        const int d = 4 * (p & 3);
        for (int h = 0; h < 2; h++) {
            const __m512i idx = _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(d + h), _mm512_set1_epi32(d + 2 + h));
            _mm512_store_si512(qv + (size_t)(2 * p + h) * 64, _mm512_permutexvar_epi32(idx, z));
        }
    }
}

/* 16 int32 -> 16 bytes: the AVX2 kernels' saturating packs (to [0, 255] for
 * the unsigned factors, [-128, 127] for the signed ones), in one instruction. */
T5 static inline void store16_u8(uint8_t *p, __m512i v) {
    _mm_storeu_si128((__m128i *)p, _mm512_cvtusepi32_epi8(_mm512_max_epi32(v, _mm512_setzero_si512())));
}
T5 static inline void store16_i8(int8_t *p, __m512i v) { _mm_storeu_si128((__m128i *)p, _mm512_cvtsepi32_epi8(v)); }

/* The AVX2 kernel's rounding of queries (kvq_hier_qint_avx2) 16 channels at a
 * time: the same operations on each element, and the minimums' share summed
 * 8 lanes wide in the same order, so the results are the same bits (for
 * finite inputs). It and wint below were half of the kernels' time at 8
 * lanes. hd % 16 == 0. */
T5 static void qint(bool tg, const float *q, int ng, int hd, const float *mn, const float *sc, int8_t *qh, int8_t *ql,
                    int ldq, float *al, float *bs) {
    const __m512 absm = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int g = 0; g < ng; g++) {
        const float *qg = q + (size_t)g * hd;
        __m512 vm = _mm512_setzero_ps();
        __m256 vb = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 16) {
            const __m512 x = _mm512_loadu_ps(qg + d), m = _mm512_loadu_ps(mn + d);
            vm = _mm512_max_ps(vm, _mm512_and_ps(absm, _mm512_mul_ps(x, _mm512_loadu_ps(sc + d))));
            vb = _mm256_fmadd_ps(_mm512_castps512_ps256(x), _mm512_castps512_ps256(m), vb);
            vb = _mm256_fmadd_ps(_mm512_extractf32x8_ps(x, 1), _mm512_extractf32x8_ps(m, 1), vb);
        }
        const float amax = _mm512_reduce_max_ps(vm);
        const __m512 inv = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
        for (int d = 0; d < hd; d += 16) {
            const __m512 x = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(qg + d), _mm512_loadu_ps(sc + d)), inv);
            const __m512i h = _mm512_cvtps_epi32(x);
            store16_i8(qh + (size_t)g * ldq + d, h);
            if (tg)
                store16_i8(ql + (size_t)g * ldq + d,
                           _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(x, _mm512_cvtepi32_ps(h)), _mm512_set1_ps(128.0f))));
        }
        al[g] = amax / 127.0f / (tg ? 128.0f : 1.0f);
        bs[g] = kvq_hsum8(vb);
    }
}

/* The AVX2 kernel's rounding of one query's weights over a pass
 * (kvq_hier_wint_avx2), 16 at a time, likewise; *W gets the sum of the 8-bit
 * weights over the pass's 4 * nquad bytes. */
T5 static void wint(bool tg, const float *w, const float *mn, const float *sc, int np, int off, int nquad, uint8_t *wq,
                    int8_t *wl, float *beta, float *mt, int32_t *W) {
    __m512 vx = _mm512_setzero_ps();
    __m256 vm = _mm256_setzero_ps();
    float mx = 0, ms = 0;
    int k = 0;
    for (; k + 16 <= np; k += 16) {
        const __m512 x = _mm512_loadu_ps(w + k), m = _mm512_loadu_ps(mn + k);
        vx = _mm512_max_ps(vx, _mm512_mul_ps(x, _mm512_loadu_ps(sc + k)));
        vm = _mm256_fmadd_ps(_mm512_castps512_ps256(x), _mm512_castps512_ps256(m), vm);
        vm = _mm256_fmadd_ps(_mm512_extractf32x8_ps(x, 1), _mm512_extractf32x8_ps(m, 1), vm);
    }
    if (k + 8 <= np) {
        const __m256 x = _mm256_loadu_ps(w + k);
        vx = _mm512_max_ps(vx, _mm512_zextps256_ps512(_mm256_mul_ps(x, _mm256_loadu_ps(sc + k))));
        vm = _mm256_fmadd_ps(x, _mm256_loadu_ps(mn + k), vm);
        k += 8;
    }
    for (int j = k; j < np; j++) {
        const float x = w[j] * sc[j];
        mx = x > mx ? x : mx;
        ms += w[j] * mn[j];
    }
    const float r = _mm512_reduce_max_ps(vx), wmax = r > mx ? r : mx;
    *mt = ms + kvq_hsum8(vm);
    const float inv = wmax > 0 ? 255.0f / wmax : 0.0f;
    memset(wq, 0, (size_t)(4 * nquad));
    if (tg) memset(wl, 0, (size_t)(4 * nquad));
    uint8_t *q = wq + off;
    int8_t *l = tg ? wl + off : NULL;
    k = 0;
    for (; k + 16 <= np; k += 16) {
        const __m512 y = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(sc + k)), _mm512_set1_ps(inv));
        const __m512i h = _mm512_cvtps_epi32(y);
        store16_u8(q + k, h);
        if (l) store16_i8(l + k, _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(y, _mm512_cvtepi32_ps(h)), _mm512_set1_ps(128.0f))));
    }
    for (; k < np; k++) {
        const float y = w[k] * sc[k] * inv, rr = rintf(y);
        q[k] = (uint8_t)(rr >= 0 && rr <= 255 ? rr : rr > 255 ? 255 : 0);
        if (l) {
            const float e = rintf((y - rr) * 128.0f);
            l[k] = (int8_t)(e >= -64 && e <= 64 ? e : 0);
        }
    }
    *beta = wmax / 255.0f / (tg ? 128.0f : 1.0f);
    __m512i acc = _mm512_setzero_si512(); /* W: the byte sum, 64 bytes at a time */
    for (int i = 0; i < 4 * nquad; i += 64) {
        const int rem = 4 * nquad - i;
        const __m512i b = _mm512_maskz_loadu_epi8(rem >= 64 ? ~0ull : (1ull << rem) - 1, wq + i);
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(b, _mm512_setzero_si512()));
    }
    *W = (int32_t)_mm512_reduce_add_epi64(acc);
}

/* Bitwise c ? a : b (vpternlog's table for a, b, c). */
#define SEL 0xE4

/* The partial integer sums of NQ (1 or 2) queries over the NP tile pairs
 * from pair p0, for every tile row of a block: part[o * NQ + g] (16 lanes:
 * token t's sum over tile 2p in lane t, over tile 2p + 1 in lane t + 8) is set
 * by the first pass (p0 = 0), else added to. pf: this pass is the block's
 * first read (the first pass of the first queries), which prefetches ahead.
 *
 * The query factors stay in registers for the whole block, and each code
 * vector is unpacked once for the pass's queries. On this core (Zen 5)
 * 512-bit integer operations issue at about two per cycle whatever they are,
 * so the target view's unpacking (6 operations per 128 bytes of codes) costs
 * as much as its products unless two queries share it; a first version that
 * loaded every factor as a memory operand was no faster, the same operations
 * with a chain per tile pair were 3% slower (same-process A/B). */
T5 static inline __attribute__((always_inline)) void qk_pass(const uint8_t *up, const uint8_t *lo, const bool LO, int G,
                                                             int hd, int p0, const int NP, const int8_t *vh,
                                                             const int8_t *vl, int ldv, const int NQ, bool pf,
                                                             __m512i *part) {
    const size_t row = (size_t)hd * 4; /* a tile row: hd / 8 tiles of 32 bytes */
    const __m512i m15 = _mm512_set1_epi8(15), mf0 = _mm512_set1_epi8((char)0xf0);
    __m512i fh[2][8], fl[2][8]; /* fl: 4 used (the target view passes 2 pairs) */
#pragma GCC unroll 2
    for (int g = 0; g < NQ; g++)
#pragma GCC unroll 8
        for (int i = 0; i < 2 * NP; i++) {
            fh[g][i] = _mm512_load_si512(vh + (size_t)g * ldv + (size_t)(2 * p0 + i) * 64);
            if (LO) fl[g][i] = _mm512_load_si512(vl + (size_t)g * ldv + (size_t)(2 * p0 + i) * 64);
        }
    for (int o = 0; o < G >> 3; o++) {
        const uint8_t *pu = up + (size_t)o * row + 64 * (size_t)p0, *pl = LO ? lo + (size_t)o * row + 64 * (size_t)p0 : NULL;
        if (pf) /* the whole row 4 rows ahead (the later passes read the rest of it) */
            for (size_t b = 0; b < row; b += 64) {
                __builtin_prefetch(pu + 4 * row + b);
                if (LO) __builtin_prefetch(pl + 4 * row + b);
            }
        __m512i a[2], b[2];
#pragma GCC unroll 2
        for (int g = 0; g < NQ; g++) a[g] = b[g] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int p = 0; p < NP; p++) {
            const __m512i x = _mm512_loadu_si512(pu + 64 * p);
            if (LO) {
                const __m512i y = _mm512_loadu_si512(pl + 64 * p), xs = _mm512_slli_epi16(x, 4);
                const __m512i cl = _mm512_ternarylogic_epi32(xs, y, mf0, SEL);
                const __m512i ch = _mm512_ternarylogic_epi32(x, _mm512_srli_epi16(y, 4), mf0, SEL);
                const __m512i ul = _mm512_and_si512(xs, mf0), uh = _mm512_and_si512(x, mf0);
#pragma GCC unroll 2
                for (int g = 0; g < NQ; g++) {
                    a[g] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(a[g], cl, fh[g][2 * p]), ch, fh[g][2 * p + 1]);
                    b[g] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(b[g], ul, fl[g][2 * p]), uh, fl[g][2 * p + 1]);
                }
            } else {
                const __m512i xl = _mm512_and_si512(x, m15), xh = _mm512_and_si512(_mm512_srli_epi16(x, 4), m15);
#pragma GCC unroll 2
                for (int g = 0; g < NQ; g++)
                    a[g] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(a[g], xl, fh[g][2 * p]), xh, fh[g][2 * p + 1]);
            }
        }
#pragma GCC unroll 2
        for (int g = 0; g < NQ; g++) {
            __m512i t = a[g];
            if (LO) t = _mm512_add_epi32(_mm512_slli_epi32(t, 7), b[g]);
            __m512i *d = part + (size_t)o * NQ + g;
            *d = p0 == 0 ? t : _mm512_add_epi32(*d, t);
        }
    }
}

/* Scores of NQ queries for one block: passes over the tile pairs (4 at a
 * time for the draft view, 16 factor registers for its two queries; 2 for
 * the target view, whose queries have a high and a low factor), then each
 * tile row's two halves added. pf: the block is read from memory (the call's
 * first queries), so the first pass prefetches. */
T5 static inline __attribute__((always_inline)) void qk_rows(const uint8_t *up, const uint8_t *lo, const bool LO, int G,
                                                             int hd, const int8_t *vh, const int8_t *vl, int ldv,
                                                             const float *al, const float *bs, const int NQ, bool pf,
                                                             float *s, int lds) {
    _Alignas(64) __m512i part[2 * 256 / 8];
    const int np = hd >> 4, PP = LO ? 2 : 4;
    for (int p0 = 0; p0 < np; p0 += PP) {
        const bool fp = pf && p0 == 0;
        switch (np - p0 < PP ? np - p0 : PP) {
        case 4: qk_pass(up, lo, LO, G, hd, p0, 4, vh, vl, ldv, NQ, fp, part); break;
        case 3: qk_pass(up, lo, LO, G, hd, p0, 3, vh, vl, ldv, NQ, fp, part); break;
        case 2: qk_pass(up, lo, LO, G, hd, p0, 2, vh, vl, ldv, NQ, fp, part); break;
        default: qk_pass(up, lo, LO, G, hd, p0, 1, vh, vl, ldv, NQ, fp, part); break;
        }
    }
    for (int o = 0; o < G >> 3; o++)
#pragma GCC unroll 2
        for (int g = 0; g < NQ; g++) {
            const __m512i t = part[(size_t)o * NQ + g];
            const __m256i f = _mm256_add_epi32(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
            _mm256_storeu_ps(s + (size_t)g * lds + 8 * o,
                             _mm256_fmadd_ps(_mm256_set1_ps(al[g]), _mm256_cvtepi32_ps(f), _mm256_set1_ps(bs[g])));
        }
}

T5 static void qk_avx512(const uint8_t *up, const uint8_t *lo, const kvq_f16 *ms, int G, int hd, const float *q,
                         int nq, float *s, int lds) {
    if (G % 8 || G > 256 || hd % 16 || hd > HD_MAX) {
        kvq_hier_kernels_isa(KVQ_ISA_AVX2)->qk(up, lo, ms, G, hd, q, nq, s, lds);
        return;
    }
    const bool tg = lo != NULL;
    const int ldv = 8 * hd; /* hd / 16 tile pairs, 2 nibble halves, 64 bytes */
    _Alignas(64) float mn[HD_MAX], sc[HD_MAX];
    _Alignas(64) int8_t qh[NGQ * HD_MAX], ql[NGQ * HD_MAX], vh[NGQ * 8 * HD_MAX], vl[NGQ * 8 * HD_MAX];
    float al[NGQ], bs[NGQ];
    kvq_hier_kms_avx2(tg, ms, hd, mn, sc);
    for (int g0 = 0; g0 < nq; g0 += NGQ) {
        const int ng = nq - g0 < NGQ ? nq - g0 : NGQ;
        qint(tg, q + (size_t)g0 * hd, ng, hd, mn, sc, qh, ql, HD_MAX, al, bs);
        for (int g = 0; g < ng; g++) {
            qk_vectors(qh + (size_t)g * HD_MAX, hd, vh + (size_t)g * ldv);
            if (tg) qk_vectors(ql + (size_t)g * HD_MAX, hd, vl + (size_t)g * ldv);
        }
        for (int g = 0; g < ng; g += 2) { /* two queries per pass, the last one alone */
            const int8_t *h = vh + (size_t)g * ldv, *l = vl + (size_t)g * ldv;
            float *sg = s + (size_t)(g0 + g) * lds;
            const bool pf = g0 + g == 0; /* later queries find the block in cache */
            if (tg && g + 1 < ng) qk_rows(up, lo, true, G, hd, h, l, ldv, al + g, bs + g, 2, pf, sg, lds);
            else if (tg) qk_rows(up, lo, true, G, hd, h, l, ldv, al + g, bs + g, 1, pf, sg, lds);
            else if (g + 1 < ng) qk_rows(up, NULL, false, G, hd, h, NULL, ldv, al + g, bs + g, 2, pf, sg, lds);
            else qk_rows(up, NULL, false, G, hd, h, NULL, ldv, al + g, bs + g, 1, pf, sg, lds);
        }
    }
}

/* Values of NG queries over nquad quads for CN columns of 16 row bytes from
 * byte offset cb of each quad: lo[g*CN + j] gets the integer sums of the
 * columns' low-nibble channels, hi[...] of their high-nibble ones. W[g] is the
 * sum of query g's 8-bit weights (the target view's offset 128 comes back
 * through it). */
T5 static inline __attribute__((always_inline)) void av_cols(const uint8_t *qu, const uint8_t *ql, const bool LO,
                                                             size_t qstride, size_t cb, int nquad, const uint8_t *wq,
                                                             const int8_t *wl, int ldq, const int32_t *W, const int NG,
                                                             const int CN, __m512i *lo, __m512i *hi) {
    const __m512i m15 = _mm512_set1_epi8(15), mf0 = _mm512_set1_epi8((char)0xf0), m80 = _mm512_set1_epi8((char)0x80);
    __m512i aL[2 * NGQ], aH[2 * NGQ], cL[NGQ], cH[NGQ];
#pragma GCC unroll 8
    for (int i = 0; i < NG * CN; i++) aL[i] = aH[i] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++) cL[g] = cH[g] = _mm512_setzero_si512();
    for (int e = 0; e < nquad; e++) {
        const uint8_t *pu = qu + (size_t)e * qstride + cb;
        __builtin_prefetch(pu + 8 * qstride);
        if (LO) __builtin_prefetch(ql + (size_t)(e + 8) * qstride + cb);
#pragma GCC unroll 2
        for (int j = 0; j < CN; j++) {
            const __m512i x = _mm512_loadu_si512(pu + 64 * j);
            if (LO) {
                const __m512i y = _mm512_loadu_si512(ql + (size_t)e * qstride + cb + 64 * j), xs = _mm512_slli_epi16(x, 4);
                const __m512i cl = _mm512_xor_si512(_mm512_ternarylogic_epi32(xs, y, mf0, SEL), m80);
                const __m512i ch = _mm512_xor_si512(_mm512_ternarylogic_epi32(x, _mm512_srli_epi16(y, 4), mf0, SEL), m80);
                const __m512i ul = _mm512_and_si512(xs, mf0), uh = _mm512_and_si512(x, mf0);
#pragma GCC unroll 4
                for (int g = 0; g < NG; g++) {
                    int32_t a, b;
                    memcpy(&a, wq + (size_t)g * ldq + 4 * (size_t)e, 4);
                    memcpy(&b, wl + (size_t)g * ldq + 4 * (size_t)e, 4);
                    const __m512i w = _mm512_set1_epi32(a), l = _mm512_set1_epi32(b);
                    aL[g * CN + j] = _mm512_dpbusd_epi32(aL[g * CN + j], w, cl);
                    aH[g * CN + j] = _mm512_dpbusd_epi32(aH[g * CN + j], w, ch);
                    cL[g] = _mm512_dpbusd_epi32(cL[g], ul, l);
                    cH[g] = _mm512_dpbusd_epi32(cH[g], uh, l);
                }
            } else {
                const __m512i xl = _mm512_and_si512(x, m15), xh = _mm512_and_si512(_mm512_srli_epi16(x, 4), m15);
#pragma GCC unroll 4
                for (int g = 0; g < NG; g++) {
                    int32_t a;
                    memcpy(&a, wq + (size_t)g * ldq + 4 * (size_t)e, 4);
                    const __m512i w = _mm512_set1_epi32(a);
                    aL[g * CN + j] = _mm512_dpbusd_epi32(aL[g * CN + j], w, xl);
                    aH[g * CN + j] = _mm512_dpbusd_epi32(aH[g * CN + j], w, xh);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
#pragma GCC unroll 2
        for (int j = 0; j < CN; j++) {
            __m512i l = aL[g * CN + j], h = aH[g * CN + j];
            if (LO) { /* CN is 1 for the target view: cL, cH belong to this column */
                const __m512i off = _mm512_set1_epi32(16384 * W[g]);
                l = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(l, 7), off), cL[g]);
                h = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(h, 7), off), cH[g]);
            }
            lo[g * CN + j] = l;
            hi[g * CN + j] = h;
        }
}

T5 static void av_avx512(const uint8_t *up, const uint8_t *lo, int t0, const kvq_f16 *ms, int n, int hd, int vg,
                         const float *w, int ldw, int nq, float *out) {
    const int ng = hd / vg, gb = vg / 2, rb = hd / 2;
    if (gb % 16 || hd > 1024) {
        kvq_hier_kernels_isa(KVQ_ISA_AVX2)->av(up, lo, t0, ms, n, hd, vg, w, ldw, nq, out);
        return;
    }
    enum { LDQ = KVQ_HIER_AV_PASS + 8 };
    _Alignas(64) float mn[KVQ_HIER_AV_PASS], sc[KVQ_HIER_AV_PASS];
    _Alignas(64) uint8_t wq[NGQ * LDQ];
    _Alignas(64) int8_t wl[NGQ * LDQ];
    const bool tg = lo != NULL;
    const int CN = !tg && gb % 32 == 0 ? 2 : 1; /* the draft view has registers for two columns */
    const size_t qstride = 4 * (size_t)rb;
    for (int p0 = 0; p0 < n; p0 += KVQ_HIER_AV_PASS) {
        const int np = n - p0 < KVQ_HIER_AV_PASS ? n - p0 : KVQ_HIER_AV_PASS, ta = t0 + p0, off = ta & 3;
        const int nquad = (off + np + 3) >> 2;
        const uint8_t *qu = up + (size_t)(ta >> 2) * qstride, *qlo = lo ? lo + (size_t)(ta >> 2) * qstride : NULL;
        for (int gr = 0; gr < ng; gr++) {
            kvq_hier_vms_avx2(tg, ms + (size_t)p0 * ng * 2, np, ng, gr, mn, sc);
            for (int g0 = 0; g0 < nq; g0 += NGQ) {
                const int nb = nq - g0 < NGQ ? nq - g0 : NGQ;
                float beta[NGQ], mt[NGQ];
                int32_t W[NGQ];
                for (int g = 0; g < nb; g++)
                    wint(tg, w + (size_t)(g0 + g) * ldw + p0, mn, sc, np, off, nquad, wq + (size_t)g * LDQ,
                         tg ? wl + (size_t)g * LDQ : NULL, &beta[g], &mt[g], &W[g]);
                for (int k = 0; k < gb; k += 16 * CN) {
                    const size_t cb = 4 * (size_t)(gr * gb + k);
                    __m512i sl[2 * NGQ], sh[2 * NGQ];
#define AV_CASE(N)                                                                                                    \
    if (tg) av_cols(qu, qlo, true, qstride, cb, nquad, wq, wl, LDQ, W, N, 1, sl, sh);                                 \
    else if (CN == 2) av_cols(qu, NULL, false, qstride, cb, nquad, wq, NULL, LDQ, W, N, 2, sl, sh);                    \
    else av_cols(qu, NULL, false, qstride, cb, nquad, wq, NULL, LDQ, W, N, 1, sl, sh);
                    switch (nb) {
                    case 4: AV_CASE(4) break;
                    case 3: AV_CASE(3) break;
                    case 2: AV_CASE(2) break;
                    default: AV_CASE(1) break;
                    }
#undef AV_CASE
                    for (int g = 0; g < nb; g++) {
                        float *o = out + (size_t)(g0 + g) * hd + (size_t)gr * vg + k;
                        const __m512 be = _mm512_set1_ps(beta[g]), m16 = _mm512_set1_ps(mt[g]);
                        for (int j = 0; j < CN; j++) {
                            float *ol = o + 16 * j, *oh = o + gb + 16 * j;
                            _mm512_storeu_ps(ol, _mm512_add_ps(_mm512_loadu_ps(ol),
                                                               _mm512_fmadd_ps(be, _mm512_cvtepi32_ps(sl[g * CN + j]), m16)));
                            _mm512_storeu_ps(oh, _mm512_add_ps(_mm512_loadu_ps(oh),
                                                               _mm512_fmadd_ps(be, _mm512_cvtepi32_ps(sh[g * CN + j]), m16)));
                        }
                    }
                }
            }
        }
    }
}

const kvq_hier_kernels kvq_hier_k_avx512 = {qk_avx512, av_avx512};
#endif
