/* The slim types' decode layout (slim_x8.h): packing, the scalar reference
 * of its arithmetic, and the AVX2 kernel. */
#include "slim_x8.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd_x86.h"
#include "slim.h"

#define X8_MAGIC 0x38584c53u /* "SLX8" */
#define UNIT 128
/* How far ahead the kernel prefetches its codes. The hardware prefetcher
 * alone left one Zen 3 core at 9-10 GB/s on a matrix in DRAM (2-bit, 8192
 * columns), 13 GB/s with this (2 to 16 KiB measured; 4 KiB is as good as
 * any), against 14-16 GB/s in L2. */
#define PF_DIST 4096

bool kvq_slim_x8_fits(const kvq_matw *W) {
    if (!kvq_slim_bits(W->type) || !W->aux || !W->aux_bytes || !W->aux[0] || !W->aux[1]) return false;
    const int64_t ng = (int64_t)W->aux_bytes[0];
    return ng > 0 && ng <= W->cols && ng <= UINT16_MAX && W->cols % ng == 0 && (W->cols / ng) % UNIT == 0;
}

static uint64_t octet_size(const kvq_matw *W) {
    return (32 * W->aux_bytes[0] + 8 * (uint64_t)W->row_bytes + 63) / 64 * 64;
}
static uint64_t data_offset(int64_t ng) { return (sizeof(kvq_slim_x8_hdr) + 2 * (uint64_t)ng + 63) / 64 * 64; }

size_t kvq_slim_x8_size(const kvq_matw *W) {
    return data_offset((int64_t)W->aux_bytes[0]) + octet_size(W) * (uint64_t)((W->rows + 7) / 8);
}

void kvq_slim_x8_init(const kvq_matw *W, void *dst) {
    const int64_t ng = (int64_t)W->aux_bytes[0];
    const int8_t *bits = W->aux[0];
    kvq_slim_x8_hdr h = {X8_MAGIC, (int32_t)ng, (int32_t)(W->cols / ng), kvq_slim_bits(W->type), W->cols, W->rows,
                         octet_size(W), 32 * (uint64_t)ng, data_offset(ng), {0}};
    memset(dst, 0, h.data_off);
    uint16_t *order = (uint16_t *)((uint8_t *)dst + sizeof h);
    int64_t k = 0;
    for (int b = 1; b <= KVQ_SLIM_MAX_BITS; b++)
        for (int64_t g = 0; g < ng; g++)
            if (bits[g] == b) order[k++] = (uint16_t)g, h.nw[b]++;
    memcpy(dst, &h, sizeof h);
}

/* Byte and bit position of value v of row r in each plane (slim_x8.h). */
static inline size_t at2(int r, int v, int *sh) { *sh = 2 * (v % 16 / 4); return (size_t)(32 * (v / 16) + 4 * r + v % 4); }
static inline size_t at1(int r, int v, int *sh) { *sh = v % 32 / 4; return (size_t)(32 * (v / 32) + 4 * r + v % 4); }
static inline size_t at4(int r, int v, int *sh) { *sh = 4 * (v % 8 / 4); return (size_t)(32 * (v / 8) + 4 * r + v % 4); }

/* Row r's 128 codes q into (or out of) a unit of width b at p. */
static void put_unit(const uint8_t *q, int b, int r, uint8_t *p) {
    for (int v = 0; v < UNIT; v++) {
        int sh;
        size_t i;
        if (b == 1) i = at1(r, v, &sh), p[i] |= (uint8_t)((q[v] & 1) << sh);
        if (b == 2 || b == 3) i = at2(r, v, &sh), p[i] |= (uint8_t)((q[v] & 3) << sh);
        if (b == 3) i = at1(r, v, &sh), p[256 + i] |= (uint8_t)(((q[v] >> 2) & 1) << sh);
        if (b == 4 || b == 5) i = at4(r, v, &sh), p[i] |= (uint8_t)((q[v] & 15) << sh);
        if (b == 5) i = at1(r, v, &sh), p[512 + i] |= (uint8_t)(((q[v] >> 4) & 1) << sh);
    }
}
static void get_unit(const uint8_t *p, int b, int r, uint8_t *q) {
    for (int v = 0; v < UNIT; v++) {
        int sh, c = 0;
        size_t i;
        if (b == 1) i = at1(r, v, &sh), c = (p[i] >> sh) & 1;
        if (b == 2 || b == 3) i = at2(r, v, &sh), c = (p[i] >> sh) & 3;
        if (b == 3) i = at1(r, v, &sh), c |= ((p[256 + i] >> sh) & 1) << 2;
        if (b == 4 || b == 5) i = at4(r, v, &sh), c = (p[i] >> sh) & 15;
        if (b == 5) i = at1(r, v, &sh), c |= ((p[512 + i] >> sh) & 1) << 4;
        q[v] = (uint8_t)c;
    }
}

