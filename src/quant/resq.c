/* Row quantizers for AQUA-KV's residuals (resq.h). */
#include "resq.h"

#include <math.h>
#include <string.h>

/* n values of b bits each, least significant bit first. */
static void put_bits(uint8_t *out, const uint8_t *v, int n, int b) {
    if (b == 8) { /* HIGGS's 256-point grids: a byte per index */
        memcpy(out, v, (size_t)n);
        return;
    }
    memset(out, 0, (size_t)(n * b + 7) / 8);
    for (int i = 0, bit = 0; i < n; i++, bit += b)
        for (int k = 0; k < b; k++)
            if (v[i] >> k & 1) out[(bit + k) >> 3] |= (uint8_t)(1u << ((bit + k) & 7));
}

static void get_bits(const uint8_t *in, uint8_t *v, int n, int b) {
    if (b == 8) {
        memcpy(v, in, (size_t)n);
        return;
    }
    for (int i = 0, bit = 0; i < n; i++, bit += b) {
        unsigned x = 0;
        for (int k = 0; k < b; k++) x |= (unsigned)(in[(bit + k) >> 3] >> ((bit + k) & 7) & 1) << k;
        v[i] = (uint8_t)x;
    }
}

kvq_status kvq_resq_init(kvq_resq *q, int kind, int bits, int C) {
    memset(q, 0, sizeof *q);
    if ((kind != KVQ_RESQ_HIGGS && kind != KVQ_RESQ_UNIFORM) || bits < 2 || bits > 4 || C < 8) return KVQ_ERR_ARG;
    q->kind = kind;
    q->bits = bits;
    q->C = C;
    q->g = 1;
    while (q->g < 1024 && C % (2 * q->g) == 0) q->g *= 2;
    if (q->g < 8) return KVQ_ERR_UNSUPPORTED; /* a KV width with no power-of-two group of 8 or more */
    if (kind == KVQ_RESQ_HIGGS) {
        static const int D[5] = {0, 0, 4, 2, 2}, N[5] = {0, 0, 256, 64, 256};
        q->grid = kvq_higgs_grid_get(D[bits], N[bits]);
        if (!q->grid) return KVQ_ERR_NOMEM;
        q->idx_bits = N[bits] == 256 ? 8 : N[bits] == 64 ? 6 : 4;
        q->group_bytes = 2 + (size_t)(q->g / q->grid->d * q->idx_bits + 7) / 8;
    } else {
        q->group_bytes = 4 + (size_t)(q->g * bits + 7) / 8;
    }
    q->row_bytes = (size_t)(C / q->g) * q->group_bytes;
    return KVQ_OK;
}

void kvq_resq_quant(const kvq_resq *q, const float *x, uint8_t *out) {
    uint8_t idx[1024];
    for (int gr = 0; gr < q->C / q->g; gr++) {
        const float *xg = x + (size_t)gr * q->g;
        uint8_t *o = out + (size_t)gr * q->group_bytes;
        if (q->kind == KVQ_RESQ_HIGGS) {
            kvq_f16 norm;
            kvq_higgs_quant(q->grid, xg, q->g, idx, &norm);
            memcpy(o, &norm, 2);
            put_bits(o + 2, idx, q->g / q->grid->d, q->idx_bits);
        } else {
            kvq_f16 mn, sc;
            float lo = xg[0], hi = xg[0];
            for (int i = 1; i < q->g; i++) { lo = fminf(lo, xg[i]); hi = fmaxf(hi, xg[i]); }
            const int qmax = (1 << q->bits) - 1;
            mn = kvq_f32_to_f16(lo);
            sc = kvq_f32_to_f16(fmaxf(hi - lo, 1e-5f) / (float)qmax);
            if (kvq_f16_to_f32(sc) == 0) sc = 0x0001;
            const float m = kvq_f16_to_f32(mn), s = kvq_f16_to_f32(sc);
            for (int i = 0; i < q->g; i++) {
                const float c = rintf((xg[i] - m) / s);
                idx[i] = (uint8_t)(c < 0 ? 0 : c > qmax ? qmax : c);
            }
            memcpy(o, &mn, 2);
            memcpy(o + 2, &sc, 2);
            put_bits(o + 4, idx, q->g, q->bits);
        }
    }
}

void kvq_resq_dequant(const kvq_resq *q, const uint8_t *in, float *x) {
    uint8_t idx[1024];
    for (int gr = 0; gr < q->C / q->g; gr++) {
        const uint8_t *o = in + (size_t)gr * q->group_bytes;
        float *xg = x + (size_t)gr * q->g;
        if (q->kind == KVQ_RESQ_HIGGS) {
            kvq_f16 norm;
            memcpy(&norm, o, 2);
            get_bits(o + 2, idx, q->g / q->grid->d, q->idx_bits);
            kvq_higgs_dequant(q->grid, idx, norm, q->g, xg);
        } else {
            kvq_f16 mn, sc;
            memcpy(&mn, o, 2);
            memcpy(&sc, o + 2, 2);
            get_bits(o + 4, idx, q->g, q->bits);
            const float m = kvq_f16_to_f32(mn), s = kvq_f16_to_f32(sc);
            for (int i = 0; i < q->g; i++) xg[i] = m + s * idx[i];
        }
    }
}
