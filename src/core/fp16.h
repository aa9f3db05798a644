/* IEEE half and bfloat16 conversions. Scalar and bit-exact (round to nearest
 * even), so every SIMD path can be checked against them. */
#ifndef KVQ_CORE_FP16_H
#define KVQ_CORE_FP16_H
#include <stdint.h>
#include <string.h>

typedef uint16_t kvq_f16;
typedef uint16_t kvq_bf16;

static inline uint32_t kvq_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float kvq_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float kvq_f16_to_f32(kvq_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return kvq_bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float f = (float)man * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    if (exp == 31) return kvq_bits_f32(sign | 0x7f800000u | (man << 13));
    return kvq_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline kvq_f16 kvq_f32_to_f16(float f) {
    uint32_t x = kvq_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (kvq_f16)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (kvq_f16)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                 /* below smallest normal half */
        /* subnormal half: scale by 2^24 and round to nearest even */
        float a = kvq_bits_f32(ax) * 16777216.0f;
        uint32_t m = (uint32_t)a;
        float rem = a - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
        return (kvq_f16)(sign | m);
    }
    uint32_t e = (ax >> 23) - 112, man = ax & 0x7fffff;
    uint32_t h = (e << 10) | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (kvq_f16)(sign | h);
}

static inline float kvq_bf16_to_f32(kvq_bf16 h) { return kvq_bits_f32((uint32_t)h << 16); }

static inline kvq_bf16 kvq_f32_to_bf16(float f) {
    uint32_t x = kvq_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (kvq_bf16)((x >> 16) | 64); /* quiet NaN */
    return (kvq_bf16)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

#endif
