/* Every type's kernels on every ISA this machine runs, against the scalar
 * reference: quantization error bounds (NMSE), SIMD == scalar, and real
 * GGUF blocks decoding to known values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/cpu.h"
#include "core/fp16.h"
#include "io/gguf.h"
#include "kernels/ops.h"
#include "kernels/quant_ref.h"
#include "kernels/types.h"
#include "testutil.h"

#define N 4096

typedef struct { kvq_type t; double max_nmse; } type_bound;

/* Bounds for Gaussian data, about 2x the error measured with kvq's quantizers. */
static const type_bound TYPES[] = {
    {KVQ_TYPE_F32, 0},      {KVQ_TYPE_F16, 1e-7},    {KVQ_TYPE_BF16, 6e-6},   {KVQ_TYPE_Q8_0, 6e-5},
    {KVQ_TYPE_Q8_1, 6e-5},  {KVQ_TYPE_Q4_0, 1.5e-2}, {KVQ_TYPE_Q4_1, 1.3e-2}, {KVQ_TYPE_Q4_K, 1.3e-2},
    {KVQ_TYPE_Q5_K, 3e-3},  {KVQ_TYPE_Q6_K, 8e-4},   {KVQ_TYPE_Q8_K, 1.2e-4}, {KVQ_TYPE_Q5_0, 4e-3},
    {KVQ_TYPE_Q5_1, 3e-3},  {KVQ_TYPE_IQ4_NL, 1.2e-2}, {KVQ_TYPE_IQ4_XS, 1.2e-2}, {KVQ_TYPE_Q2_K, 0.15},
    {KVQ_TYPE_Q3_K, 4.2e-2},
};

static void fill(float *x, int n, uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < n; i++) x[i] = tu_randn(&s);
}

static void test_roundtrip_nmse(void **st) {
    (void)st;
    float *x = malloc(N * 4), *y = malloc(N * 4);
    void *q = malloc(N * 8);
    fill(x, N, 1);
    for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++) {
        const kvq_type_traits *tr = kvq_traits_isa(TYPES[k].t, KVQ_ISA_SCALAR);
        assert_non_null(tr);
        tr->from_float(x, q, N);
        tr->to_float(q, y, N);
        double e = tu_nmse(x, y, N);
        fprintf(stderr, "%-5s nmse %.3g (bound %.3g)\n", tr->name, e, TYPES[k].max_nmse);
        if (e > TYPES[k].max_nmse) fail_msg("%s: nmse %.3g > %.3g", tr->name, e, TYPES[k].max_nmse);
    }
    free(x); free(y); free(q);
}

/* SIMD kernels must agree with the scalar reference on identical inputs. */
static void test_isa_matches_scalar(void **st) {
    (void)st;
    float *x = malloc(N * 4), *w = malloc(N * 4), *y0 = malloc(N * 4), *y1 = malloc(N * 4);
    void *qw = malloc(N * 8), *qx = malloc(N * 8);
    fill(x, N, 2);
    fill(w, N, 3);
    int tested = 0;
    for (int isa = 1; isa < KVQ_ISA_COUNT; isa++) {
        if (!kvq_isa_supported(isa)) {
            fprintf(stderr, "SKIP: ISA %s not supported here\n", kvq_isa_str(isa));
            continue;
        }
        for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++) {
            const kvq_type_traits *ref = kvq_traits_isa(TYPES[k].t, KVQ_ISA_SCALAR);
            const kvq_type_traits *simd = kvq_traits_isa(TYPES[k].t, isa);
            const kvq_type_traits *dref = kvq_traits_isa(ref->dot_type, KVQ_ISA_SCALAR);
            ref->from_float(w, qw, N);
            simd->from_float(w, y0, 0); /* n = 0 must be a no-op */
            /* quantizers may differ by rounding mode only through dequantized values */
            void *qw2 = malloc(N * 8);
            simd->from_float(w, qw2, N);
            ref->to_float(qw, y0, N);
            simd->to_float(qw2, y1, N);
            double qe = tu_nmse(y0, y1, N);
            if (qe > 1e-6) fail_msg("%s/%s: quantize differs from scalar (nmse %.3g)", simd->name, kvq_isa_str(isa), qe);
            simd->to_float(qw, y1, N);
            if (memcmp(y0, y1, N * 4)) fail_msg("%s/%s: dequantize differs from scalar", simd->name, kvq_isa_str(isa));
            dref->from_float(x, qx, N);
            float a = ref->vec_dot(qw, qx, N), b = simd->vec_dot(qw, qx, N);
            double tol = 1e-5 * (fabs(a) + sqrt((double)N));
            if (fabs(a - b) > tol) fail_msg("%s/%s: dot %g vs scalar %g", simd->name, kvq_isa_str(isa), b, a);
            /* 1..7 blocks exercise the unrolled block loops' tails */
            for (int k = 1; k <= 7 && ref->blck > 1 && (int64_t)k * ref->blck <= N; k++) {
                const int64_t n = (int64_t)k * ref->blck;
                float a2 = ref->vec_dot(qw, qx, n), b2 = simd->vec_dot(qw, qx, n);
                if (fabs(a2 - b2) > 1e-5 * (fabs(a2) + sqrt((double)n)))
                    fail_msg("%s/%s: dot over %d blocks %g vs scalar %g", simd->name, kvq_isa_str(isa), k, b2, a2);
            }
            /* odd lengths for the float types exercise the SIMD tails */
            if (ref->blck == 1) {
                for (int n = 1; n < 70; n += 7) {
                    float a2 = ref->vec_dot(qw, qx, n), b2 = simd->vec_dot(qw, qx, n);
                    if (fabs(a2 - b2) > 1e-4 * (fabs(a2) + 1)) fail_msg("%s/%s: dot tail n=%d", simd->name, kvq_isa_str(isa), n);
                }
            }
            free(qw2);
            tested++;
        }
    }
    fprintf(stderr, "compared %d (type, ISA) kernel sets with scalar\n", tested);
    free(x); free(w); free(y0); free(y1); free(qw); free(qx);
}

