/* Scalar references for Q2_K and Q3_K (GGUF type ids 10 and 11), the
 * K-quants of llama.cpp's Q2_K and Q3_K_* files.
 *
 * Both split a 256-value super-block into 16 sub-blocks of 16. Sub-block s
 * lives in 2-bit plane j = (s % 8) / 2 of the 32 code bytes starting at
 * 32 (s / 8) + 16 (s % 2), so value i of sub-block s is
 * (qs[32 (s / 8) + 16 (s % 2) + i] >> 2j) & 3; Q3_K's third bit is bit
 * 4 (s / 8) + j of hmask[16 (s % 2) + i]. */
#include "quant_ref.h"

static inline int k23_qbyte(int s, int i) { return 32 * (s / 8) + 16 * (s % 2) + i; }
static inline int k23_shift(int s) { return 2 * ((s % 8) / 2); }

static inline int q2_code(const kvq_block_q2_K *x, int s, int i) {
    return (x->qs[k23_qbyte(s, i)] >> k23_shift(s)) & 3;
}
static inline int q3_code(const kvq_block_q3_K *x, int s, int i) { /* -4..3 */
    int lo = (x->qs[k23_qbyte(s, i)] >> k23_shift(s)) & 3;
    int hi = (x->hmask[16 * (s % 2) + i] >> (4 * (s / 8) + (s % 8) / 2)) & 1;
    return lo + 4 * hi - 4;
}

/* An affine fit x ~ scale * q - min (q in 0..nmax, min >= 0) of n values:
 * from the range, then alternating code assignment and least-squares refits,
 * keeping the lowest squared error. */
static void affine_fit(const float *x, int n, int nmax, float *scale, float *min) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    if (lo > 0) lo = 0;
    float s = (hi - lo) / (float)nmax, m = -lo, best_e = INFINITY;
    *scale = s, *min = m;
    for (int it = 0; it < 4 && s > 0; it++) {
        float sq = 0, sqq = 0, sx = 0, sqx = 0, e = 0;
        int q[16];
        for (int i = 0; i < n; i++) {
            q[i] = kvq_clampi(kvq_iround((x[i] + m) / s), 0, nmax);
            float r = s * (float)q[i] - m - x[i];
            e += r * r;
            sq += (float)q[i], sqq += (float)(q[i] * q[i]), sx += x[i], sqx += (float)q[i] * x[i];
        }
        if (e < best_e) best_e = e, *scale = s, *min = m;
        /* [sqq sq; sq n] [s; -m] = [sqx; sx] */
        const float det = sqq * (float)n - sq * sq;
        if (det <= 0) break;
        float ns = (sqx * (float)n - sq * sx) / det, nm = -(sqq * sx - sq * sqx) / det;
        if (nm < 0) nm = 0, ns = sqq > 0 ? sqx / sqq : s;
        if (!(ns > 0)) break;
        s = ns, m = nm;
    }
}

void kvq_q2_K_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q2_K *y = dst;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float *x = src + b * KVQ_QK_K;
        float sc[16], mn[16], max_sc = 0, max_mn = 0;
        for (int s = 0; s < 16; s++) {
            affine_fit(x + 16 * s, 16, 3, &sc[s], &mn[s]);
            max_sc = fmaxf(max_sc, sc[s]), max_mn = fmaxf(max_mn, mn[s]);
        }
        y[b].d = kvq_f32_to_f16(max_sc / 15.0f);
        y[b].dmin = kvq_f32_to_f16(max_mn / 15.0f);
        const float d = kvq_f16_to_f32(y[b].d), dmin = kvq_f16_to_f32(y[b].dmin);
        uint8_t L[KVQ_QK_K];
        for (int s = 0; s < 16; s++) {
            int ls = d ? kvq_clampi(kvq_iround(sc[s] / d), 0, 15) : 0;
            int lm = dmin ? kvq_clampi(kvq_iround(mn[s] / dmin), 0, 15) : 0;
            y[b].scales[s] = (uint8_t)(ls | (lm << 4));
            const float ds = d * (float)ls, dm = dmin * (float)lm;
            for (int i = 0; i < 16; i++)
                L[16 * s + i] = (uint8_t)(ds ? kvq_clampi(kvq_iround((x[16 * s + i] + dm) / ds), 0, 3) : 0);
        }
        kvq_q2_K_put_codes(&y[b], L);
    }
}

void kvq_q2_K_put_codes(kvq_block_q2_K *b, const uint8_t L[KVQ_QK_K]) {
    memset(b->qs, 0, sizeof b->qs);
    for (int s = 0; s < 16; s++)
        for (int i = 0; i < 16; i++) b->qs[k23_qbyte(s, i)] |= (uint8_t)((L[16 * s + i] & 3) << k23_shift(s));
}

