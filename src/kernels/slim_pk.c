/* The slim types' decode layout (slim_pk.h): packing, the scalar reference
 * of the kernels' arithmetic, and dequantization, for groups of R = 8, 16
 * or 32 rows. */
#include "slim_pk.h"

#include <math.h>
#include <string.h>

#include "../core/cpu.h"
#include "slim.h"

#define PK_MAGIC 0x4b504c53u /* "SLPK" */
#define UNIT KVQ_SLIM_UNIT

bool kvq_slim_pk_fits(const kvq_matw *W) {
    if (!kvq_slim_bits(W->type) || !W->aux || !W->aux_bytes || !W->aux[0] || !W->aux[1]) return false;
    const int64_t ng = (int64_t)W->aux_bytes[0];
    return ng > 0 && ng <= W->cols && ng <= KVQ_SLIM_PK_MAX_GROUPS && W->cols % ng == 0 && (W->cols / ng) % UNIT == 0;
}

const kvq_packed_kernel *kvq_slim_pk_kernel(int isa, int *R) {
    if (isa >= KVQ_ISA_AVX512) return *R = 32, &kvq_slim_x32_vnni;
    if (isa >= KVQ_ISA_AVX2) return *R = 8, &kvq_slim_x8_avx2;
    return NULL;
}

static uint64_t rg_size(const kvq_matw *W, int R) {
    return (4 * (uint64_t)R * W->aux_bytes[0] + (uint64_t)R * W->row_bytes + 63) / 64 * 64;
}
static uint64_t data_offset(int64_t ng) { return (sizeof(kvq_slim_pk_hdr) + 2 * (uint64_t)ng + 63) / 64 * 64; }

size_t kvq_slim_pk_size(const kvq_matw *W, int R) {
    return data_offset((int64_t)W->aux_bytes[0]) + rg_size(W, R) * (uint64_t)((W->rows + R - 1) / R);
}

void kvq_slim_pk_init(const kvq_matw *W, int R, void *dst) {
    const int64_t ng = (int64_t)W->aux_bytes[0];
    const int8_t *bits = W->aux[0];
    kvq_slim_pk_hdr h = {PK_MAGIC,      (int32_t)ng,   (int32_t)(W->cols / ng), kvq_slim_bits(W->type), R, W->cols,
                         W->rows,       rg_size(W, R), data_offset(ng),         {0}};
    memset(dst, 0, h.data_off);
    uint16_t *order = (uint16_t *)((uint8_t *)dst + sizeof h);
    int64_t k = 0;
    for (int b = 1; b <= KVQ_SLIM_MAX_BITS; b++)
        for (int64_t g = 0; g < ng; g++)
            if (bits[g] == b) order[k++] = (uint16_t)g, h.nw[b]++;
    memcpy(dst, &h, sizeof h);
}

/* Byte and bit position of value v of row r in each plane of registers of
 * 4R bytes (slim_pk.h). */
static inline size_t at2(int R, int r, int v, int *sh) {
    *sh = 2 * (v % 16 / 4);
    return (size_t)(4 * R * (v / 16) + 4 * r + v % 4);
}
static inline size_t at1(int R, int r, int v, int *sh) {
    *sh = v % 32 / 4;
    return (size_t)(4 * R * (v / 32) + 4 * r + v % 4);
}
static inline size_t at4(int R, int r, int v, int *sh) {
    *sh = 4 * (v % 8 / 4);
    return (size_t)(4 * R * (v / 8) + 4 * r + v % 4);
}

/* Bytes of a unit (128 values of R rows) of width b. */
static inline size_t unit_bytes(int R, int b) { return (size_t)16 * R * b; }

/* Row r's 128 codes q into (or out of) a unit of width b at p. The planes
 * of the top bit start after the low bits' plane: 8 registers of 2 bits,
 * 16 of 4. */
