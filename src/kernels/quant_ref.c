/* Scalar reference implementations of every type's row functions.
 * Layouts are bit-compatible with GGUF (see types.h). Quantizers are simple
 * round-to-nearest ones: they produce valid blocks (for synthetic models and
 * activations), not ggml's search-optimized codes. */
#include "quant_ref.h"

#include <math.h>
#include <string.h>


/* ---------------------------------------------------------------- floats */
void kvq_f32_to_float_ref(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }
void kvq_f32_from_float_ref(const float *src, void *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }
float kvq_f32_vec_dot_ref(const void *w, const void *x, int64_t n) {
    const float *a = w, *b = x;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void kvq_f16_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_f16 *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = kvq_f16_to_f32(h[i]);
}
void kvq_f16_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_f16 *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = kvq_f32_to_f16(src[i]);
}
float kvq_f16_vec_dot_ref(const void *w, const void *x, int64_t n) {
    const kvq_f16 *a = w;
    const float *b = x;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += kvq_f16_to_f32(a[i]) * b[i];
    return s;
}

void kvq_bf16_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_bf16 *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = kvq_bf16_to_f32(h[i]);
}
void kvq_bf16_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_bf16 *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = kvq_f32_to_bf16(src[i]);
}
float kvq_bf16_vec_dot_ref(const void *w, const void *x, int64_t n) {
    const kvq_bf16 *a = w;
    const float *b = x;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += kvq_bf16_to_f32(a[i]) * b[i];
    return s;
}

/* ------------------------------------------------------------ q8_0, q8_1 */
void kvq_q8_0_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / KVQ_QK8_0; b++) {
        const float *x = src + b * KVQ_QK8_0;
        float amax = 0;
        for (int j = 0; j < KVQ_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = kvq_f32_to_f16(d);
        for (int j = 0; j < KVQ_QK8_0; j++) y[b].qs[j] = (int8_t)kvq_iround(x[j] * id);
    }
}
void kvq_quant32_ref(const float *x, int8_t q[32], float *d) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
    *d = amax / 127.0f;
    float id = *d ? 1.0f / *d : 0.0f;
    for (int i = 0; i < 32; i++) q[i] = (int8_t)kvq_iround(x[i] * id);
}
void kvq_q8_0_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q8_0 *x = src;
    for (int64_t b = 0; b < n / KVQ_QK8_0; b++) {
        float d = kvq_f16_to_f32(x[b].d);
        for (int j = 0; j < KVQ_QK8_0; j++) dst[b * KVQ_QK8_0 + j] = x[b].qs[j] * d;
    }
}
float kvq_q8_0_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q8_0 *a = w, *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / KVQ_QK8_0; b++) {
        int sumi = 0;
        for (int j = 0; j < KVQ_QK8_0; j++) sumi += a[b].qs[j] * x[b].qs[j];
        s += (float)sumi * kvq_f16_to_f32(a[b].d) * kvq_f16_to_f32(x[b].d);
    }
    return s;
}

void kvq_q8_1_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            y[b].qs[j] = (int8_t)kvq_iround(x[j] * id);
            sum += y[b].qs[j];
        }
        y[b].d = kvq_f32_to_f16(d);
        y[b].s = kvq_f32_to_f16((float)sum * d);
    }
}
void kvq_q8_1_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q8_1 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        float d = kvq_f16_to_f32(x[b].d);
        for (int j = 0; j < 32; j++) dst[b * 32 + j] = x[b].qs[j] * d;
    }
}
float kvq_q8_1_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q8_1 *a = w, *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += a[b].qs[j] * x[b].qs[j];
        s += (float)sumi * kvq_f16_to_f32(a[b].d) * kvq_f16_to_f32(x[b].d);
    }
    return s;
}

