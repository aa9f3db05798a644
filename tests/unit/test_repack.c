/* Repacked (row-interleaved) decode layouts (kernels/repack.h): packing
 * keeps every value (the layout's dequantization equals the GGUF rows'); the
 * scalar reference is close to the f32 product; the AVX2 kernels (8-row
 * layouts) and the AVX-512 VNNI kernels (16-row layouts) equal their
 * layout's reference bit for bit, at every row count (full groups of 8 and the GGUF
 * tail), every row range a thread can get, 1 to 9 tokens, and a packed
 * buffer at any alignment; the AVX2 activation quantizer writes the
 * reference's bytes; and kvq_matmul dispatches a packed matrix to them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/cpu.h"
#include "kernels/ops.h"
#include "kernels/repack.h"
#include "kernels/repack_act.h"
#include "kernels/quant_ref.h"
#include "kernels/types.h"
#include "testutil.h"

static const kvq_type TYPES[] = {KVQ_TYPE_Q4_0, KVQ_TYPE_Q8_0, KVQ_TYPE_Q4_K, KVQ_TYPE_Q6_K,
                                 KVQ_TYPE_Q2_K, KVQ_TYPE_Q3_K, KVQ_TYPE_Q5_0, KVQ_TYPE_IQ4_NL};
enum { NTYPES = 8 };
static const int ROWS[] = {1, 7, 8, 9, 15, 16, 17, 24, 40, 67};
/* widths: every block count parity for the 32-wide types; one and two
 * super-blocks for the K-quants */
static const int COLS[] = {32, 96, 256};
static bool k_type(kvq_type t) { return kvq_type_blck((int)t) == 256; }
static int cols_of(kvq_type t, size_t ci) { return k_type(t) ? 256 * (int)(1 + ci % 2) : COLS[ci]; }
enum { MAXTOK = 9, MAXROWS = 67, MAXCOLS = 512 };
static size_t act_max(void) {
    size_t m = 0;
    for (int i = 0; i < NTYPES; i++)
        if (kvq_repack_act_size(TYPES[i], MAXCOLS) > m) m = kvq_repack_act_size(TYPES[i], MAXCOLS);
    return m;
}

typedef struct {
    kvq_type t;
    int rows, cols;
    size_t rb;
    uint8_t *w;      /* GGUF rows */
    uint8_t *packed; /* its repacked copy, at offset `shift` of a 64-aligned buffer */
    void *base;
    float *wf, *x;
} problem;

/* The layouts' scalar references: the 8-row one every repacked type has,
 * and the 16-row one of the AVX-512 VNNI kernels (repack_x16.c). */
static const kvq_packed_kernel *layout_ref(kvq_type t, int lay) {
    if (lay == 0) return kvq_repack_kernel_ref(t);
    return t == KVQ_TYPE_Q4_0     ? &kvq_q4_0x16_ref
           : t == KVQ_TYPE_Q8_0   ? &kvq_q8_0x16_ref
           : t == KVQ_TYPE_Q5_0   ? &kvq_q5_0x16_ref
           : t == KVQ_TYPE_IQ4_NL ? &kvq_iq4_nlx16_ref
                                  : NULL;
}

/* k: the kernel whose layout the matrix is packed in */
static void make(problem *p, kvq_type t, int rows, int cols, int shift, uint64_t seed, const kvq_packed_kernel *k) {
    const kvq_type_traits *tr = kvq_traits_isa(t, KVQ_ISA_SCALAR);
    p->t = t, p->rows = rows, p->cols = cols;
    p->rb = kvq_row_size((int)t, cols);
    p->w = malloc(p->rb * (size_t)rows);
    p->base = aligned_alloc(64, (p->rb * (size_t)rows + 64 + 63) / 64 * 64);
    p->packed = (uint8_t *)p->base + shift;
    p->wf = malloc(sizeof(float) * (size_t)rows * (size_t)cols);
    p->x = malloc(sizeof(float) * MAXTOK * (size_t)cols);
    assert_int_not_equal(p->rb, 0);
    uint64_t s = seed;
    float *row = malloc(sizeof(float) * (size_t)cols);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) row[c] = tu_randn(&s) * 0.05f;
        tr->from_float(row, p->w + (size_t)r * p->rb, cols);
        tr->to_float(p->w + (size_t)r * p->rb, p->wf + (size_t)r * cols, cols);
    }
    free(row);
    /* outlier channels, as real activations have, and one all-zero block */
    for (int i = 0; i < MAXTOK * cols; i++) p->x[i] = tu_randn(&s) * (i % 97 == 0 ? 20.0f : 1.0f);
    memset(p->x + cols, 0, 32 * sizeof(float));
    /* packed in two calls, as two threads would */
    const int mid = rows / 16 * 8;
    kvq_packed_rows(k, t, p->w, p->rb, cols, rows, 0, mid, p->packed);
    kvq_packed_rows(k, t, p->w, p->rb, cols, rows, mid, rows, p->packed);
}

