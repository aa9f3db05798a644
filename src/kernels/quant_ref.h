/* Scalar reference kernels: the oracle every SIMD path is tested against. */
#ifndef KVQ_KERNELS_QUANT_REF_H
#define KVQ_KERNELS_QUANT_REF_H
#include <math.h>
#include <string.h>
#include "types.h"

static inline int kvq_iround(float f) { return (int)lrintf(f); }
static inline int kvq_clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* IQ4_NL's and IQ4_XS's 16 grid values (an int8 code book fitted by ggml's
 * authors to Gaussian-like weights; part of the file format). */
extern const int8_t kvq_iq4nl_grid[16];

#define KVQ_DECL_REF(T)                                                     \
    void kvq_##T##_to_float_ref(const void *src, float *dst, int64_t n);    \
    void kvq_##T##_from_float_ref(const float *src, void *dst, int64_t n);  \
    float kvq_##T##_vec_dot_ref(const void *w, const void *x, int64_t n);

KVQ_DECL_REF(f32)
KVQ_DECL_REF(f16)
KVQ_DECL_REF(bf16)
KVQ_DECL_REF(q8_0)
KVQ_DECL_REF(q8_1)
KVQ_DECL_REF(q4_0)
KVQ_DECL_REF(q4_1)
KVQ_DECL_REF(q4_K)
KVQ_DECL_REF(q5_K)
KVQ_DECL_REF(q6_K)
KVQ_DECL_REF(q8_K)
KVQ_DECL_REF(q5_0)
KVQ_DECL_REF(q5_1)
KVQ_DECL_REF(iq4_nl)
KVQ_DECL_REF(iq4_xs)
KVQ_DECL_REF(q2_K)
KVQ_DECL_REF(q3_K)

/* Codes into a Q2_K block (0..3) or a Q3_K block (-4..3), value i of the
 * super-block at i; scales and factors untouched (GPTQ writes its own codes
 * into blocks whose scales the type's fit chose). */
void kvq_q2_K_put_codes(kvq_block_q2_K *b, const uint8_t L[KVQ_QK_K]);
void kvq_q3_K_put_codes(kvq_block_q3_K *b, const int8_t q[KVQ_QK_K]);

/* The 5-bit code (0..31) of value i of a Q5_0/Q5_1 block. */
static inline int kvq_q5_code(const uint8_t qs[16], const uint8_t qh[4], int i) {
    uint32_t h;
    memcpy(&h, qh, 4);
    int lo = i < 16 ? qs[i] & 0xF : qs[i - 16] >> 4;
    return lo | (int)(((h >> i) & 1u) << 4);
}

/* The 6-bit scale (0..63, offset 32) of sub-block ib of an IQ4_XS block. */
static inline int kvq_iq4_xs_ls(const kvq_block_iq4_xs *x, int ib) {
    return ((x->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((x->scales_h >> (2 * ib)) & 3) << 4);
}

/* The 16 signed 6-bit scales (-32..31) of a Q3_K block: low 4 bits in bytes
 * 0-7 (low nibbles for sub-blocks 0-7, high nibbles for 8-15), high 2 bits in
 * bytes 8-11 (sub-block s at byte 8 + s % 4, bits 2 (s / 4)). */
static inline void kvq_q3_K_scales(const uint8_t *p, int8_t sc[16]) {
    /* four scales per 32-bit word: sub-blocks 4m..4m+3 in word m */
    uint32_t w0, w1, w2, o[4];
    memcpy(&w0, p, 4);
    memcpy(&w1, p + 4, 4);
    memcpy(&w2, p + 8, 4);
    o[0] = (w0 & 0x0f0f0f0fu) | ((w2 & 0x03030303u) << 4);
    o[1] = (w1 & 0x0f0f0f0fu) | (((w2 >> 2) & 0x03030303u) << 4);
    o[2] = ((w0 >> 4) & 0x0f0f0f0fu) | (((w2 >> 4) & 0x03030303u) << 4);
    o[3] = ((w1 >> 4) & 0x0f0f0f0fu) | (((w2 >> 6) & 0x03030303u) << 4);
    uint8_t u[16];
    memcpy(u, o, 16);
    for (int s = 0; s < 16; s++) sc[s] = (int8_t)(u[s] - 32);
}

/* 32 values to int8 with a float scale d = amax / 127 (the activations of
 * kvq's int8 prefill GEMM and Q4_0 decode kernel: Q8_0's arithmetic without
 * rounding d to fp16). */
void kvq_quant32_ref(const float *x, int8_t q[32], float *d);

/* Six-bit scale/min pair j of a q4_K/q5_K block. */
static inline void kvq_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* The 8 six-bit scales and 8 minimums of a Q4_K/Q5_K block, all at once:
 * bytes 0-3 and 4-7 hold scales/mins 0-3 in their low 6 bits and the top 2
 * bits of scales/mins 4-7; bytes 8-11 hold the low 4 bits of scales 4-7
 * (low nibble) and mins 4-7 (high nibble). Word-wide, instead of 16 scalar
 * extractions per block. */
static inline void kvq_k4_scales_mins(const uint8_t *q, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t w0, w1, w2, o[4];
    memcpy(&w0, q, 4);
    memcpy(&w1, q + 4, 4);
    memcpy(&w2, q + 8, 4);
    o[0] = w0 & 0x3f3f3f3fu;
    o[1] = (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4);
    o[2] = w1 & 0x3f3f3f3fu;
    o[3] = ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4);
    memcpy(sc, o, 8);
    memcpy(mn, o + 2, 8);
}

#endif