static const kvq_slim_x8_hdr *hdr(const void *packed) { return packed; }
static const uint16_t *hdr_order(const void *packed) {
    return (const uint16_t *)((const uint8_t *)packed + sizeof(kvq_slim_x8_hdr));
}
static const uint8_t *octet(const void *packed, int64_t o) {
    const kvq_slim_x8_hdr *h = hdr(packed);
    return (const uint8_t *)packed + h->data_off + (uint64_t)o * h->octet_bytes;
}
/* d and m of row `lane` for the group at position k of an octet */
static void dm_at(const uint8_t *op, int64_t k, int lane, float *d, float *m) {
    kvq_f16 dh, mh;
    memcpy(&dh, op + 32 * k + 2 * lane, 2);
    memcpy(&mh, op + 32 * k + 16 + 2 * lane, 2);
    *d = kvq_f16_to_f32(dh);
    *m = kvq_f16_to_f32(mh);
}
/* The width of the group at position k (the positions go by width). */
static int pos_width(const kvq_slim_x8_hdr *h, int64_t k) {
    int b = 1;
    for (int64_t end = h->nw[1]; k >= end && b < KVQ_SLIM_MAX_BITS;) end += h->nw[++b];
    return b;
}

void kvq_slim_x8_pack(const kvq_matw *W, int64_t r0, int64_t r1, void *dst) {
    const int64_t ng = (int64_t)W->aux_bytes[0], G = W->cols / ng;
    const int8_t *bits = W->aux[0];
    const kvq_f16 *dm = W->aux[1];
    const kvq_slim_x8_hdr *h = hdr(dst);
    const uint16_t *order = hdr_order(dst);
    uint64_t *off = malloc((size_t)ng * sizeof *off); /* each group's start in a file row */
    if (!off) return;
    for (int64_t g = 0, o = 0; g < ng; o += G * bits[g] / 8, g++) off[g] = (uint64_t)o;
    uint8_t q[UNIT];
    for (int64_t oi = r0 / 8; oi * 8 < r1; oi++) {
        uint8_t *op = (uint8_t *)octet(dst, oi);
        memset(op, 0, h->octet_bytes); /* the rows past the end stay zero */
        for (int64_t r = oi * 8; r < oi * 8 + 8 && r < W->rows; r++) {
            const int lane = (int)(r % 8);
            uint8_t *cp = op + h->dm_bytes;
            for (int64_t k = 0; k < ng; k++) {
                const int64_t g = order[k];
                const int b = bits[g];
                const uint8_t *src = (const uint8_t *)W->data + (size_t)r * W->row_bytes + off[g];
                memcpy(op + 32 * k + 2 * lane, &dm[(size_t)(r * ng + g) * 2], 2);
                memcpy(op + 32 * k + 16 + 2 * lane, &dm[(size_t)(r * ng + g) * 2 + 1], 2);
                for (int64_t u = 0; u < G / UNIT; u++) {
                    for (int c = 0; c < UNIT / 32; c++) {
                        kvq_slim_unpack_chunk(src, b, q + 32 * c);
                        src += kvq_slim_chunk_bytes(b);
                    }
                    put_unit(q, b, lane, cp + u * 128 * b);
                }
                cp += G * b; /* G/128 units of 128 b bytes */
            }
        }
    }
    free(off);
}

size_t kvq_slim_x8_act_size(int64_t cols) { return (size_t)(cols / UNIT) * 8 + (size_t)cols; }