static void drop(problem *p) {
    free(p->w), free(p->base), free(p->wf), free(p->x);
}

static void quant_all(const kvq_packed_kernel *k, const problem *p, int n, uint8_t *act) {
    const size_t as = k->act_size(p->cols);
    for (int t = 0; t < n; t++) k->quant(p->x + (size_t)t * p->cols, act + (size_t)t * as, p->cols);
}

/* Every value survives packing: the layout's rows are the GGUF rows. */
static void test_pack_keeps_values(void **st) {
    (void)st;
    float *d = malloc(sizeof(float) * MAXROWS * MAXCOLS);
    for (int lay = 0; lay < 2; lay++)
    for (size_t ti = 0; ti < NTYPES; ti++)
        for (size_t ri = 0; ri < sizeof ROWS / sizeof *ROWS && layout_ref(TYPES[ti], lay); ri++)
            for (size_t ci = 0; ci < sizeof COLS / sizeof *COLS; ci++) {
                problem p;
                const kvq_packed_kernel *k = layout_ref(TYPES[ti], lay);
                make(&p, TYPES[ti], ROWS[ri], cols_of(TYPES[ti], ci), 0, 11 + ri * 7 + ci, k);
                k->dequant(p.packed, p.cols, p.rows, 0, p.rows, d);
                assert_memory_equal(d, p.wf, sizeof(float) * (size_t)p.rows * (size_t)p.cols);
                /* and from any first row */
                k->dequant(p.packed, p.cols, p.rows, p.rows / 2, p.rows - p.rows / 2, d);
                assert_memory_equal(d, p.wf + (size_t)(p.rows / 2) * p.cols,
                                    sizeof(float) * (size_t)(p.rows - p.rows / 2) * (size_t)p.cols);
                drop(&p);
            }
    free(d);
}

/* The reference against the exact f32 product of the same weights: the
 * only error is the activations' int8 rounding, coarser for Q4_K, whose
 * Q8_K activations have one scale per 256 values (and the outlier channels
 * set it). The K-quants also against the file layout's own scalar dot on the same
 * Q8_K activations: the same integers, so equal but for float order. */
static void test_ref_matches_f32(void **st) {
    (void)st;
    float *y = malloc(sizeof(float) * MAXTOK * MAXROWS), *ref = malloc(sizeof(float) * MAXTOK * MAXROWS);
    uint8_t *act = malloc(act_max() * MAXTOK);
    for (int lay = 0; lay < 2; lay++)
    for (size_t ti = 0; ti < NTYPES; ti++) {
        const kvq_packed_kernel *k = layout_ref(TYPES[ti], lay);
        if (!k) continue;
        problem p;
        make(&p, TYPES[ti], 67, 256, 0, 5 + ti, k);
        quant_all(k, &p, MAXTOK, act);
        k->rows(p.packed, p.cols, p.rows, 0, p.rows, act, k->act_size(p.cols), MAXTOK, y, p.rows);
        for (int t = 0; t < MAXTOK; t++)
            for (int r = 0; r < p.rows; r++) {
                double s = 0;
                for (int c = 0; c < p.cols; c++) s += (double)p.wf[(size_t)r * p.cols + c] * p.x[(size_t)t * p.cols + c];
                ref[t * p.rows + r] = (float)s;
            }
        const double e = tu_nmse(ref, y, (size_t)MAXTOK * p.rows);
        print_message("%s reference vs f32 product: NMSE %.2e\n", k->name, e);
        assert_true(e < (k_type(p.t) ? 2e-3 : 5e-4));
        if (k_type(p.t)) {
            const kvq_type_traits *tr = kvq_traits_isa(p.t, KVQ_ISA_SCALAR);
            for (int t = 0; t < MAXTOK; t++)
                for (int r = 0; r < p.rows; r++)
                    ref[t * p.rows + r] = tr->vec_dot(p.w + (size_t)r * p.rb, act + (size_t)t * k->act_size(p.cols), p.cols);
            const double f = tu_nmse(ref, y, (size_t)MAXTOK * p.rows);
            print_message("%s reference vs the GGUF layout's scalar dot: NMSE %.2e\n", kvq_type_name((int)p.t), f);
            assert_true(f < 1e-10);
        }
        drop(&p);
    }
    free(y), free(ref), free(act);
}

