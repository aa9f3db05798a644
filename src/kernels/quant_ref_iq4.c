/* Scalar references for IQ4_NL and IQ4_XS (GGUF type ids 20 and 23): 4-bit
 * indices into one fixed non-uniform grid. llama.cpp writes IQ4_NL where Q2_K,
 * Q3_K or IQ4_XS does not fit a row (no multiple of 256), so small-hidden
 * models' Q2_K and Q3_K_M files are mostly IQ4_NL. */
#include "quant_ref.h"

const int8_t kvq_iq4nl_grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* index of the grid value nearest to v (grid units) */
static int grid_index(float v) {
    int k = 0;
    while (k < 15 && v > 0.5f * (kvq_iq4nl_grid[k] + kvq_iq4nl_grid[k + 1])) k++;
    return k;
}

/* Codes and scale of 32 values: a few scales around "extreme on the grid's
 * negative end", each refitted by least squares; the lowest squared error
 * wins. Returns the scale (0 for an all-zero block). */
static float iq4_fit32(const float *x, uint8_t L[32]) {
    float amax = 0, max = 0;
    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    if (amax == 0) {
        for (int i = 0; i < 32; i++) L[i] = (uint8_t)grid_index(0);
        return 0;
    }
    float best_d = 0, best_e = INFINITY;
    uint8_t cand[32];
    for (int t = -8; t <= 8; t++) {
        const float d0 = max / (float)(kvq_iq4nl_grid[0] + t);
        float sxg = 0, sgg = 0;
        for (int i = 0; i < 32; i++) {
            cand[i] = (uint8_t)grid_index(x[i] / d0);
            float g = kvq_iq4nl_grid[cand[i]];
            sxg += x[i] * g, sgg += g * g;
        }
        const float d = sgg > 0 ? sxg / sgg : d0;
        float e = 0;
        for (int i = 0; i < 32; i++) {
            float r = x[i] - d * kvq_iq4nl_grid[cand[i]];
            e += r * r;
        }
        if (e < best_e) best_e = e, best_d = d;
    }
    return best_d;
}

static void iq4_codes(const float *x, float d, uint8_t L[32]) {
    const float id = d ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; i++) L[i] = (uint8_t)grid_index(x[i] * id);
}

static void iq4_pack(const uint8_t L[32], uint8_t qs[16]) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
}

static inline int iq4_val(const uint8_t qs[16], int i) {
    return kvq_iq4nl_grid[i < 16 ? qs[i] & 0xF : qs[i - 16] >> 4];
}

void kvq_iq4_nl_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_iq4_nl *y = dst;
    uint8_t L[32];
    for (int64_t b = 0; b < n / 32; b++) {
        float d = iq4_fit32(src + b * 32, L);
        y[b].d = kvq_f32_to_f16(d);
        iq4_codes(src + b * 32, kvq_f16_to_f32(y[b].d), L); /* codes for the scale as stored */
        iq4_pack(L, y[b].qs);
    }
}
void kvq_iq4_nl_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_iq4_nl *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        float d = kvq_f16_to_f32(x[b].d);
        for (int i = 0; i < 32; i++) dst[b * 32 + i] = d * (float)iq4_val(x[b].qs, i);
    }
}
float kvq_iq4_nl_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_iq4_nl *a = w;
    const kvq_block_q8_0 *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int i = 0; i < 32; i++) sumi += iq4_val(a[b].qs, i) * x[b].qs[i];
        s += (float)sumi * kvq_f16_to_f32(a[b].d) * kvq_f16_to_f32(x[b].d);
    }
    return s;
}

void kvq_iq4_xs_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_iq4_xs *y = dst;
    uint8_t L[32];
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float *x = src + b * KVQ_QK_K;
        float s[8], big = 0;
        for (int ib = 0; ib < 8; ib++) {
            s[ib] = iq4_fit32(x + 32 * ib, L);
            if (fabsf(s[ib]) > fabsf(big)) big = s[ib];
        }
        /* the largest sub-block scale maps to -32, the end with the most room */
        const float d = big / -32.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = kvq_f32_to_f16(d);
        const float dq = kvq_f16_to_f32(y[b].d);
        y[b].scales_h = 0;
        memset(y[b].scales_l, 0, sizeof y[b].scales_l);
        for (int ib = 0; ib < 8; ib++) {
            int ls = kvq_clampi(kvq_iround(s[ib] * id) + 32, 0, 63);
            y[b].scales_l[ib / 2] |= (uint8_t)((ls & 0xF) << (4 * (ib % 2)));
            y[b].scales_h |= (uint16_t)((ls >> 4) << (2 * ib));
            iq4_codes(x + 32 * ib, dq * (float)(ls - 32), L);
            iq4_pack(L, y[b].qs + 16 * ib);
        }
    }
}
void kvq_iq4_xs_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_iq4_xs *x = src;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float d = kvq_f16_to_f32(x[b].d);
        for (int ib = 0; ib < 8; ib++) {
            const float dl = d * (float)(kvq_iq4_xs_ls(&x[b], ib) - 32);
            for (int i = 0; i < 32; i++) dst[b * KVQ_QK_K + 32 * ib + i] = dl * (float)iq4_val(x[b].qs + 16 * ib, i);
        }
    }
}
float kvq_iq4_xs_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_iq4_xs *a = w;
    const kvq_block_q8_K *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        int sum = 0;
        for (int ib = 0; ib < 8; ib++) {
            int sumi = 0;
            for (int i = 0; i < 32; i++) sumi += iq4_val(a[b].qs + 16 * ib, i) * x[b].qs[32 * ib + i];
            sum += (kvq_iq4_xs_ls(&a[b], ib) - 32) * sumi;
        }
        s += kvq_f16_to_f32(a[b].d) * x[b].d * (float)sum;
    }
    return s;
}
