/* SliM-LLM's mixed-precision type: packing, validation and the scalar
 * reference kernels (layout in slim.h). */
#include "slim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int kvq_slim_bits(int type) {
    switch (type) {
    case KVQ_TYPE_SLIM2: return 2;
    case KVQ_TYPE_SLIM3: return 3;
    case KVQ_TYPE_SLIM4: return 4;
    default: return 0;
    }
}

int kvq_slim_type(int bits) {
    return bits == 2 ? KVQ_TYPE_SLIM2 : bits == 3 ? KVQ_TYPE_SLIM3 : bits == 4 ? KVQ_TYPE_SLIM4 : -1;
}

static void pack1(const uint8_t *q, int shift, uint8_t *dst) {
    uint32_t v = 0;
    for (int i = 0; i < 32; i++) v |= (uint32_t)((q[i] >> shift) & 1) << i;
    for (int i = 0; i < 4; i++) dst[i] = (uint8_t)(v >> (8 * i));
}
static void pack2(const uint8_t *q, uint8_t *dst) {
    for (int i = 0; i < 8; i++)
        dst[i] = (uint8_t)((q[i] & 3) | (q[8 + i] & 3) << 2 | (q[16 + i] & 3) << 4 | (q[24 + i] & 3) << 6);
}
static void pack4(const uint8_t *q, uint8_t *dst) {
    for (int i = 0; i < 16; i++) dst[i] = (uint8_t)((q[i] & 15) | (q[16 + i] & 15) << 4);
}

void kvq_slim_pack_chunk(const uint8_t *q, int b, uint8_t *dst) {
    switch (b) {
    case 1: pack1(q, 0, dst); break;
    case 2: pack2(q, dst); break;
    case 3: pack2(q, dst); pack1(q, 2, dst + 8); break;
    case 4: pack4(q, dst); break;
    case 5: pack4(q, dst); pack1(q, 4, dst + 16); break;
    default: break;
    }
}

static void unpack1(const uint8_t *s, int shift, uint8_t *q) {
    for (int i = 0; i < 32; i++) q[i] |= (uint8_t)(((s[i / 8] >> (i % 8)) & 1) << shift);
}

void kvq_slim_unpack_chunk(const uint8_t *s, int b, uint8_t *q) {
    memset(q, 0, 32);
    if (b == 2 || b == 3)
        for (int i = 0; i < 32; i++) q[i] = (s[i % 8] >> (2 * (i / 8))) & 3;
    if (b == 4 || b == 5)
        for (int i = 0; i < 32; i++) q[i] = (s[i % 16] >> (4 * (i / 16))) & 15;
    if (b == 1) unpack1(s, 0, q);
    if (b == 3) unpack1(s + 8, 2, q);
    if (b == 5) unpack1(s + 16, 4, q);
}

const char *kvq_slim_check(int type, int64_t cols, int64_t rows, const void *const *aux, const uint64_t *aux_bytes,
                           char *msg, size_t cap) {
    const int N = kvq_slim_bits(type);
    const uint64_t ng = aux_bytes[0];
    if (!N) return snprintf(msg, cap, "not a slim type"), msg;
    if (ng == 0 || ng > (uint64_t)cols || cols % (int64_t)ng || (cols / (int64_t)ng) % KVQ_SLIM_CHUNK)
        return snprintf(msg, cap, "its bit map has %llu groups, which do not cut rows of %lld into groups of a multiple "
                                  "of 32", (unsigned long long)ng, (long long)cols), msg;
    const int8_t *bits = aux[0];
    int64_t sum = 0;
    for (uint64_t g = 0; g < ng; g++) {
        if (bits[g] < 1 || bits[g] > KVQ_SLIM_MAX_BITS)
            return snprintf(msg, cap, "group %llu has width %d (1..%d)", (unsigned long long)g, bits[g],
                            KVQ_SLIM_MAX_BITS), msg;
        sum += bits[g];
    }
    if (sum != (int64_t)ng * N)
        return snprintf(msg, cap, "its group widths sum to %lld, not %llu x %d (they must average exactly %d)",
                        (long long)sum, (unsigned long long)ng, N, N), msg;
    if (aux_bytes[1] != ng * 2 * 2 * (uint64_t)rows)
        return snprintf(msg, cap, "its scale table has %llu bytes, not %llu (fp16 d and m per row and group)",
                        (unsigned long long)aux_bytes[1], (unsigned long long)(ng * 4 * (uint64_t)rows)), msg;
    return NULL;
}