/* Each ISA's kernels = their layout's reference, bit for bit: same integer
 * dots, same float operations in the same order. Every row count, range,
 * token count and alignment. */
static void simd_equals_ref(int isa) {
    if (!kvq_isa_supported(isa)) {
        print_message("no %s on this host: its repacked kernels are not tested here\n", kvq_isa_str(isa));
        skip();
    }
    float *y0 = malloc(sizeof(float) * MAXTOK * MAXROWS), *y1 = malloc(sizeof(float) * MAXTOK * MAXROWS);
    uint8_t *a0 = malloc(act_max() * MAXTOK), *a1 = malloc(act_max() * MAXTOK);
    int cases = 0;
    for (size_t ti = 0; ti < NTYPES; ti++)
        for (size_t ri = 0; ri < sizeof ROWS / sizeof *ROWS; ri++)
            for (size_t ci = 0; ci < sizeof COLS / sizeof *COLS; ci++)
                for (int shift = 0; shift < 64; shift += 18) {
                    const kvq_packed_kernel *kv = kvq_repack_kernel(TYPES[ti], isa);
                    if (!kv) continue;
                    const kvq_packed_kernel *kr = kvq_packed_ref(kv, TYPES[ti]);
                    problem p;
                    make(&p, TYPES[ti], ROWS[ri], cols_of(TYPES[ti], ci), shift, 100 + ri * 13 + ci * 3 + (uint64_t)shift, kv);
                    const size_t as = kr->act_size(p.cols);
                    quant_all(kr, &p, MAXTOK, a0);
                    quant_all(kv, &p, MAXTOK, a1);
                    assert_memory_equal(a0, a1, as * MAXTOK);
                    for (int n = 1; n <= MAXTOK; n++) {
                        /* whole, and split where a thread's row block would end (multiples of 16) */
                        const int cut = p.rows > 16 ? (p.rows / 2) / 16 * 16 : 0;
                        const int ranges[2][2] = {{0, p.rows}, {cut, p.rows}};
                        for (int k = 0; k < 2; k++) {
                            const int r0 = ranges[k][0], r1 = ranges[k][1];
                            memset(y0, 0xff, sizeof(float) * MAXTOK * MAXROWS);
                            memset(y1, 0xff, sizeof(float) * MAXTOK * MAXROWS);
                            kr->rows(p.packed, p.cols, p.rows, r0, r1, a0, as, n, y0, p.rows);
                            kv->rows(p.packed, p.cols, p.rows, r0, r1, a0, as, n, y1, p.rows);
                            /* the whole output: rows outside [r0, r1) must stay untouched */
                            assert_memory_equal(y0, y1, sizeof(float) * (size_t)n * (size_t)p.rows);
                            cases++;
                        }
                    }
                    drop(&p);
                }
    print_message("%s: %d (type, rows, cols, alignment, tokens, range) cases bit-identical\n", kvq_isa_str(isa), cases);
    free(y0), free(y1), free(a0), free(a1);
}
static void test_avx2_equals_ref(void **st) { (void)st, simd_equals_ref(KVQ_ISA_AVX2); }
static void test_avx512_equals_ref(void **st) { (void)st, simd_equals_ref(KVQ_ISA_AVX512); }

