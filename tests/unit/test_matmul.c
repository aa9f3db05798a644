/* Matrix products (kernels/ops.c, kernels/gemm_i8.c): the int8 prefill
 * GEMM's VNNI kernel against its scalar reference, both against the f32
 * product with the dequantized weights; kvq_matmul's batched path against
 * its one-token path; kvq_matmul_multi against separate products. Row and
 * token counts are chosen to hit every tail (rows not a multiple of 4, token
 * groups not a multiple of 3, groups not full). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/cpu.h"
#include "kernels/gemm_i8.h"
#include "kernels/ops.h"
#include "kernels/types.h"
#include "testutil.h"

static const kvq_type TYPES[] = {KVQ_TYPE_Q8_0, KVQ_TYPE_Q4_0, KVQ_TYPE_Q4_1, KVQ_TYPE_Q4_K, KVQ_TYPE_Q5_K, KVQ_TYPE_Q6_K};
static const int NTOK[] = {1, 5, 16, 37, 50, 96};
enum { ROWS = 37, COLS = 512, MAXTOK = 96 };
/* The error is the activations' int8 rounding, which the outlier channels
 * make coarse for their blocks; about 2x the measured 2e-4. */
#define I8_BOUND 5e-4

typedef struct {
    kvq_matw W;
    void *wq;
    float *wf, *x;
} problem;

static void make_problem(problem *p, kvq_type t, uint64_t seed) {
    const kvq_type_traits *tr = kvq_traits_isa(t, KVQ_ISA_SCALAR);
    assert_non_null(tr);
    size_t rb = kvq_row_size((int)t, COLS);
    float *w = malloc(sizeof(float) * ROWS * COLS);
    p->wq = malloc(rb * ROWS);
    p->wf = malloc(sizeof(float) * ROWS * COLS);
    p->x = malloc(sizeof(float) * MAXTOK * COLS);
    uint64_t s = seed;
    for (int i = 0; i < ROWS * COLS; i++) w[i] = tu_randn(&s) * 0.05f;
    /* activations with outliers in a few channels, as real ones have */
    for (int i = 0; i < MAXTOK * COLS; i++) p->x[i] = tu_randn(&s) * (i % 97 == 0 ? 20.0f : 1.0f);
    for (int r = 0; r < ROWS; r++) {
        tr->from_float(w + (size_t)r * COLS, (uint8_t *)p->wq + r * rb, COLS);
        tr->to_float((uint8_t *)p->wq + r * rb, p->wf + (size_t)r * COLS, COLS);
    }
    p->W = (kvq_matw){t, COLS, ROWS, p->wq, rb, NULL, NULL, NULL, NULL};
    free(w);
}

static void free_problem(problem *p) {
    free(p->wq);
    free(p->wf);
    free(p->x);
}

static void run_i8(const problem *p, int n, int isa, float *Y) {
    const int64_t ng = (n + 15) / 16;
    void *act = malloc(kvq_gemm_i8_act_size(COLS, n));
    kvq_gemm_i8_quant(p->W.type, p->x, COLS, n, 0, ng, act, isa);
    kvq_gemm_i8_rows(&p->W, 0, ROWS, act, n, Y, ROWS, isa);
    free(act);
}

static void f32_product(const problem *p, int n, float *ref) {
    for (int t = 0; t < n; t++)
        for (int r = 0; r < ROWS; r++) {
            double s = 0;
            for (int c = 0; c < COLS; c++) s += (double)p->wf[(size_t)r * COLS + c] * p->x[(size_t)t * COLS + c];
            ref[t * ROWS + r] = (float)s;
        }
}

/* Scalar reference: close to the exact f32 product (the only error is the
 * activations' int8 rounding), and the VNNI kernel equal to it up to float
 * summation order. */