static void put_unit(const uint8_t *q, int b, int R, int r, uint8_t *p) {
    for (int v = 0; v < UNIT; v++) {
        int sh;
        size_t i;
        if (b == 1) i = at1(R, r, v, &sh), p[i] |= (uint8_t)((q[v] & 1) << sh);
        if (b == 2 || b == 3) i = at2(R, r, v, &sh), p[i] |= (uint8_t)((q[v] & 3) << sh);
        if (b == 3) i = at1(R, r, v, &sh), p[32 * R + i] |= (uint8_t)(((q[v] >> 2) & 1) << sh);
        if (b == 4 || b == 5) i = at4(R, r, v, &sh), p[i] |= (uint8_t)((q[v] & 15) << sh);
        if (b == 5) i = at1(R, r, v, &sh), p[64 * R + i] |= (uint8_t)(((q[v] >> 4) & 1) << sh);
    }
}
static void get_unit(const uint8_t *p, int b, int R, int r, uint8_t *q) {
    for (int v = 0; v < UNIT; v++) {
        int sh, c = 0;
        size_t i;
        if (b == 1) i = at1(R, r, v, &sh), c = (p[i] >> sh) & 1;
        if (b == 2 || b == 3) i = at2(R, r, v, &sh), c = (p[i] >> sh) & 3;
        if (b == 3) i = at1(R, r, v, &sh), c |= ((p[32 * R + i] >> sh) & 1) << 2;
        if (b == 4 || b == 5) i = at4(R, r, v, &sh), c = (p[i] >> sh) & 15;
        if (b == 5) i = at1(R, r, v, &sh), c |= ((p[64 * R + i] >> sh) & 1) << 4;
        q[v] = (uint8_t)c;
    }
}

/* d and m of row `lane` in a group that starts at gp */
static void dm_at(const uint8_t *gp, int R, int lane, float *d, float *m) {
    kvq_f16 dh, mh;
    memcpy(&dh, gp + 2 * lane, 2);
    memcpy(&mh, gp + 2 * R + 2 * lane, 2);
    *d = kvq_f16_to_f32(dh);
    *m = kvq_f16_to_f32(mh);
}
/* The width of the group at position k (the positions go by width). */
static int pos_width(const kvq_slim_pk_hdr *h, int64_t k) {
    int b = 1;
    for (int64_t end = h->nw[1]; k >= end && b < KVQ_SLIM_MAX_BITS;) end += h->nw[++b];
    return b;
}

void kvq_slim_pk_pack(const kvq_matw *W, int64_t r0, int64_t r1, void *dst) {
    const int64_t ng = (int64_t)W->aux_bytes[0], G = W->cols / ng;
    const int8_t *bits = W->aux[0];
    const kvq_f16 *dm = W->aux[1];
    const kvq_slim_pk_hdr *h = kvq_slim_pk_header(dst);
    const int R = h->R;
    const uint16_t *order = kvq_slim_pk_order(dst);
    /* each group's start in a file row; on the stack, so that packing has no
     * failure to report (kvq_slim_pk_fits bounds ng) */
    uint64_t off[KVQ_SLIM_PK_MAX_GROUPS];
    for (int64_t g = 0, o = 0; g < ng; o += G * bits[g] / 8, g++) off[g] = (uint64_t)o;
    uint8_t q[UNIT];
    for (int64_t oi = r0 / R; oi * R < r1; oi++) {
        uint8_t *op = (uint8_t *)kvq_slim_pk_rg(dst, oi);
        memset(op, 0, h->rg_bytes); /* the rows past the end stay zero */
        for (int64_t r = oi * R; r < oi * R + R && r < W->rows; r++) {
            const int lane = (int)(r % R);
            uint8_t *cp = op;
            for (int64_t k = 0; k < ng; k++) {
                const int64_t g = order[k];
                const int b = bits[g];
                const uint8_t *src = (const uint8_t *)W->data + (size_t)r * W->row_bytes + off[g];
                memcpy(cp + 2 * lane, &dm[(size_t)(r * ng + g) * 2], 2);
                memcpy(cp + 2 * R + 2 * lane, &dm[(size_t)(r * ng + g) * 2 + 1], 2);
                cp += 4 * R;
                for (int64_t u = 0; u < G / UNIT; u++) {
                    for (int c = 0; c < UNIT / 32; c++) {
                        kvq_slim_unpack_chunk(src, b, q + 32 * c);
                        src += kvq_slim_chunk_bytes(b);
                    }
                    put_unit(q, b, R, lane, cp + u * unit_bytes(R, b));
                }
                cp += G / UNIT * unit_bytes(R, b);
            }
        }
    }
}

size_t kvq_slim_pk_act_size(int64_t cols) { return (size_t)(cols / UNIT) * 8 + (size_t)cols; }