/* ------------------------------------------------------------ q4_0, q4_1 */
void kvq_q4_0_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q4_0 *y = dst;
    for (int64_t b = 0; b < n / KVQ_QK4_0; b++) {
        const float *x = src + b * KVQ_QK4_0;
        float amax = 0, max = 0;
        for (int j = 0; j < KVQ_QK4_0; j++)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        /* The signed extreme maps to code 0, so the full -8..7 range is used. */
        float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = kvq_f32_to_f16(d);
        for (int j = 0; j < KVQ_QK4_0 / 2; j++) {
            int q0 = kvq_clampi(kvq_iround(x[j] * id) + 8, 0, 15);
            int q1 = kvq_clampi(kvq_iround(x[j + 16] * id) + 8, 0, 15);
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}
void kvq_q4_0_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q4_0 *x = src;
    for (int64_t b = 0; b < n / KVQ_QK4_0; b++) {
        float d = kvq_f16_to_f32(x[b].d);
        for (int j = 0; j < 16; j++) {
            dst[b * 32 + j] = ((x[b].qs[j] & 0xF) - 8) * d;
            dst[b * 32 + j + 16] = ((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}
float kvq_q4_0_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q4_0 *a = w;
    const kvq_block_q8_0 *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += ((a[b].qs[j] & 0xF) - 8) * x[b].qs[j];
            sumi += ((a[b].qs[j] >> 4) - 8) * x[b].qs[j + 16];
        }
        s += (float)sumi * kvq_f16_to_f32(a[b].d) * kvq_f16_to_f32(x[b].d);
    }
    return s;
}

void kvq_q4_1_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q4_1 *y = dst;
    for (int64_t b = 0; b < n / KVQ_QK4_1; b++) {
        const float *x = src + b * 32;
        float mn = x[0], mx = x[0];
        for (int j = 1; j < 32; j++) { mn = fminf(mn, x[j]); mx = fmaxf(mx, x[j]); }
        float d = (mx - mn) / 15.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = kvq_f32_to_f16(d);
        y[b].m = kvq_f32_to_f16(mn);
        for (int j = 0; j < 16; j++) {
            int q0 = kvq_clampi(kvq_iround((x[j] - mn) * id), 0, 15);
            int q1 = kvq_clampi(kvq_iround((x[j + 16] - mn) * id), 0, 15);
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}
void kvq_q4_1_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q4_1 *x = src;
    for (int64_t b = 0; b < n / 32; b++) {
        float d = kvq_f16_to_f32(x[b].d), m = kvq_f16_to_f32(x[b].m);
        for (int j = 0; j < 16; j++) {
            dst[b * 32 + j] = (x[b].qs[j] & 0xF) * d + m;
            dst[b * 32 + j + 16] = (x[b].qs[j] >> 4) * d + m;
        }
    }
}
float kvq_q4_1_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q4_1 *a = w;
    const kvq_block_q8_1 *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += (a[b].qs[j] & 0xF) * x[b].qs[j];
            sumi += (a[b].qs[j] >> 4) * x[b].qs[j + 16];
        }
        s += (float)sumi * kvq_f16_to_f32(a[b].d) * kvq_f16_to_f32(x[b].d) +
             kvq_f16_to_f32(a[b].m) * kvq_f16_to_f32(x[b].s);
    }
    return s;
}

/* ------------------------------------------------------------------ q8_K */
void kvq_q8_K_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q8_K *y = dst;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float *x = src + b * KVQ_QK_K;
        float amax = 0;
        for (int j = 0; j < KVQ_QK_K; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = d;
        for (int j = 0; j < KVQ_QK_K; j++) y[b].qs[j] = (int8_t)kvq_clampi(kvq_iround(x[j] * id), -127, 127);
        for (int g = 0; g < KVQ_QK_K / 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += y[b].qs[g * 16 + j];
            y[b].bsums[g] = (int16_t)s;
        }
    }
}
void kvq_q8_K_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q8_K *x = src;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++)
        for (int j = 0; j < KVQ_QK_K; j++) dst[b * KVQ_QK_K + j] = x[b].d * x[b].qs[j];
}
float kvq_q8_K_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q8_K *a = w, *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        int sumi = 0;
        for (int j = 0; j < KVQ_QK_K; j++) sumi += a[b].qs[j] * x[b].qs[j];
        s += a[b].d * x[b].d * (float)sumi;
    }
    return s;
}

/* ------------------------------------------------------------ q4_K, q5_K */
/* Shared by q4_K and q5_K: per 32-value sub-block an affine (scale, min)
 * pair, both quantized to 6 bits against two super-block fp16 factors. */