/* The activation quantizer on awkward inputs: zeros, ties at .5 steps,
 * huge and tiny magnitudes. */
static void test_quant_bytes(void **st) {
    (void)st;
    if (!kvq_isa_supported(KVQ_ISA_AVX2)) skip();
    enum { C = 32 * 64 };
    float *x = malloc(sizeof(float) * C);
    uint64_t s = 3;
    for (int i = 0; i < C; i++) {
        const int b = i / 32;
        /* block 1: scale exactly 1, every value halfway between two codes */
        x[i] = b == 0 ? 0.0f : b == 1 ? (i % 32 == 0 ? 127.0f : (float)(i % 32 - 16) + 0.5f)
               : b == 2 ? tu_randn(&s) * 1e30f : b == 3 ? tu_randn(&s) * 1e-30f : tu_randn(&s);
    }
    uint8_t *a0 = malloc(kvq_x8_act_size(C)), *a1 = malloc(kvq_x8_act_size(C));
    kvq_x8_quant_ref(x, a0, C);
    kvq_x8_quant_avx2(x, a1, C);
    assert_memory_equal(a0, a1, kvq_x8_act_size(C));
    free(a0), free(a1);
    /* Q8_K: one scale per 256 (blocks 0-3 above share one; 4-7 are plain) */
    const size_t qk = kvq_repack_act_size(KVQ_TYPE_Q4_K, C);
    a0 = malloc(qk), a1 = malloc(qk);
    kvq_q8_K_from_float_ref(x, a0, C);
    kvq_q8_K_quant_avx2(x, a1, C);
    assert_memory_equal(a0, a1, qk);
    free(x), free(a0), free(a1);
}

/* kvq_matmul and kvq_matmul_multi send a packed matrix to its kernel, for
 * one token, a few, and a batch, on one and two threads. */
static void test_matmul_dispatch(void **st) {
    (void)st;
    const int isa = kvq_isa_active();
    for (size_t ti = 0; ti < NTYPES; ti++) {
        const kvq_packed_kernel *kv = kvq_repack_kernel(TYPES[ti], isa);
        if (!kv) {
            print_message("no repacked %s kernel on ISA %s\n", kvq_type_name((int)TYPES[ti]), kvq_isa_str(isa));
            continue;
        }
        problem p;
        make(&p, TYPES[ti], 67, 256, 0, 77, kv);
        const kvq_packed_kernel *kr = kvq_packed_ref(kv, p.t);
        const size_t as = kr->act_size(p.cols);
        float *y0 = malloc(sizeof(float) * MAXTOK * 67), *y1 = malloc(sizeof(float) * MAXTOK * 67),
              *y2 = malloc(sizeof(float) * MAXTOK * 67);
        uint8_t *act = malloc(as * MAXTOK);
        void *qbuf = malloc(kvq_matmul_qbuf_size(p.t, p.cols, MAXTOK));
        kvq_matw W = {p.t, p.cols, p.rows, p.w, p.rb, NULL, NULL, p.packed, kv};
        for (int n = 1; n <= MAXTOK; n += 4)
            for (int nth = 1; nth <= 2; nth++) {
                quant_all(kr, &p, n, act);
                kr->rows(p.packed, p.cols, p.rows, 0, p.rows, act, as, n, y0, p.rows);
                kvq_matmul(&W, p.x, n, y1, qbuf, nth);
                assert_memory_equal(y0, y1, sizeof(float) * (size_t)n * 67);
                kvq_matw two[2] = {W, W};
                float *Y[2] = {y1, y2};
                kvq_matmul_multi(two, 2, p.x, n, Y, qbuf, nth);
                assert_memory_equal(y0, y1, sizeof(float) * (size_t)n * 67);
                assert_memory_equal(y0, y2, sizeof(float) * (size_t)n * 67);
            }
        free(y0), free(y1), free(y2), free(act), free(qbuf);
        drop(&p);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_keeps_values), cmocka_unit_test(test_ref_matches_f32),
        cmocka_unit_test(test_avx2_equals_ref),   cmocka_unit_test(test_avx512_equals_ref),
        cmocka_unit_test(test_quant_bytes),
        cmocka_unit_test(test_matmul_dispatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
