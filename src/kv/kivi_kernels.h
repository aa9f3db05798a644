/* Fused dequantize-dot kernels for the KIVI codec, scalar reference + SIMD.
 * Keys: one block = G tokens; per channel d a (min, scale) pair and G packed
 * codes (kvquant.h layout), channel-major:
 *     codes[d * code_bytes(G, kb)], ms[d] = min, ms[hd + d] = scale
 * (minimums then scales, so SIMD converts 16 channels at a time).
 * The SIMD paths cover G = 32 and value groups of 32; others use the reference.
 * Values: per token, groups of vg channels; per group (min, scale) and packed
 * codes. A token's row of rb = hd*vb/8 code bytes is stored interleaved in
 * quads of 4 tokens (kvq_vrow_byte): byte k of token t sits at
 *     codes[(t/4)*4*rb + 4*k + t%4]
 * so that the codes of one channel for 4 consecutive tokens form one 32-bit
 * lane, which is what VNNI's dpbusd multiplies with 4 attention weights. */
#ifndef KVQ_KV_KIVI_KERNELS_H
#define KVQ_KV_KIVI_KERNELS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/fp16.h"

typedef struct kvq_kivi_kernels {
    /* s[g*lds + j] = q_g . k_hat(token j of the block), j < G (G tokens per block) */
    void (*qk_block)(const uint8_t *codes, const kvq_f16 *ms, int G, int hd, int kb, const float *q, int nq, float *s,
                     int lds);
    /* out[g*hd + d] += sum_{i<n} w[g*ldw + i] * v_hat(token t0+i)[d]; codes is
     * the head's quad 0 (any t0), ms points at token t0's (min, scale) pairs */
    void (*av_rows)(const uint8_t *codes, int t0, const kvq_f16 *ms, int n, int hd, int vb, int vg, const float *w,
                    int ldw, int nq, float *out);
} kvq_kivi_kernels;

const kvq_kivi_kernels *kvq_kivi_kernels_isa(int isa);

/* The AVX2 kernels' integer paths (kivi_int_avx2.c): 4-bit key blocks of 32
 * tokens, and 2- or 4-bit value groups of 32 channels over at most 256 slots
 * from t0's quad; false when they do not apply (the f32 kernels then run). */
bool kvq_kivi_qk4_int_avx2(const uint8_t *codes, const kvq_f16 *ms, int hd, const float *q, int nq, float *s, int lds);
bool kvq_kivi_av_int_avx2(const uint8_t *codes, int t0, const kvq_f16 *ms, int n, int hd, int vb, const float *w,
                          int ldw, int nq, float *out);

/* Offset of code byte k of token t's value row (rb bytes per row) in the quad layout. */
static inline size_t kvq_vrow_byte(int t, int k, int rb) {
    return (size_t)(t >> 2) * 4 * (size_t)rb + 4 * (size_t)k + (size_t)(t & 3);
}
static inline void kvq_vrow_get(const uint8_t *codes, int t, int rb, uint8_t *row) {
    for (int k = 0; k < rb; k++) row[k] = codes[kvq_vrow_byte(t, k, rb)];
}
static inline void kvq_vrow_put(uint8_t *codes, int t, int rb, const uint8_t *row) {
    for (int k = 0; k < rb; k++) codes[kvq_vrow_byte(t, k, rb)] = row[k];
}

#endif
