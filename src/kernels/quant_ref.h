/* Scalar reference kernels: the oracle every SIMD path is tested against. */
#ifndef KVQ_KERNELS_QUANT_REF_H
#define KVQ_KERNELS_QUANT_REF_H
#include <string.h>
#include "types.h"

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