void kvq_q3_K_put_codes(kvq_block_q3_K *b, const int8_t q[KVQ_QK_K]) {
    memset(b->hmask, 0, sizeof b->hmask);
    memset(b->qs, 0, sizeof b->qs);
    for (int s = 0; s < 16; s++)
        for (int i = 0; i < 16; i++) {
            const int u = q[16 * s + i] + 4;
            b->qs[k23_qbyte(s, i)] |= (uint8_t)((u & 3) << k23_shift(s));
            if (u & 4) b->hmask[16 * (s % 2) + i] |= (uint8_t)(1u << (4 * (s / 8) + (s % 8) / 2));
        }
}
void kvq_q2_K_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q2_K *x = src;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float d = kvq_f16_to_f32(x[b].d), dmin = kvq_f16_to_f32(x[b].dmin);
        for (int s = 0; s < 16; s++) {
            const float dl = d * (float)(x[b].scales[s] & 0xF), ml = dmin * (float)(x[b].scales[s] >> 4);
            for (int i = 0; i < 16; i++) dst[b * KVQ_QK_K + 16 * s + i] = dl * (float)q2_code(&x[b], s, i) - ml;
        }
    }
}
float kvq_q2_K_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q2_K *a = w;
    const kvq_block_q8_K *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        int isum = 0, msum = 0;
        for (int sb = 0; sb < 16; sb++) {
            int sumi = 0;
            for (int i = 0; i < 16; i++) sumi += q2_code(&a[b], sb, i) * x[b].qs[16 * sb + i];
            isum += (a[b].scales[sb] & 0xF) * sumi;
            msum += (a[b].scales[sb] >> 4) * x[b].bsums[sb];
        }
        s += x[b].d * (kvq_f16_to_f32(a[b].d) * (float)isum - kvq_f16_to_f32(a[b].dmin) * (float)msum);
    }
    return s;
}

/* A symmetric fit x ~ scale * q, q in -4..3: the signed extreme near -4 (the
 * end with room), each candidate refitted by least squares. */
static float q3_fit16(const float *x) {
    float amax = 0, max = 0;
    for (int i = 0; i < 16; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax == 0) return 0;
    float best = 0, best_e = INFINITY;
    for (int t = -3; t <= 3; t++) {
        const float s0 = max / (-4.0f + 0.25f * (float)t);
        float sxq = 0, sqq = 0;
        int q[16];
        for (int i = 0; i < 16; i++) {
            q[i] = kvq_clampi(kvq_iround(x[i] / s0), -4, 3);
            sxq += x[i] * (float)q[i], sqq += (float)(q[i] * q[i]);
        }
        const float s = sqq > 0 ? sxq / sqq : s0;
        float e = 0;
        for (int i = 0; i < 16; i++) {
            float r = x[i] - s * (float)kvq_clampi(kvq_iround(x[i] / s), -4, 3);
            e += r * r;
        }
        if (e < best_e) best_e = e, best = s;
    }
    return best;
}

void kvq_q3_K_from_float_ref(const float *src, void *dst, int64_t n) {
    kvq_block_q3_K *y = dst;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float *x = src + b * KVQ_QK_K;
        float sc[16], big = 0;
        for (int s = 0; s < 16; s++) {
            sc[s] = q3_fit16(x + 16 * s);
            if (fabsf(sc[s]) > fabsf(big)) big = sc[s];
        }
        const float d = big / -32.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = kvq_f32_to_f16(d);
        const float dq = kvq_f16_to_f32(y[b].d);
        memset(y[b].scales, 0, sizeof y[b].scales);
        int8_t q[KVQ_QK_K];
        for (int s = 0; s < 16; s++) {
            const int v = kvq_clampi(kvq_iround(sc[s] * id) + 32, 0, 63);
            y[b].scales[s % 8] |= (uint8_t)((v & 0xF) << (4 * (s / 8)));
            y[b].scales[8 + s % 4] |= (uint8_t)((v >> 4) << (2 * (s / 4)));
            const float ds = dq * (float)(v - 32);
            for (int i = 0; i < 16; i++)
                q[16 * s + i] = (int8_t)(ds ? kvq_clampi(kvq_iround(x[16 * s + i] / ds), -4, 3) : 0);
        }
        kvq_q3_K_put_codes(&y[b], q);
    }
}
void kvq_q3_K_to_float_ref(const void *src, float *dst, int64_t n) {
    const kvq_block_q3_K *x = src;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        const float d = kvq_f16_to_f32(x[b].d);
        int8_t sc[16];
        kvq_q3_K_scales(x[b].scales, sc);
        for (int s = 0; s < 16; s++)
            for (int i = 0; i < 16; i++)
                dst[b * KVQ_QK_K + 16 * s + i] = d * (float)sc[s] * (float)q3_code(&x[b], s, i);
    }
}
float kvq_q3_K_vec_dot_ref(const void *w, const void *xv, int64_t n) {
    const kvq_block_q3_K *a = w;
    const kvq_block_q8_K *x = xv;
    float s = 0;
    for (int64_t b = 0; b < n / KVQ_QK_K; b++) {
        int8_t sc[16];
        kvq_q3_K_scales(a[b].scales, sc);
        int isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            int sumi = 0;
            for (int i = 0; i < 16; i++) sumi += q3_code(&a[b], sb, i) * x[b].qs[16 * sb + i];
            isum += sc[sb] * sumi;
        }
        s += kvq_f16_to_f32(a[b].d) * x[b].d * (float)isum;
    }
    return s;
}