static void k_affine_quant(const float *x, int nmax, uint8_t *scales12, kvq_f16 *d_out, kvq_f16 *dmin_out,
                           uint8_t *L) {
    float sc[8], mn[8], max_sc = 0, max_mn = 0;
    for (int j = 0; j < 8; j++) {
        const float *v = x + 32 * j;
        float lo = v[0], hi = v[0];
        for (int i = 1; i < 32; i++) { lo = fminf(lo, v[i]); hi = fmaxf(hi, v[i]); }
        if (lo > 0) lo = 0; /* the min term is subtracted: keep it non-negative */
        sc[j] = (hi - lo) / (float)nmax;
        mn[j] = -lo;
        max_sc = fmaxf(max_sc, sc[j]);
        max_mn = fmaxf(max_mn, mn[j]);
    }
    float d = max_sc / 63.0f, dmin = max_mn / 63.0f;
    float id = d ? 1.0f / d : 0.0f, idmin = dmin ? 1.0f / dmin : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)kvq_clampi(kvq_iround(sc[j] * id), 0, 63);
        lm[j] = (uint8_t)kvq_clampi(kvq_iround(mn[j] * idmin), 0, 63);
    }
    memset(scales12, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            scales12[j] |= ls[j];
            scales12[j + 4] |= lm[j];
        } else {
            scales12[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            scales12[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            scales12[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
    *d_out = kvq_f32_to_f16(d);
    *dmin_out = kvq_f32_to_f16(dmin);
    float dq = kvq_f16_to_f32(*d_out), dmq = kvq_f16_to_f32(*dmin_out);
    for (int j = 0; j < 8; j++) {
        uint8_t s6, m6;
        kvq_k4_scale_min(j, scales12, &s6, &m6);
        float ds = dq * s6, dm = dmq * m6;
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = (uint8_t)(ds ? kvq_clampi(kvq_iround((x[32 * j + i] + dm) / ds), 0, nmax) : 0);
    }
}

void kvq_q4_K_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q4_K *y = dst;
    uint8_t L[KVQ_QK_K];
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        k_affine_quant(src + b * KVQ_QK_K, 15, y[b].scales, &y[b].d, &y[b].dmin, L);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}
void kvq_q4_K_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q4_K *x = src;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        float d = kvq_f16_to_f32(x[b].d), dmin = kvq_f16_to_f32(x[b].dmin);
        float *y = dst + b * KVQ_QK_K;
        const uint8_t *q = x[b].qs;
        for (int c = 0; c < 4; c++) {
            uint8_t s0, m0, s1, m1;
            kvq_k4_scale_min(2 * c, x[b].scales, &s0, &m0);
            kvq_k4_scale_min(2 * c + 1, x[b].scales, &s1, &m1);
            for (int l = 0; l < 32; l++) {
                y[64 * c + l] = d * s0 * (q[l] & 0xF) - dmin * m0;
                y[64 * c + 32 + l] = d * s1 * (q[l] >> 4) - dmin * m1;
            }
            q += 32;
        }
    }
}
float kvq_q4_K_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q4_K *a = w;
    const kvq_block_q8_K *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        int sum_sc = 0, sum_m = 0;
        const uint8_t *q = a[b].qs;
        for (int c = 0; c < 4; c++) {
            for (int h = 0; h < 2; h++) {
                uint8_t sc, m;
                kvq_k4_scale_min(2 * c + h, a[b].scales, &sc, &m);
                int sumi = 0;
                for (int l = 0; l < 32; l++) {
                    int v = h ? (q[l] >> 4) : (q[l] & 0xF);
                    sumi += v * x[b].qs[64 * c + 32 * h + l];
                }
                int j = 2 * c + h;
                sum_sc += sc * sumi;
                sum_m += m * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
            }
            q += 32;
        }
        s += x[b].d * (kvq_f16_to_f32(a[b].d) * sum_sc - kvq_f16_to_f32(a[b].dmin) * sum_m);
    }
    return s;
}

