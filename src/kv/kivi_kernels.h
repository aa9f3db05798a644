/* Fused dequantize-dot kernels for the KIVI codec, scalar reference + SIMD.
 * Keys: one block = G tokens; per channel d a (min, scale) pair and G packed
 * codes (kvquant.h layout), channel-major:
 *     codes[d * code_bytes(G, kb)], ms[d] = min, ms[hd + d] = scale
 * (minimums then scales, so SIMD converts 16 channels at a time).
 * The SIMD paths cover G = 32 and value groups of 32; others use the reference.
 * Values: per token, groups of vg channels; per group (min, scale) and packed
 * codes: codes[token * hd*vb/8 + group * code_bytes(vg, vb)]. */
#ifndef KVQ_KV_KIVI_KERNELS_H
#define KVQ_KV_KIVI_KERNELS_H
#include <stdint.h>
#include "../core/fp16.h"

typedef struct kvq_kivi_kernels {
    /* s[g*lds + j] = q_g . k_hat(token j of the block), j < G (G tokens per block) */
    void (*qk_block)(const uint8_t *codes, const kvq_f16 *ms, int G, int hd, int kb, const float *q, int nq, float *s,
                     int lds);
    /* out[g*hd + d] += sum_{i<n} w[g*ldw + i] * v_hat(token i)[d] */
    void (*av_rows)(const uint8_t *codes, const kvq_f16 *ms, int n, int hd, int vb, int vg, const float *w, int ldw,
                    int nq, float *out);
} kvq_kivi_kernels;

const kvq_kivi_kernels *kvq_kivi_kernels_isa(int isa);

#endif