/* The quantized dot equals the float dot of the dequantized operands. */
static void test_dot_consistent_with_dequant(void **st) {
    (void)st;
    float *x = malloc(N * 4), *w = malloc(N * 4), *dw = malloc(N * 4), *dx = malloc(N * 4);
    void *qw = malloc(N * 8), *qx = malloc(N * 8);
    fill(x, N, 4);
    fill(w, N, 5);
    for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++) {
        const kvq_type_traits *tr = kvq_traits_isa(TYPES[k].t, KVQ_ISA_SCALAR);
        const kvq_type_traits *dt = kvq_traits_isa(tr->dot_type, KVQ_ISA_SCALAR);
        tr->from_float(w, qw, N);
        dt->from_float(x, qx, N);
        tr->to_float(qw, dw, N);
        dt->to_float(qx, dx, N);
        double ref = 0;
        for (int i = 0; i < N; i++) ref += (double)dw[i] * dx[i];
        float got = tr->vec_dot(qw, qx, N);
        if (fabs(got - ref) > 1e-3 * sqrt((double)N)) fail_msg("%s: dot %g vs dequantized %g", tr->name, got, ref);
    }
    free(x); free(w); free(dw); free(dx); free(qw); free(qx);
}

static void test_fp16_exhaustive(void **st) {
    (void)st;
    /* every half converts to float and back unchanged (NaN payloads aside) */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kvq_f16_to_f32((kvq_f16)h);
        if (isnan(f)) continue;
        assert_int_equal(kvq_f32_to_f16(f), h);
    }
    assert_int_equal(kvq_f32_to_f16(65520.0f), 0x7c00);     /* rounds to inf */
    assert_int_equal(kvq_f32_to_f16(65519.0f), 0x7bff);     /* max half */
    assert_int_equal(kvq_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
    assert_int_equal(kvq_f32_to_bf16(1.00390625f), 0x3f80); /* tie to even */
}

