/* The Q4_0 decode kernel on AVX-512 VBMI (kernels/gemv_q4_0.c) against its
 * scalar reference and the f32 dot product, for row lengths with and without
 * a short last chunk and rows at every alignment the aligned-line path and
 * the exact-load fallback can meet. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/cpu.h"
#include "kernels/gemv_q4_0.h"
#include "kernels/quant_ref.h"
#include "kernels/types.h"
#include "testutil.h"

static const int NBLK[] = {1, 3, 4, 5, 8, 24, 27, 64};
static const int OFFS[] = {0, 2, 8, 18, 40, 62};

static void test_q4_0x4_matches(void **st) {
    (void)st;
    const bool vbmi = kvq_isa_vbmi();
    if (!vbmi) fprintf(stderr, "SKIP part: no AVX-512 VBMI here, only the scalar reference is checked\n");
    uint64_t seed = 5;
    for (size_t bi = 0; bi < sizeof NBLK / sizeof NBLK[0]; bi++) {
        const int cols = 32 * NBLK[bi];
        float *w = malloc(sizeof(float) * cols), *wf = malloc(sizeof(float) * cols), *x = malloc(sizeof(float) * cols);
        for (int i = 0; i < cols; i++) w[i] = tu_randn(&seed), x[i] = tu_randn(&seed) * (i % 61 == 0 ? 10.0f : 1.0f);
        const size_t rb = kvq_row_size(KVQ_TYPE_Q4_0, cols);
        uint8_t *buf = malloc(rb + 64);
        void *act = malloc(kvq_q4_0x4_act_size(cols));
        kvq_q4_0x4_quant(x, act, cols);
        for (size_t oi = 0; oi < sizeof OFFS / sizeof OFFS[0]; oi++) {
            uint8_t *row = buf + OFFS[oi];
            kvq_q4_0_from_float_ref(w, row, cols);
            kvq_q4_0_to_float_ref(row, wf, cols);
            /* the activations' int8 rounding moves each by at most half its
             * block's step (amax / 127), which bounds the error */
            double exact = 0, mag = 0, bound = 0;
            for (int b = 0; b < cols / 32; b++) {
                double amax = 0, wsum = 0;
                for (int i = 32 * b; i < 32 * b + 32; i++) {
                    exact += (double)wf[i] * x[i], mag += fabs((double)wf[i] * x[i]);
                    amax = fmax(amax, fabs(x[i])), wsum += fabs(wf[i]);
                }
                bound += amax / 127 / 2 * wsum;
            }
            const float r = kvq_q4_0x4_dot_ref(row, act, cols);
            if (fabs(r - exact) > bound + 1e-5 * mag)
                fail_msg("cols %d: reference %.6f vs exact %.6f (bound %.3g)", cols, r, exact, bound);
            if (vbmi) {
                const float v = kvq_q4_0x4_dot_vbmi(row, act, cols);
                if (fabsf(v - r) > 1e-5f * (float)mag + 1e-6f)
                    fail_msg("cols %d, row offset %d: VBMI %.7f vs reference %.7f", cols, OFFS[oi], v, r);
            }
        }
        free(w);
        free(wf);
        free(x);
        free(buf);
        free(act);
    }
}

/* The reference agrees with the generic Q4_0 x Q8_0 dot (which rounds the
 * activation scale to fp16, hence the tolerance). */
static void test_q4_0x4_ref_vs_q8_0_partner(void **st) {
    (void)st;
    enum { COLS = 2048 };
    uint64_t seed = 9;
    float w[COLS], x[COLS];
    for (int i = 0; i < COLS; i++) w[i] = tu_randn(&seed), x[i] = tu_randn(&seed);
    static uint8_t wq[COLS / 32 * 18], xq[COLS / 32 * 34];
    kvq_q4_0_from_float_ref(w, wq, COLS);
    kvq_q8_0_from_float_ref(x, xq, COLS);
    void *act = malloc(kvq_q4_0x4_act_size(COLS));
    kvq_q4_0x4_quant(x, act, COLS);
    float a = kvq_q4_0x4_dot_ref(wq, act, COLS), b = kvq_q4_0_vec_dot_ref(wq, xq, COLS);
    fprintf(stderr, "q4_0x4 %.5f vs q4_0.q8_0 %.5f\n", a, b);
    assert_true(fabsf(a - b) < 1e-2f * (1 + fabsf(b)));
    free(act);
}

/* the SIMD activation layout is byte-identical to the reference */
static void test_q4_0x4_quant_simd(void **st) {
    (void)st;
    if (!kvq_isa_vbmi()) {
        fprintf(stderr, "SKIP: no AVX-512 VBMI here\n");
        skip();
    }
    uint64_t seed = 13;
    for (size_t bi = 0; bi < sizeof NBLK / sizeof NBLK[0]; bi++) {
        const int cols = 32 * NBLK[bi];
        float *x = malloc(sizeof(float) * cols);
        for (int i = 0; i < cols; i++) x[i] = tu_randn(&seed) * (i % 37 == 0 ? 50.0f : 1.0f);
        x[0] = 0.5f * (x[1] = 127.0f / 3); /* a value that rounds at a tie */
        if (cols >= 64) memset(x + 32, 0, 32 * sizeof(float)); /* an all-zero block */
        const size_t n = kvq_q4_0x4_act_size(cols);
        uint8_t *a = malloc(n), *b = malloc(n);
        kvq_q4_0x4_quant(x, a, cols);
        kvq_q4_0x4_quant_ref(x, b, cols);
        assert_memory_equal(a, b, n);
        free(x);
        free(a);
        free(b);
    }
}

/* the row-range entry point gives each row's dot */
static void test_q4_0x4_rows(void **st) {
    (void)st;
    if (!kvq_isa_vbmi()) skip();
    enum { COLS = 768, ROWS = 5 };
    uint64_t seed = 8;
    float w[COLS], x[COLS], y[ROWS];
    const size_t rb = kvq_row_size(KVQ_TYPE_Q4_0, COLS);
    uint8_t *buf = malloc(rb * ROWS);
    for (int i = 0; i < COLS; i++) x[i] = tu_randn(&seed);
    for (int r = 0; r < ROWS; r++) {
        for (int i = 0; i < COLS; i++) w[i] = tu_randn(&seed);
        kvq_q4_0_from_float_ref(w, buf + r * rb, COLS);
    }
    void *act = malloc(kvq_q4_0x4_act_size(COLS));
    kvq_q4_0x4_quant(x, act, COLS);
    kvq_q4_0x4_rows_vbmi(buf, rb, ROWS, act, COLS, y);
    for (int r = 0; r < ROWS; r++) assert_true(y[r] == kvq_q4_0x4_dot_vbmi(buf + r * rb, act, COLS));
    free(buf);
    free(act);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_0x4_matches),
        cmocka_unit_test(test_q4_0x4_ref_vs_q8_0_partner),
        cmocka_unit_test(test_q4_0x4_quant_simd),
        cmocka_unit_test(test_q4_0x4_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