void kvq_slim_x8_act_quant(const float *x, void *act, int64_t cols) {
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

/* The activation layout's parts for one token. */
typedef struct {
    const float *dx, *xs;
    const int8_t *xq;
} x8_act;
static x8_act act_of(const void *act, size_t stride, int t, int64_t cols) {
    const float *dx = (const float *)((const uint8_t *)act + (size_t)t * stride);
    return (x8_act){dx, dx + cols / UNIT, (const int8_t *)(dx + 2 * (cols / UNIT))};
}

/* The AVX2 kernel's arithmetic, operation for operation, so the two agree
 * bit for bit: a unit's exact integer dot per row, scaled with one fused
 * multiply-add (d times the activation scale, rounded first); the
 * minimums' fused multiply-adds in their own accumulator; one add. */
static void rows_ref(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                     size_t stride, int n, float *Y, int64_t ldy) {
    (void)rows;
    const kvq_slim_x8_hdr *h = hdr(packed);
    const uint16_t *order = hdr_order(packed);
    const int64_t ng = h->ng, G = h->G, nu = G / UNIT;
    uint8_t q[UNIT];
    for (int64_t oi = r0 / 8; oi * 8 < r1; oi++) {
        const uint8_t *op = octet(packed, oi);
        for (int t = 0; t < n; t++) {
            const x8_act a = act_of(act, stride, t, cols);
            float acc[8] = {0}, macc[8] = {0};
            const uint8_t *cp = op + h->dm_bytes;
            for (int64_t k = 0; k < ng; k++) {
                const int64_t g = order[k];
                const int b = pos_width(h, k);
                float gs = a.xs[g * nu];
                for (int64_t u = 1; u < nu; u++) gs += a.xs[g * nu + u];
                for (int lane = 0; lane < 8; lane++) {
                    float d, m;
                    dm_at(op, k, lane, &d, &m);
                    macc[lane] = fmaf(m, gs, macc[lane]);
                    for (int64_t u = 0; u < nu; u++) {
                        get_unit(cp + u * 128 * b, b, lane, q);
                        const int8_t *x = a.xq + g * G + u * UNIT;
                        int32_t s = 0;
                        for (int i = 0; i < UNIT; i++) s += q[i] * x[i];
                        acc[lane] = fmaf((float)s, d * a.dx[g * nu + u], acc[lane]);
                    }
                }
                cp += G * b;
            }
            for (int lane = 0; lane < 8; lane++) {
                const int64_t r = oi * 8 + lane;
                if (r >= r0 && r < r1) Y[(size_t)t * ldy + r] = acc[lane] + macc[lane];
            }
        }
    }
}

static void dequant_x8(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t nr, float *dst) {
    (void)rows;
    const kvq_slim_x8_hdr *h = hdr(packed);
    const uint16_t *order = hdr_order(packed);
    const int64_t ng = h->ng, G = h->G;
    uint8_t q[UNIT];
    for (int64_t r = r0; r < r0 + nr; r++) {
        const uint8_t *op = octet(packed, r / 8), *cp = op + h->dm_bytes;
        const int lane = (int)(r % 8);
        float *o = dst + (size_t)(r - r0) * cols;
        for (int64_t k = 0; k < ng; k++) {
            const int64_t g = order[k];
            const int b = pos_width(h, k);
            float d, m;
            dm_at(op, k, lane, &d, &m);
            for (int64_t u = 0; u < G / UNIT; u++) {
                get_unit(cp + u * 128 * b, b, lane, q);
                for (int i = 0; i < UNIT; i++) o[g * G + u * UNIT + i] = d * q[i] + m;
            }
            cp += G * b;
        }
    }
}

const kvq_packed_kernel kvq_slim_x8_ref = {
    .name = "slim x8 (scalar)",
    .act_size = kvq_slim_x8_act_size,
    .quant = kvq_slim_x8_act_quant,
    .rows = rows_ref,
    .dequant = dequant_x8,
};

/* ---- AVX2 ---- */
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

/* The same bytes as kvq_slim_x8_act_quant (simd_x86.h says why). */
T_AVX2 static void act_quant_avx2(const float *x, void *act, int64_t cols) {
    const int64_t nb = cols / UNIT;
    float *dx = act, *xs = dx + nb;
    int8_t *q = (int8_t *)(xs + nb);
    for (int64_t a = 0; a < nb; a++) {
        const float *v = x + a * UNIT;
        const float d = kvq_absmax_avx2(v, UNIT) / 127.0f;
        const __m256 id = _mm256_set1_ps(d > 0 ? 1.0f / d : 0.0f);
        __m256i sum = _mm256_setzero_si256();
        for (int c = 0; c < UNIT; c += 32) {
            const __m256i b = kvq_i8x32_avx2(v + c, id);
            _mm256_storeu_si256((__m256i *)(q + a * UNIT + c), b);
            sum = _mm256_add_epi32(sum, kvq_i8_sum4_avx2(b));
        }
        dx[a] = d;
        xs[a] = d * (float)kvq_hsum8_epi32(sum);
    }
}

/* Shifts by a count that is a constant once the loops are unrolled; a
 * negative count shifts the other way. */
T_AVX2 static inline __m256i shr16(__m256i v, int n) {
    return n > 0 ? _mm256_srli_epi16(v, n) : n < 0 ? _mm256_slli_epi16(v, -n) : v;
}

/* One unit of width B for the 8 rows: 32 registers of codes (4 values of
 * each row), each multiplied by a broadcast word of 4 activations. The
 * int16 pair sums are added in int16 while they cannot overflow (EVERY
 * products: at most EVERY x 2 x (2^B - 1) x 127 < 32768), then widened. The
 * result is the exact integer dot of each row, one per lane. The outer loop
 * (a 1-bit plane register's 32 values) stays a loop: fully unrolled, the
 * compiler computed all 32 products first and spilled them. */
#define X8_UNIT(B, EVERY)                                                                                             \
    T_AVX2 static inline __m256i unit##B(const uint8_t *p, const int32_t *xa) {                                      \
        const __m256i ones = _mm256_set1_epi16(1);                                                                   \
        const __m256i lo_mask = _mm256_set1_epi8((B) == 1 ? 1 : (B) <= 3 ? 3 : 15);                                  \
        const __m256i hi_mask = _mm256_set1_epi8((char)((B) == 3 ? 4 : 16));                                         \
        __m256i s32 = _mm256_setzero_si256(), s16 = s32;                                                             \
        _Pragma("GCC unroll 1") for (int j = 0; j < 4; j++) {                                                        \
            _Pragma("GCC unroll 8") for (int kk = 0; kk < 8; kk++) {                                                 \
                const int k = 8 * j + kk; /* values 4k..4k+3 of each row */                                          \
                __m256i c;                                                                                           \
                if ((B) == 1)                                                                                        \
                    c = shr16(_mm256_loadu_si256((const __m256i *)(p + 32 * j)), kk);                                \
                else if ((B) <= 3)                                                                                   \
                    c = shr16(_mm256_loadu_si256((const __m256i *)(p + 32 * (2 * j + kk / 4))), 2 * (kk % 4));       \
                else                                                                                                 \
                    c = shr16(_mm256_loadu_si256((const __m256i *)(p + 32 * (4 * j + kk / 2))), 4 * (kk % 2));       \
                c = _mm256_and_si256(c, lo_mask);                                                                    \
                if ((B) == 3 || (B) == 5) { /* the top bit, from the 1-bit plane, moved to bit B-1 */              \
                    const __m256i h = _mm256_loadu_si256((const __m256i *)(p + 32 * ((B) == 3 ? 8 : 16) + 32 * j));  \
                    c = _mm256_or_si256(c, _mm256_and_si256(shr16(h, kk - ((B) - 1)), hi_mask));                     \
                }                                                                                                    \
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c, _mm256_set1_epi32(xa[k])));                      \
                if (k % (EVERY) == (EVERY) - 1) {                                                                    \
                    s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, ones));                                       \
                    s16 = _mm256_setzero_si256();                                                                    \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
        return s32;                                                                                                  \
    }