static void test_i8_gemm_matches(void **st) {
    (void)st;
    float *ref = malloc(sizeof(float) * MAXTOK * ROWS), *y0 = malloc(sizeof(float) * MAXTOK * ROWS),
          *y1 = malloc(sizeof(float) * MAXTOK * ROWS);
    const bool vnni = kvq_isa_supported(KVQ_ISA_AVX512);
    if (!vnni) fprintf(stderr, "SKIP part: no AVX-512 VNNI here, only the scalar reference is checked\n");
    for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++) {
        problem p;
        make_problem(&p, TYPES[k], 10 + k);
        assert_true(kvq_gemm_i8_ok(TYPES[k], COLS));
        for (size_t m = 0; m < sizeof NTOK / sizeof NTOK[0]; m++) {
            const int n = NTOK[m];
            f32_product(&p, n, ref);
            run_i8(&p, n, KVQ_ISA_SCALAR, y0);
            double e0 = tu_nmse(ref, y0, (size_t)n * ROWS);
            if (e0 > I8_BOUND)
                fail_msg("%s n=%d: scalar i8 GEMM nmse %.3g vs f32 > %.3g", kvq_type_name(TYPES[k]), n, e0, I8_BOUND);
            if (vnni) {
                run_i8(&p, n, KVQ_ISA_AVX512, y1);
                double e1 = tu_nmse(y0, y1, (size_t)n * ROWS);
                if (e1 > 1e-10)
                    fail_msg("%s n=%d: VNNI vs scalar nmse %.3g > 1e-10", kvq_type_name(TYPES[k]), n, e1);
            }
            if (m == sizeof NTOK / sizeof NTOK[0] - 1)
                fprintf(stderr, "%-5s i8 GEMM vs f32: nmse %.3g\n", kvq_type_name(TYPES[k]), e0);
        }
        free_problem(&p);
    }
    free(ref);
    free(y0);
    free(y1);
}

/* kvq_matmul with a batch (whichever path this machine takes) must be no
 * less accurate than its one-token decode path, both measured against the
 * f32 product. */
static void test_matmul_batch_vs_decode(void **st) {
    (void)st;
    for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++) {
        problem p;
        make_problem(&p, TYPES[k], 20 + k);
        const int n = 50;
        float *yb = malloc(sizeof(float) * n * ROWS), *yd = malloc(sizeof(float) * n * ROWS),
              *ref = malloc(sizeof(float) * n * ROWS);
        void *qbuf = malloc(kvq_matmul_qbuf_size(TYPES[k], COLS, n));
        f32_product(&p, n, ref);
        kvq_matmul(&p.W, p.x, n, yb, qbuf, 2);
        for (int t = 0; t < n; t++) kvq_matmul(&p.W, p.x + (size_t)t * COLS, 1, yd + (size_t)t * ROWS, qbuf, 2);
        double eb = tu_nmse(ref, yb, (size_t)n * ROWS), ed = tu_nmse(ref, yd, (size_t)n * ROWS);
        fprintf(stderr, "%-5s vs f32: batch nmse %.3g, decode nmse %.3g\n", kvq_type_name(TYPES[k]), eb, ed);
        if (eb > 1.25 * ed + 1e-6)
            fail_msg("%s: batched matmul nmse %.3g, worse than the decode path's %.3g", kvq_type_name(TYPES[k]), eb, ed);
        free(yb);
        free(yd);
        free(ref);
        free(qbuf);
        free_problem(&p);
    }
}

/* Shared-input products give exactly what separate ones give: the same
 * quantized activations and the same dot kernels, in decode and prefill, and
 * with mixed types (which fall back to separate products). */
