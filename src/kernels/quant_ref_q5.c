/* Scalar references for Q5_0 and Q5_1 (GGUF type ids 6 and 7): Q4_0/Q4_1
 * with a fifth bit per value. llama.cpp writes them where a K-quant does not
 * fit (rows that are no multiple of 256: Qwen2.5-0.5B, SmolLM), so they are
 * most of the matrices of those models' Q4_K_M and Q5_K_M files. */
#include "quant_ref.h"

static void q5_pack(const int q[32], uint8_t qs[16], uint8_t qh[4]) {
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    for (int i = 0; i < 32; i++) h |= (uint32_t)((q[i] >> 4) & 1) << i;
    memcpy(qh, &h, 4);
}

void kvq_q5_0_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q5_0 *y = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        /* the signed extreme maps to code 0, so all of -16..15 is used */
        float d = max / -16.0f, id = d ? 1.0f / d : 0.0f;
        int q[32];
        for (int j = 0; j < 32; j++) q[j] = kvq_clampi(kvq_iround(x[j] * id) + 16, 0, 31);
        y[b].d = kvq_f32_to_f16(d);
        q5_pack(q, y[b].qs, y[b].qh);
    }
}
void kvq_q5_0_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q5_0 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        float d = kvq_f16_to_f32(x[b].d);
        for (int i = 0; i < 32; i++) dst[b * 32 + i] = (float)(kvq_q5_code(x[b].qs, x[b].qh, i) - 16) * d;
    }
}
float kvq_q5_0_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q5_0 *a = w;
    const kvq_block_q8_0 *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int i = 0; i < 32; i++) sumi += (kvq_q5_code(a[b].qs, a[b].qh, i) - 16) * x[b].qs[i];
        s += (float)sumi * kvq_f16_to_f32(a[b].d) * kvq_f16_to_f32(x[b].d);
    }
    return s;
}

void kvq_q5_1_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q5_1 *y = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        float mn = x[0], mx = x[0];
        for (int j = 1; j < 32; j++) { mn = fminf(mn, x[j]); mx = fmaxf(mx, x[j]); }
        float d = (mx - mn) / 31.0f, id = d ? 1.0f / d : 0.0f;
        int q[32];
        for (int j = 0; j < 32; j++) q[j] = kvq_clampi(kvq_iround((x[j] - mn) * id), 0, 31);
        y[b].d = kvq_f32_to_f16(d);
        y[b].m = kvq_f32_to_f16(mn);
        q5_pack(q, y[b].qs, y[b].qh);
    }
}
void kvq_q5_1_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q5_1 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        float d = kvq_f16_to_f32(x[b].d), m = kvq_f16_to_f32(x[b].m);
        for (int i = 0; i < 32; i++) dst[b * 32 + i] = (float)kvq_q5_code(x[b].qs, x[b].qh, i) * d + m;
    }
}
float kvq_q5_1_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q5_1 *a = w;
    const kvq_block_q8_1 *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int i = 0; i < 32; i++) sumi += kvq_q5_code(a[b].qs, a[b].qh, i) * x[b].qs[i];
        s += (float)sumi * kvq_f16_to_f32(a[b].d) * kvq_f16_to_f32(x[b].d) +
             kvq_f16_to_f32(a[b].m) * kvq_f16_to_f32(x[b].s);
    }
    return s;
}
