/* Fused attention kernels of the hier codec (QuantSpec), scalar reference + AVX2.
 *
 * Both read the two 4-bit planes in place, in KIVI's layout (kvquant.h,
 * kivi_kernels.h): no 8-bit copy is ever built. lower == NULL is the draft
 * view (m + s4 U); otherwise the target view m8 + s8 (16 U + L), with
 * (m8, s8) derived from the stored (m, s4) by kvq_hier_target_ms.
 *
 * Keys: a block of G tokens, channel-major: channel d's G codes at
 * plane + d * G/2, ms[d] = m, ms[hd + d] = s4.
 * Values: per token, groups of vg channels; rows of hd/2 bytes interleaved in
 * quads of 4 tokens (kvq_vrow_byte); ms = (m, s4) per group, token after token. */
#ifndef KVQ_KV_HIER_KERNELS_H
#define KVQ_KV_HIER_KERNELS_H
#include <stdbool.h>
#include <stdint.h>
#include "../core/fp16.h"

typedef struct kvq_hier_kernels {
    /* s[g*lds + j] = q_g . k_hat(token j of the block), j < G */
    void (*qk)(const uint8_t *upper, const uint8_t *lower, const kvq_f16 *ms, int G, int hd, const float *q, int nq,
               float *s, int lds);
    /* out[g*hd + c] += sum_{i<n} w[g*ldw + i] * v_hat(token t0+i)[c]; upper/lower point at the head's
     * quad 0, ms at token t0's pairs */
    void (*av)(const uint8_t *upper, const uint8_t *lower, int t0, const kvq_f16 *ms, int n, int hd, int vg,
               const float *w, int ldw, int nq, float *out);
} kvq_hier_kernels;

const kvq_hier_kernels *kvq_hier_kernels_isa(int isa);

/* The target grid's (m8, s8) from a stored (m, s4): half a coarse step below m, 16x finer. */
static inline void kvq_hier_target_ms(kvq_f16 m, kvq_f16 s4, kvq_f16 *m8, kvq_f16 *s8) {
    const float fm = kvq_f16_to_f32(m), fs = kvq_f16_to_f32(s4);
    *m8 = kvq_f32_to_f16(fm - 0.5f * fs);
    *s8 = kvq_f32_to_f16(fs / 16.0f);
    if (*s8 == 0) *s8 = 0x0001;
}

/* The (minimum, step) a view reads for a stored (m, s4): the draft view's as
 * stored, the target view's (m8, s8); a value is then mn + sc * code, with
 * code = U (draft) or 16 U + L (target). */
static inline void kvq_hier_view_ms(bool target, kvq_f16 m, kvq_f16 s4, float *mn, float *sc) {
    if (target) kvq_hier_target_ms(m, s4, &m, &s4);
    *mn = kvq_f16_to_f32(m);
    *sc = kvq_f16_to_f32(s4);
}

#endif