size_t kvq_slim_act_size(int64_t cols) {
    return (size_t)(cols / KVQ_SLIM_ABLK(cols)) * 4 + (size_t)(cols / 32) * 4 + (size_t)cols;
}

float kvq_slim_i8_block(const float *v, int n, int8_t *q) {
    float amax = 0;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(v[i]));
    const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) q[i] = (int8_t)lrintf(v[i] * id);
    return d;
}

void kvq_slim_act_quant(const float *x, void *act, int64_t cols) {
    const int64_t A = KVQ_SLIM_ABLK(cols), na = cols / A, nc = cols / 32;
    float *dx = act, *xs = dx + na;
    int8_t *q = (int8_t *)(xs + nc);
    for (int64_t a = 0; a < na; a++) {
        dx[a] = kvq_slim_i8_block(x + a * A, (int)A, q + a * A);
        for (int64_t c = a * A / 32; c < (a + 1) * A / 32; c++) {
            int s = 0;
            for (int i = 0; i < 32; i++) s += q[c * 32 + i];
            xs[c] = dx[a] * (float)s;
        }
    }
}

void kvq_slim_rows_ref(const kvq_matw *W, int64_t r0, int64_t r1, const void *act, float *y) {
    const int64_t cols = W->cols, ng = (int64_t)W->aux_bytes[0], G = cols / ng, nc = cols / 32;
    const int64_t A = KVQ_SLIM_ABLK(cols), na = cols / A;
    const int8_t *bits = W->aux[0];
    const kvq_f16 *dm = W->aux[1];
    const float *dx = act, *xs = dx + na;
    const int8_t *xq = (const int8_t *)(xs + nc);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)W->data + (size_t)r * W->row_bytes;
        const kvq_f16 *rdm = dm + (size_t)r * ng * 2;
        float acc = 0;
        for (int64_t g = 0; g < ng; g++) {
            const int b = bits[g];
            const float d = kvq_f16_to_f32(rdm[2 * g]), m = kvq_f16_to_f32(rdm[2 * g + 1]);
            float sd = 0, sm = 0;
            for (int64_t c = g * G / 32; c < (g + 1) * G / 32; c++) {
                uint8_t q[32];
                kvq_slim_unpack_chunk(p, b, q);
                p += kvq_slim_chunk_bytes(b);
                int32_t s = 0;
                for (int i = 0; i < 32; i++) s += q[i] * xq[c * 32 + i];
                sd += dx[c * 32 / A] * (float)s;
                sm += xs[c];
            }
            acc += d * sd + m * sm;
        }
        y[r - r0] = acc;
    }
}

void kvq_slim_dequant(const kvq_matw *W, int64_t r0, int64_t nr, float *dst) {
    const int64_t cols = W->cols, ng = (int64_t)W->aux_bytes[0], G = cols / ng;
    const int8_t *bits = W->aux[0];
    const kvq_f16 *dm = W->aux[1];
    for (int64_t r = r0; r < r0 + nr; r++) {
        const uint8_t *p = (const uint8_t *)W->data + (size_t)r * W->row_bytes;
        const kvq_f16 *rdm = dm + (size_t)r * ng * 2;
        float *o = dst + (size_t)(r - r0) * cols;
        for (int64_t g = 0; g < ng; g++) {
            const float d = kvq_f16_to_f32(rdm[2 * g]), m = kvq_f16_to_f32(rdm[2 * g + 1]);
            for (int64_t c = 0; c < G / 32; c++) {
                uint8_t q[32];
                kvq_slim_unpack_chunk(p, bits[g], q);
                p += kvq_slim_chunk_bytes(bits[g]);
                for (int i = 0; i < 32; i++) o[g * G + c * 32 + i] = d * q[i] + m;
            }
        }
    }
}

const kvq_matvec_kernel kvq_slim_kernel_ref = {
    .act_size = kvq_slim_act_size,
    .quant = kvq_slim_act_quant,
    .rows_w = kvq_slim_rows_ref,
    .dequant = kvq_slim_dequant,
};