X8_UNIT(1, 32)
X8_UNIT(2, 32)
X8_UNIT(3, 16)
X8_UNIT(4, 8)
X8_UNIT(5, 4)

/* The n groups of width B from position k0: per group its (d, m) for the
 * 8 rows, then its units. Returns the codes pointer past them. */
#define X8_RUN(B)                                                                                                     \
    T_AVX2 static inline const uint8_t *run##B(const uint8_t *op, const uint8_t *cp, const uint16_t *order,          \
                                               int64_t k0, int64_t n, int64_t G, x8_act a, __m256 *acc,             \
                                               __m256 *macc) {                                                      \
        const int64_t nu = G / UNIT;                                                                                 \
        __m256 ac = *acc, mc = *macc;                                                                                \
        for (int64_t k = k0; k < k0 + n; k++, cp += G * (B)) {                                                       \
            const int64_t g = order[k];                                                                              \
            const __m256 d8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(op + 32 * k)));                      \
            const __m256 m8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(op + 32 * k + 16)));                 \
            float gs = a.xs[g * nu];                                                                                 \
            for (int64_t u = 1; u < nu; u++) gs += a.xs[g * nu + u];                                                 \
            mc = _mm256_fmadd_ps(m8, _mm256_set1_ps(gs), mc);                                                        \
            for (int64_t u = 0; u < nu; u++) {                                                                       \
                for (int pf = 0; pf < 128 * (B); pf += 64)                                                           \
                    _mm_prefetch((const char *)cp + u * 128 * (B) + PF_DIST + pf, _MM_HINT_T0);                      \
                const __m256i s = unit##B(cp + u * 128 * (B), (const int32_t *)(a.xq + g * G + u * UNIT));           \
                ac = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(d8, _mm256_set1_ps(a.dx[g * nu + u])), ac);  \
            }                                                                                                        \
        }                                                                                                            \
        *acc = ac;                                                                                                   \
        *macc = mc;                                                                                                  \
        return cp;                                                                                                   \
    }