void kvq_slim_pk_act_quant(const float *x, void *act, int64_t cols) {
    const int64_t nb = cols / UNIT;
    float *dx = act, *xs = dx + nb;
    int8_t *q = (int8_t *)(xs + nb);
    for (int64_t a = 0; a < nb; a++) {
        dx[a] = kvq_slim_i8_block(x + a * UNIT, UNIT, q + a * UNIT);
        int s = 0;
        for (int i = 0; i < UNIT; i++) s += q[a * UNIT + i];
        xs[a] = dx[a] * (float)s;
    }
}

/* The kernels' arithmetic, operation for operation, so they agree bit for
 * bit: a unit's exact integer dot per row, scaled with one fused
 * multiply-add (d times the activation scale, rounded first); the
 * minimums' fused multiply-adds in their own accumulator; one add. */
static void rows_ref(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                     size_t stride, int n, float *Y, int64_t ldy) {
    (void)rows;
    const kvq_slim_pk_hdr *h = kvq_slim_pk_header(packed);
    const uint16_t *order = kvq_slim_pk_order(packed);
    const int64_t ng = h->ng, G = h->G, nu = G / UNIT;
    const int R = h->R;
    uint8_t q[UNIT];
    for (int64_t oi = r0 / R; oi * R < r1; oi++) {
        const uint8_t *op = kvq_slim_pk_rg(packed, oi);
        for (int t = 0; t < n; t++) {
            const kvq_slim_pk_act a = kvq_slim_pk_act_of(act, stride, t, cols);
            float acc[32] = {0}, macc[32] = {0};
            const uint8_t *cp = op;
            for (int64_t k = 0; k < ng; k++) {
                const int64_t g = order[k];
                const int b = pos_width(h, k);
                const uint8_t *gp = cp;
                cp += 4 * R;
                float gs = a.xs[g * nu];
                for (int64_t u = 1; u < nu; u++) gs += a.xs[g * nu + u];
                for (int lane = 0; lane < R; lane++) {
                    float d, m;
                    dm_at(gp, R, lane, &d, &m);
                    macc[lane] = fmaf(m, gs, macc[lane]);
                    for (int64_t u = 0; u < nu; u++) {
                        get_unit(cp + u * unit_bytes(R, b), b, R, lane, q);
                        const int8_t *x = a.xq + g * G + u * UNIT;
                        int32_t s = 0;
                        for (int i = 0; i < UNIT; i++) s += q[i] * x[i];
                        acc[lane] = fmaf((float)s, d * a.dx[g * nu + u], acc[lane]);
                    }
                }
                cp += G / UNIT * unit_bytes(R, b);
            }
            for (int lane = 0; lane < R; lane++) {
                const int64_t r = oi * R + lane;
                if (r >= r0 && r < r1) Y[(size_t)t * ldy + r] = acc[lane] + macc[lane];
            }
        }
    }
}

void kvq_slim_pk_dequant(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {
    (void)rows;
    const kvq_slim_pk_hdr *h = kvq_slim_pk_header(packed);
    const uint16_t *order = kvq_slim_pk_order(packed);
    const int64_t ng = h->ng, G = h->G;
    const int R = h->R;
    uint8_t q[UNIT];
    for (int64_t r = r0; r < r0 + nr; r++) {
        const uint8_t *cp = kvq_slim_pk_rg(packed, r / R);
        const int lane = (int)(r % R);
        float *o = dst + (size_t)(r - r0) * cols;
        for (int64_t k = 0; k < ng; k++) {
            const int64_t g = order[k];
            const int b = pos_width(h, k);
            float d, m;
            dm_at(cp, R, lane, &d, &m);
            cp += 4 * R;
            for (int64_t u = 0; u < G / UNIT; u++) {
                get_unit(cp + u * unit_bytes(R, b), b, R, lane, q);
                for (int i = 0; i < UNIT; i++) o[g * G + u * UNIT + i] = d * q[i] + m;
            }
            cp += G / UNIT * unit_bytes(R, b);
        }
    }
}

const kvq_packed_kernel kvq_slim_pk_ref = {
    .name = "slim (scalar)",
    .act_size = kvq_slim_pk_act_size,
    .quant = kvq_slim_pk_act_quant,
    .rows = rows_ref,
    .dequant = kvq_slim_pk_dequant,
};