static void test_real_q8_0_block(void **st) {
    (void)st;
    TU_SHARED(path, "models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    kvq_gguf g;
    assert_int_equal(kvq_gguf_open(path, &g, NULL), KVQ_OK);
    const kvq_gguf_tensor *t = kvq_gguf_tensor_find(&g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, KVQ_TYPE_Q8_0);
    /* row 5, first block: values read independently with numpy */
    const uint8_t *row = (const uint8_t *)t->data + 5 * kvq_row_size(KVQ_TYPE_Q8_0, 128);
    float y[32];
    kvq_traits(KVQ_TYPE_Q8_0)->to_float(row, y, 32);
    const int8_t q[8] = {-126, 126, 110, 23, 27, 41, -58, -71};
    for (int i = 0; i < 8; i++) assert_float_equal(y[i], q[i] * 0.00688934326171875f, 1e-7);
    kvq_gguf_close(&g);
}

/* Hand-built blocks of the types llama.cpp's mixed files add, decoded by the
 * scalar and SIMD dequantizers: each expected value is worked out from the
 * block layout as ggml's dequantize_row_* reads it (the bits set here are
 * the ones those functions index), so a kvq quantizer and dequantizer that
 * agreed on a wrong layout would fail. */
static void check_vals(int type, const void *blk, const int *idx, const float *want, int k) {
    float y[256];
    for (int isa = 0; isa < KVQ_ISA_COUNT; isa++) {
        if (!kvq_isa_supported(isa)) continue;
        const kvq_type_traits *t = kvq_traits_isa((kvq_type)type, isa);
        assert_non_null(t);
        t->to_float(blk, y, t->blck);
        for (int i = 0; i < k; i++)
            if (y[idx[i]] != want[i])
                fail_msg("%s/%s: value %d is %g, want %g", t->name, kvq_isa_str(isa), idx[i], y[idx[i]], want[i]);
    }
}

static void test_lowbit_layouts(void **st) {
    (void)st;
    uint32_t qh = 1u | (1u << 31); /* values 0 and 31 have their fifth bit */
    kvq_block_q5_0 b50 = {.d = kvq_f32_to_f16(1.0f)};
    b50.qs[0] = 0x21, b50.qs[15] = 0xF0;
    memcpy(b50.qh, &qh, 4);
    check_vals(KVQ_TYPE_Q5_0, &b50, (int[]){0, 16, 15, 31}, (float[]){1, -14, -16, 15}, 4);
    kvq_block_q5_1 b51 = {.d = kvq_f32_to_f16(0.5f), .m = kvq_f32_to_f16(-1.0f)};
    memcpy(b51.qs, b50.qs, 16);
    memcpy(b51.qh, &qh, 4);
    check_vals(KVQ_TYPE_Q5_1, &b51, (int[]){0, 16, 31}, (float[]){7.5f, 0, 14.5f}, 3);
    kvq_block_iq4_nl bnl = {.d = kvq_f32_to_f16(2.0f)};
    bnl.qs[3] = 0x9F;
    check_vals(KVQ_TYPE_IQ4_NL, &bnl, (int[]){3, 19}, (float[]){226, 26}, 2);
    /* sub-block 5's scale 43 (offset 32: 11): low nibble in the high half of
     * scales_l[2], high bits at scales_h bits 10-11 */
    kvq_block_iq4_xs bxs = {.d = kvq_f32_to_f16(1.0f), .scales_h = (uint16_t)(2u << 10)};
    bxs.scales_l[2] = 0xB0;
    bxs.qs[16 * 5 + 2] = 0x70;
    check_vals(KVQ_TYPE_IQ4_XS, &bxs, (int[]){162, 178}, (float[]){-127 * 11, -10 * 11}, 2);
    /* sub-block 5 = plane 2 (shift 4) of bytes 16..31; scale 2, min 3 */
    kvq_block_q2_K b2 = {.d = kvq_f32_to_f16(1.0f), .dmin = kvq_f32_to_f16(0.5f)};
    b2.scales[5] = 0x32;
    b2.qs[16 + 3] = 3 << 4;
    check_vals(KVQ_TYPE_Q2_K, &b2, (int[]){83, 80}, (float[]){4.5f, -1.5f}, 2);
    /* sub-block 13 = plane 2 of bytes 48..63, mask bit 6 of hmask[16..31];
     * its 6-bit scale 37 (37 - 32 = 5): low nibble in the high half of byte
     * 5, high bits at bits 6-7 of byte 9 */
    kvq_block_q3_K b3 = {.d = kvq_f32_to_f16(1.0f)};
    b3.scales[5] = 5 << 4, b3.scales[9] = 2 << 6;
    b3.qs[32 + 16 + 7] = 2 << 4;
    b3.hmask[16 + 7] = 1 << 6;
    check_vals(KVQ_TYPE_Q3_K, &b3, (int[]){16 * 13 + 7, 16 * 13 + 8, 0}, (float[]){10, -20, 128}, 3);
}

/* SwiGLU's SIMD path against the scalar one (exp approximated to ~1e-7),
 * including saturating inputs and a tail shorter than a vector. */
static void test_swiglu_simd(void **st) {
    (void)st;
    enum { M = 1000 + 7 };
    float g[M], u[M], a[M], b[M];
    uint64_t s = 5;
    for (int i = 0; i < M; i++) g[i] = 4 * tu_randn(&s), u[i] = tu_randn(&s);
    g[0] = -100, g[1] = 100, g[2] = 0, g[3] = -87.5f, g[4] = 88.5f;
    memcpy(a, g, sizeof g);
    memcpy(b, g, sizeof g);
    kvq_swiglu_ref(a, u, M);
    kvq_swiglu(b, u, M);
    double e = tu_nmse(a, b, M);
    fprintf(stderr, "swiglu (%s) vs scalar: nmse %.3g\n", kvq_isa_str(kvq_isa_active()), e);
    assert_true(e < 1e-12);
    for (int i = 0; i < 5; i++) assert_true(fabsf(a[i] - b[i]) <= 1e-6f * (1 + fabsf(a[i])));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_nmse),      cmocka_unit_test(test_isa_matches_scalar),
        cmocka_unit_test(test_dot_consistent_with_dequant), cmocka_unit_test(test_fp16_exhaustive),
        cmocka_unit_test(test_real_q8_0_block),  cmocka_unit_test(test_swiglu_simd),
        cmocka_unit_test(test_lowbit_layouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
