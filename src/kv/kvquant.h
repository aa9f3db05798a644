/* Uniform asymmetric quantization of KV groups (KIVI / KVTuner, kvtuner.md):
 *     s = max(max(g) - min(g), 1e-5) / (2^b - 1)
 *     code = clamp(round((x - min) / s), 0, 2^b - 1);   x_hat = min + code * s
 * min and s are stored as fp16 and the codes are computed from the stored
 * (rounded) values, so x_hat is exactly what attention sees. round() is
 * round-half-to-even (torch.round).
 *
 * Packing of n codes of b bits (n*b multiple of 8) into n*b/8 bytes: code j
 * lives in byte j % (n*b/8) at bit offset b * (j / (n*b/8)), so SIMD unpacks
 * a byte vector with one shift per output vector. */
#ifndef KVQ_KV_KVQUANT_H
#define KVQ_KV_KVQUANT_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "../core/fp16.h"

static inline int kvq_code_bytes(int n, int b) { return n * b / 8; }

static inline void kvq_pack_codes(const uint8_t *codes, int n, int b, uint8_t *out) {
    const int nb = kvq_code_bytes(n, b);
    memset(out, 0, (size_t)nb);
    for (int j = 0; j < n; j++) out[j % nb] |= (uint8_t)(codes[j] << (b * (j / nb)));
}

static inline int kvq_code_at(const uint8_t *p, int n, int b, int j) {
    const int nb = kvq_code_bytes(n, b);
    return (p[j % nb] >> (b * (j / nb))) & ((1 << b) - 1);
}

/* Quantizes x[i*stride], i < n, into packed codes and (min, scale) fp16. */
static inline void kvq_quant_group(const float *x, int stride, int n, int b, uint8_t *packed, kvq_f16 *mn_out,
                                   kvq_f16 *sc_out) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    const int qmax = (1 << b) - 1;
    float range = hi - lo > 1e-5f ? hi - lo : 1e-5f;
    kvq_f16 mh = kvq_f32_to_f16(lo), sh = kvq_f32_to_f16(range / (float)qmax);
    float mn = kvq_f16_to_f32(mh), s = kvq_f16_to_f32(sh);
    if (s == 0) { sh = 0x0001; s = kvq_f16_to_f32(sh); } /* tiny ranges underflow fp16: smallest subnormal */
    uint8_t codes[1024];
    for (int i = 0; i < n; i++) {
        float c = rintf((x[(size_t)i * stride] - mn) / s);
        /* written so that NaN (a corrupt session, a broken model) gives 0: a
         * cast of NaN or of an out-of-range float to an integer is undefined */
        codes[i] = (uint8_t)(c >= 0 ? (c <= qmax ? c : qmax) : 0);
    }
    kvq_pack_codes(codes, n, b, packed);
    *mn_out = mh;
    *sc_out = sh;
}

#endif
