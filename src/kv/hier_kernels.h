/* Fused attention kernels of the hier codec (QuantSpec): scalar reference and
 * AVX2 (hier_kernels.c), AVX-512 VNNI (hier_kernels_avx512.c).
 *
 * Both read the two 4-bit planes in place: no 8-bit copy is ever built.
 * lower == NULL is the draft view (m + s4 U); otherwise the target view
 * m8 + s8 (16 U + L), with (m8, s8) derived from the stored (m, s4) by
 * kvq_hier_target_ms.
 *
 * The arithmetic is integer, as llama.cpp's for its quantized caches: in f32
 * a 4-bit key costs as many multiply-adds as an f16 one, so attention over
 * codes could never be faster than f16, and on a core with two FMA pipes that
 * is what bounds a long context, not the bytes. Keys: the scale-folded query
 * q_d s_d is rounded to int8 per block and query (the codes stay exact), and
 * s_j = sum_d q_d m_d + alpha * sum_d qi_d c_dj. Values: the weights w_i s_i
 * (>= 0) are rounded to 8 unsigned bits per call, query and group (error at
 * most 1/510 of the largest), and out_c += sum_i w_i m_i + beta * sum_i wi_i c_ic.
 * The target view's 8-bit codes are summed as 16 sum(qi U) + sum(qi L), so
 * every product is one of 4-bit codes and 8-bit factors (one pmaddubsw).
 *
 * Keys: a block of G tokens, per plane G * hd / 2 bytes in tiles of 8 tokens
 * by 8 channels (kvq_hier_kbyte): the 4 bytes of a token in a tile hold 4
 * channels in their low nibbles and 4 more in their high ones, so one load
 * gives 8 tokens' rows for an int8 dot over 4 channels per 32-bit lane.
 * ms[d] = m, ms[hd + d] = s4 of channel d.
 * Values: per token, groups of vg channels; rows of hd/2 bytes interleaved in
 * quads of 4 tokens (kvq_vrow_byte), so one channel's codes of 4 tokens form
 * a 32-bit lane; ms = (m, s4) per group, token after token. */
#ifndef KVQ_KV_HIER_KERNELS_H
#define KVQ_KV_HIER_KERNELS_H
#include <stdbool.h>
#include <stddef.h>
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

/* Tokens of one value-kernel pass: the weights of a pass share one 8-bit scale. */
#define KVQ_HIER_AV_PASS 128

/* Byte of key plane (hd channels, hd % 8 == 0) that holds channel d of token
 * t of the block; the code is its low nibble when d % 8 < 4, else the high one. */
static inline size_t kvq_hier_kbyte(int hd, int t, int d) {
    return ((size_t)(t >> 3) * (size_t)(hd >> 3) + (size_t)(d >> 3)) * 32 + 4 * (size_t)(t & 7) + (size_t)(d & 3);
}
static inline int kvq_hier_kcode(const uint8_t *plane, int hd, int t, int d) {
    return (plane[kvq_hier_kbyte(hd, t, d)] >> (d & 4)) & 15;
}
static inline void kvq_hier_kput(uint8_t *plane, int hd, int t, int d, int code) {
    uint8_t *p = plane + kvq_hier_kbyte(hd, t, d);
    *p = (uint8_t)((*p & (0xf0 >> (d & 4))) | ((code & 15) << (d & 4)));
}

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