static void test_matmul_multi(void **st) {
    (void)st;
    problem p[3];
    make_problem(&p[0], KVQ_TYPE_Q4_K, 31);
    make_problem(&p[1], KVQ_TYPE_Q4_K, 32);
    make_problem(&p[2], KVQ_TYPE_Q8_0, 33);
    const int ns[] = {1, 3, 20};
    for (int mixed = 0; mixed < 2; mixed++)
        for (int k = 0; k < 3; k++) {
            const int n = ns[k];
            kvq_matw W[3] = {p[0].W, p[1].W, mixed ? p[2].W : p[0].W};
            float *sep[3], *mul[3];
            size_t qb = 0;
            for (int m = 0; m < 3; m++) {
                sep[m] = malloc(sizeof(float) * n * ROWS);
                mul[m] = malloc(sizeof(float) * n * ROWS);
                size_t s = kvq_matmul_qbuf_size(W[m].type, COLS, n);
                if (s > qb) qb = s;
            }
            void *qbuf = malloc(qb);
            for (int m = 0; m < 3; m++) kvq_matmul(&W[m], p[0].x, n, sep[m], qbuf, 2);
            kvq_matmul_multi(W, 3, p[0].x, n, mul, qbuf, 2);
            for (int m = 0; m < 3; m++) {
                if (memcmp(sep[m], mul[m], sizeof(float) * n * ROWS))
                    fail_msg("matrix %d, n %d, mixed %d: kvq_matmul_multi differs from kvq_matmul", m, n, mixed);
                free(sep[m]);
                free(mul[m]);
            }
            free(qbuf);
        }
    for (int m = 0; m < 3; m++) free_problem(&p[m]);
}

/* The multi-row dots (one weight row against up to KVQ_DOT_XN activation
 * rows, for decode batches) against the one-row dot of the same table and
 * the scalar reference: the same arithmetic per row, so equal to rounding. */
static void test_dot_xn(void **st) {
    (void)st;
    for (int isa = KVQ_ISA_SCALAR; isa < KVQ_ISA_COUNT; isa++) {
        if (!kvq_isa_supported(isa)) continue;
        for (size_t ti = 0; ti < sizeof TYPES / sizeof *TYPES; ti++) {
            const kvq_type_traits *tr = kvq_traits_isa(TYPES[ti], isa), *ref = kvq_traits_isa(TYPES[ti], KVQ_ISA_SCALAR);
            if (!tr || !tr->vec_dot_xn) continue;
            problem p;
            make_problem(&p, TYPES[ti], 40 + ti);
            const kvq_type_traits *dt = kvq_traits_isa(tr->dot_type, KVQ_ISA_SCALAR);
            const size_t xr = kvq_row_size((int)tr->dot_type, COLS);
            uint8_t *xq = malloc(xr * KVQ_DOT_XN);
            for (int t = 0; t < KVQ_DOT_XN; t++) dt->from_float(p.x + (size_t)t * COLS, xq + t * xr, COLS);
            for (int nx = 1; nx <= KVQ_DOT_XN; nx++)
                for (int r = 0; r < ROWS; r += 7) {
                    const uint8_t *wr = (const uint8_t *)p.wq + (size_t)r * p.W.row_bytes;
                    float o[KVQ_DOT_XN];
                    tr->vec_dot_xn(wr, xq, xr, nx, COLS, o);
                    for (int t = 0; t < nx; t++) {
                        const float a = tr->vec_dot(wr, xq + t * xr, COLS), b = ref->vec_dot(wr, xq + t * xr, COLS);
                        assert_true(fabsf(o[t] - a) <= 1e-5f * (fabsf(a) + 1.0f));
                        assert_true(fabsf(o[t] - b) <= 1e-4f * (fabsf(b) + 1.0f));
                    }
                }
            free(xq);
            free_problem(&p);
        }
    }
}

static void test_unsupported(void **st) {
    (void)st;
    assert_false(kvq_gemm_i8_ok(KVQ_TYPE_Q2_K, 256));
    assert_false(kvq_gemm_i8_ok(KVQ_TYPE_F16, 256));
    assert_false(kvq_gemm_i8_ok(KVQ_TYPE_Q4_K, 32)); /* K-quants need whole 256-blocks */
    assert_false(kvq_gemm_i8_ok(KVQ_TYPE_Q8_0, 48));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_i8_gemm_matches),
        cmocka_unit_test(test_matmul_batch_vs_decode),
        cmocka_unit_test(test_matmul_multi),
        cmocka_unit_test(test_dot_xn),
        cmocka_unit_test(test_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
