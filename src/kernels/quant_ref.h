/* Scalar reference kernels: the oracle every SIMD path is tested against. */
#ifndef KVQ_KERNELS_QUANT_REF_H
#define KVQ_KERNELS_QUANT_REF_H
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

#endif