void kvq_q5_K_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q5_K *y = dst;
    uint8_t L[KVQ_QK_K];
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        k_affine_quant(src + b * KVQ_QK_K, 31, y[b].scales, &y[b].d, &y[b].dmin, L);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
                y[b].qs[32 * c + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
                if (lo & 16) y[b].qh[l] |= (uint8_t)(1u << (2 * c));
                if (hi & 16) y[b].qh[l] |= (uint8_t)(2u << (2 * c));
            }
    }
}
void kvq_q5_K_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q5_K *x = src;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        float d = kvq_f16_to_f32(x[b].d), dmin = kvq_f16_to_f32(x[b].dmin);
        float *y = dst + b * KVQ_QK_K;
        const uint8_t *ql = x[b].qs, *qh = x[b].qh;
        for (int c = 0; c < 4; c++) {
            uint8_t s0, m0, s1, m1;
            kvq_k4_scale_min(2 * c, x[b].scales, &s0, &m0);
            kvq_k4_scale_min(2 * c + 1, x[b].scales, &s1, &m1);
            uint8_t u1 = (uint8_t)(1u << (2 * c)), u2 = (uint8_t)(2u << (2 * c));
            for (int l = 0; l < 32; l++) {
                y[64 * c + l] = d * s0 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - dmin * m0;
                y[64 * c + 32 + l] = d * s1 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - dmin * m1;
            }
            ql += 32;
        }
    }
}
float kvq_q5_K_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q5_K *a = w;
    const kvq_block_q8_K *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        int sum_sc = 0, sum_m = 0;
        const uint8_t *ql = a[b].qs, *qh = a[b].qh;
        for (int c = 0; c < 4; c++) {
            for (int h = 0; h < 2; h++) {
                uint8_t sc, m;
                kvq_k4_scale_min(2 * c + h, a[b].scales, &sc, &m);
                uint8_t u = (uint8_t)((h ? 2u : 1u) << (2 * c));
                int sumi = 0;
                for (int l = 0; l < 32; l++) {
                    int v = (h ? (ql[l] >> 4) : (ql[l] & 0xF)) + (qh[l] & u ? 16 : 0);
                    sumi += v * x[b].qs[64 * c + 32 * h + l];
                }
                int j = 2 * c + h;
                sum_sc += sc * sumi;
                sum_m += m * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
            }
            ql += 32;
        }
        s += x[b].d * (kvq_f16_to_f32(a[b].d) * sum_sc - kvq_f16_to_f32(a[b].dmin) * sum_m);
    }
    return s;
}

/* ------------------------------------------------------------------ q6_K */
void kvq_q6_K_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q6_K *y = dst;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float *x = src + b * KVQ_QK_K;
        float scale[16], max_abs_scale = 0, max_scale = 0;
        for (int j = 0; j < 16; j++) {
            float amax = 0, mx = 0;
            for (int i = 0; i < 16; i++)
                if (fabsf(x[16 * j + i]) > amax) { amax = fabsf(x[16 * j + i]); mx = x[16 * j + i]; }
            /* like q4_0: the signed extreme maps to -32 so the whole 6-bit range is used */
            scale[j] = mx / -32.0f;
            if (fabsf(scale[j]) > max_abs_scale) { max_abs_scale = fabsf(scale[j]); max_scale = scale[j]; }
        }
        float d = max_scale / -128.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = kvq_f32_to_f16(d);
        float dq = kvq_f16_to_f32(y[b].d);
        uint8_t L[KVQ_QK_K];
        for (int j = 0; j < 16; j++) {
            y[b].scales[j] = (int8_t)kvq_clampi(kvq_iround(scale[j] * id), -128, 127);
            float ds = dq * y[b].scales[j];
            for (int i = 0; i < 16; i++)
                L[16 * j + i] = (uint8_t)(ds ? kvq_clampi(kvq_iround(x[16 * j + i] / ds), -32, 31) + 32 : 32);
        }
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            const uint8_t *Lh = L + 128 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
                ql[l] = (uint8_t)((q1 & 0xF) | ((q3 & 0xF) << 4));
                ql[l + 32] = (uint8_t)((q2 & 0xF) | ((q4 & 0xF) << 4));
                qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}
/* Signed 6-bit value i (0..255) of a q6_K block. */
static inline int q6_val(const kvq_block_q6_K *x, int i) {
    int h = i / 128, r = i % 128, k = r / 32, l = r % 32;
    const uint8_t *ql = x->ql + 64 * h, *qh = x->qh + 32 * h;
    int lo = (k & 1) ? ql[l + 32] : ql[l];
    lo = (k & 2) ? (lo >> 4) : (lo & 0xF);
    int hi = (qh[l] >> (2 * k)) & 3;
    return (lo | (hi << 4)) - 32;
}
void kvq_q6_K_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q6_K *x = src;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        float d = kvq_f16_to_f32(x[b].d);
        for (int i = 0; i < KVQ_QK_K; i++) dst[b * KVQ_QK_K + i] = d * x[b].scales[i / 16] * q6_val(&x[b], i);
    }
}
float kvq_q6_K_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q6_K *a = w;
    const kvq_block_q8_K *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        int sum = 0;
        for (int j = 0; j < 16; j++) {
            int sumi = 0;
            for (int i = 0; i < 16; i++) sumi += q6_val(&a[b], 16 * j + i) * x[b].qs[16 * j + i];
            sum += a[b].scales[j] * sumi;
        }
        s += kvq_f16_to_f32(a[b].d) * x[b].d * (float)sum;
    }
    return s;
}
