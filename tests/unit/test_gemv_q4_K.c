/* The Q4_K decode kernel on AVX-512 (kernels/gemv_q4_K.c): its reference
 * equals the generic Q4_K x Q8_K dot (same arithmetic, other layout), the
 * SIMD kernel equals the reference at every row alignment (aligned-line and
 * exact-load paths), and the SIMD activation layout is byte-identical. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/cpu.h"
#include "kernels/gemv_q4_K.h"
#include "kernels/quant_ref.h"
#include "kernels/types.h"
#include "testutil.h"

static const int NSB[] = {1, 2, 3, 8, 32};
static const int OFFS[] = {0, 2, 8, 16, 32, 48};

static void fill(float *x, int n, uint64_t *seed, float outlier) {
    for (int i = 0; i < n; i++) x[i] = tu_randn(seed) * (i % 53 == 0 ? outlier : 1.0f);
}

static void test_q4_Kx_matches(void **st) {
    (void)st;
    const bool simd = kvq_isa_active() == KVQ_ISA_AVX512;
    if (!simd) fprintf(stderr, "SKIP part: AVX-512 not active here, only the reference is checked\n");
    uint64_t seed = 3;
    for (size_t bi = 0; bi < sizeof NSB / sizeof NSB[0]; bi++) {
        const int cols = 256 * NSB[bi];
        float *w = malloc(sizeof(float) * cols), *x = malloc(sizeof(float) * cols);
        fill(w, cols, &seed, 1.0f);
        fill(x, cols, &seed, 8.0f);
        const size_t rb = kvq_row_size(KVQ_TYPE_Q4_K, cols);
        uint8_t *buf = malloc(rb + 64), *xq = malloc(kvq_row_size(KVQ_TYPE_Q8_K, cols));
        void *act = malloc(kvq_q4_Kx_act_size(cols));
        kvq_q4_Kx_quant_ref(x, act, cols);
        kvq_q8_K_from_float_ref(x, xq, cols);
        for (size_t oi = 0; oi < sizeof OFFS / sizeof OFFS[0]; oi++) {
            uint8_t *row = buf + OFFS[oi];
            kvq_q4_K_from_float_ref(w, row, cols);
            const float g = kvq_q4_K_vec_dot_ref(row, xq, cols), r = kvq_q4_Kx_dot_ref(row, act, cols);
            if (fabsf(g - r) > 1e-4f * (1 + fabsf(g)))
                fail_msg("cols %d: reference %.6f vs generic q4_K.q8_K %.6f", cols, r, g);
            if (simd) {
                const float v = kvq_q4_Kx_dot_512(row, act, cols);
                if (fabsf(v - r) > 1e-4f * (1 + fabsf(r)))
                    fail_msg("cols %d, row offset %d: AVX-512 %.6f vs reference %.6f", cols, OFFS[oi], v, r);
            }
        }
        free(w);
        free(x);
        free(buf);
        free(xq);
        free(act);
    }
}

static void test_q4_Kx_quant_simd(void **st) {
    (void)st;
    uint64_t seed = 4;
    for (size_t bi = 0; bi < sizeof NSB / sizeof NSB[0]; bi++) {
        const int cols = 256 * NSB[bi];
        float *x = malloc(sizeof(float) * cols);
        fill(x, cols, &seed, 30.0f);
        memset(x, 0, 256 * sizeof(float)); /* an all-zero block */
        const size_t n = kvq_q4_Kx_act_size(cols);
        uint8_t *a = malloc(n), *b = malloc(n);
        kvq_q4_Kx_quant(x, a, cols);
        kvq_q4_Kx_quant_ref(x, b, cols);
        assert_memory_equal(a, b, n);
        free(x);
        free(a);
        free(b);
    }
}

/* the row-range entry point gives each row's dot */
static void test_q4_Kx_rows(void **st) {
    (void)st;
    if (kvq_isa_active() != KVQ_ISA_AVX512) skip();
    enum { COLS = 768, ROWS = 5 };
    uint64_t seed = 8;
    float w[COLS], x[COLS], y[ROWS];
    const size_t rb = kvq_row_size(KVQ_TYPE_Q4_K, COLS);
    uint8_t *buf = malloc(rb * ROWS);
    fill(x, COLS, &seed, 4.0f);
    for (int r = 0; r < ROWS; r++) {
        fill(w, COLS, &seed, 1.0f);
        kvq_q4_K_from_float_ref(w, buf + r * rb, COLS);
    }
    void *act = malloc(kvq_q4_Kx_act_size(COLS));
    kvq_q4_Kx_quant(x, act, COLS);
    kvq_q4_Kx_rows_512(buf, rb, ROWS, act, COLS, y);
    for (int r = 0; r < ROWS; r++) assert_true(y[r] == kvq_q4_Kx_dot_512(buf + r * rb, act, COLS));
    free(buf);
    free(act);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_Kx_matches),
        cmocka_unit_test(test_q4_Kx_quant_simd),
        cmocka_unit_test(test_q4_Kx_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