X8_RUN(1)
X8_RUN(2)
X8_RUN(3)
X8_RUN(4)
X8_RUN(5)

T_AVX2 static void rows_avx2(const void *packed, int64_t cols, int64_t rows, int64_t r0, int64_t r1, const void *act,
                             size_t stride, int n, float *Y, int64_t ldy) {
    (void)rows;
    const kvq_slim_x8_hdr *h = hdr(packed);
    const uint16_t *order = hdr_order(packed);
    const int64_t G = h->G;
    for (int64_t oi = r0 / 8; oi * 8 < r1; oi++) {
        const uint8_t *op = octet(packed, oi);
        for (int t = 0; t < n; t++) {
            const x8_act a = act_of(act, stride, t, cols);
            __m256 acc = _mm256_setzero_ps(), macc = acc;
            const uint8_t *cp = op + h->dm_bytes;
            int64_t k = 0;
            /* one loop per width present */
            if (h->nw[1]) cp = run1(op, cp, order, k, h->nw[1], G, a, &acc, &macc), k += h->nw[1];
            if (h->nw[2]) cp = run2(op, cp, order, k, h->nw[2], G, a, &acc, &macc), k += h->nw[2];
            if (h->nw[3]) cp = run3(op, cp, order, k, h->nw[3], G, a, &acc, &macc), k += h->nw[3];
            if (h->nw[4]) cp = run4(op, cp, order, k, h->nw[4], G, a, &acc, &macc), k += h->nw[4];
            if (h->nw[5]) run5(op, cp, order, k, h->nw[5], G, a, &acc, &macc);
            float out[8];
            _mm256_storeu_ps(out, _mm256_add_ps(acc, macc));
            for (int lane = 0; lane < 8; lane++) {
                const int64_t r = oi * 8 + lane;
                if (r >= r0 && r < r1) Y[(size_t)t * ldy + r] = out[lane];
            }
        }
    }
}

const kvq_packed_kernel kvq_slim_x8_avx2 = {
    .name = "slim x8 (AVX2)",
    .act_size = kvq_slim_x8_act_size,
    .quant = act_quant_avx2,
    .rows = rows_avx2,
    .dequant = dequant_x8,
};
