/* SliM-LLM's mixed-precision type and quantizers (kernels/slim.c,
 * slim_avx2.c, quant/gptq.c):
 * - chunk packing round-trips at every width;
 * - the AVX2 decode kernel equals the scalar reference on random data with
 *   random bit maps, and both equal the f32 product of the dequantized rows
 *   up to the int8 rounding of the activations;
 * - the decode layout (slim_pk.c), in groups of 8 and of 32 rows, keeps
 *   every value, its scalar reference equals the file layout's, and its
 *   AVX2 and AVX-512 VNNI kernels equal the reference bit for bit, for row
 *   ranges and 1-7 tokens;
 * - malformed companions (widths out of range, a wrong sum, a wrong table
 *   size) are refused;
 * - SBA keeps the average exactly N;
 * - GPTQ equals a direct, unoptimized implementation of the algorithm on a
 *   small random layer, and beats RTN on the layer's output error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "core/cpu.h"
#include "kernels/quant_ref.h"
#include "kernels/slim.h"
#include "kernels/slim_pk.h"
#include "quant/gptq.h"
#include "testutil.h"

static void test_pack_roundtrip(void **st) {
    (void)st;
    uint64_t s = 1;
    for (int b = 1; b <= KVQ_SLIM_MAX_BITS; b++)
        for (int rep = 0; rep < 20; rep++) {
            uint8_t q[32], r[32], buf[32];
            for (int i = 0; i < 32; i++) q[i] = (uint8_t)(tu_rng(&s) % (1u << b));
            kvq_slim_pack_chunk(q, b, buf);
            kvq_slim_unpack_chunk(buf, b, r);
            if (memcmp(q, r, 32)) fail_msg("width %d: chunk does not round-trip", b);
        }
}

/* A random slim matrix: widths averaging N, codes and (d, m) random. */
typedef struct rmat {
    int8_t *bits;
    uint8_t *codes;
    kvq_f16 *dm;
    const void *aux[KVQ_TENSOR_AUX];
    uint64_t aux_bytes[KVQ_TENSOR_AUX];
    kvq_matw W;
} rmat;

static void make(rmat *m, int N, int64_t rows, int64_t cols, int G, uint64_t *s) {
    const int ng = (int)(cols / G);
    m->bits = malloc((size_t)ng);
    double sal[64];
    for (int g = 0; g < ng; g++) sal[g] = (double)(tu_rng(s) % 1000);
    kvq_wq_sba_bits(sal, ng, N, (int)(tu_rng(s) % (ng / 2 + 1)), m->bits);
    const size_t rb = (size_t)cols * N / 8;
    m->codes = malloc(rb * rows);
    for (size_t i = 0; i < rb * rows; i++) m->codes[i] = (uint8_t)tu_rng(s);
    m->dm = malloc((size_t)rows * ng * 4);
    for (int64_t i = 0; i < rows * ng; i++) {
        m->dm[2 * i] = kvq_f32_to_f16(0.01f + 0.05f * fabsf(tu_randn(s)));
        m->dm[2 * i + 1] = kvq_f32_to_f16(0.1f * tu_randn(s));
    }
    memset(m->aux, 0, sizeof m->aux);
    m->aux[0] = m->bits;
    m->aux[1] = m->dm;
    m->aux_bytes[0] = (uint64_t)ng;
    m->aux_bytes[1] = (uint64_t)rows * ng * 4;
    m->W = (kvq_matw){kvq_slim_type(N), cols, rows, m->codes, rb, m->aux, m->aux_bytes, NULL, NULL};
}
static void unmake(rmat *m) {
    free(m->bits);
    free(m->codes);
    free(m->dm);
}

static void test_kernels_match(void **st) {
    (void)st;
    const bool avx2 = kvq_isa_active() >= KVQ_ISA_AVX2;
    if (!avx2) fprintf(stderr, "SKIP part: AVX2 not active, only the reference is checked\n");
    uint64_t s = 7;
    const int64_t shapes[][3] = {{64, 64, 64}, {37, 384, 32}, {16, 256, 128}, {50, 1024, 128}, {8, 2048, 256}};
    for (int N = 2; N <= 4; N++)
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            const int64_t rows = shapes[k][0], cols = shapes[k][1];
            rmat m;
            make(&m, N, rows, cols, (int)shapes[k][2], &s);
            char msg[200];
            if (kvq_slim_check(m.W.type, cols, rows, m.aux, m.aux_bytes, msg, sizeof msg)) fail_msg("valid matrix refused: %s", msg);
            float *x = malloc(cols * sizeof *x), *Wf = malloc(rows * cols * sizeof *Wf);
            float *yr = malloc(rows * sizeof *yr), *ya = malloc(rows * sizeof *ya), *yf = malloc(rows * sizeof *yf);
            for (int64_t i = 0; i < cols; i++) x[i] = tu_randn(&s) * (i % 41 == 0 ? 6.0f : 1.0f);
            void *act = malloc(kvq_slim_act_size(cols));
            kvq_slim_act_quant(x, act, cols);
            kvq_slim_rows_ref(&m.W, 0, rows, act, yr);
            kvq_slim_dequant(&m.W, 0, rows, Wf);
            for (int64_t r = 0; r < rows; r++) {
                double a = 0;
                for (int64_t i = 0; i < cols; i++) a += (double)Wf[r * cols + i] * x[i];
                yf[r] = (float)a;
            }
            /* int8 activations: per-row relative error well under 1% of the output scale */
            const double e_ref = tu_nmse(yf, yr, (size_t)rows);
            if (e_ref > 1e-3) fail_msg("N %d, %lldx%lld: reference vs f32 NMSE %.3g", N, (long long)rows, (long long)cols, e_ref);
            if (avx2) {
                /* rows r0..r1 in the middle, to check the row offsets */
                kvq_slim_rows_avx2(&m.W, 0, rows, act, ya);
                for (int64_t r = 0; r < rows; r++)
                    if (fabsf(ya[r] - yr[r]) > 1e-4f * (1 + fabsf(yr[r])))
                        fail_msg("N %d, %lldx%lld row %lld: AVX2 %.6f vs reference %.6f", N, (long long)rows,
                                 (long long)cols, (long long)r, ya[r], yr[r]);
                kvq_slim_rows_avx2(&m.W, rows / 2, rows, act, ya);
                for (int64_t r = rows / 2; r < rows; r++)
                    if (fabsf(ya[r - rows / 2] - yr[r]) > 1e-4f * (1 + fabsf(yr[r])))
                        fail_msg("N %d: AVX2 from row %lld differs", N, (long long)(rows / 2));
            }
            free(x); free(Wf); free(yr); free(ya); free(yf); free(act);
            unmake(&m);
        }
}

/* The decode layout in groups of R rows, with R's kernel when the host
 * runs it: 8 rows for AVX2, 32 for AVX-512 VNNI. */
static void check_layout(int R, const kvq_packed_kernel *k, uint64_t *s) {
    const int64_t shapes[][3] = {{16, 256, 128}, {7, 384, 128}, {50, 1024, 128}, {19, 2048, 256}, {13, 8192, 128}, {37, 512, 512}, {70, 1024, 128}};
    for (int N = 2; N <= 4; N++)
        for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
            const int64_t rows = shapes[sh][0], cols = shapes[sh][1];
            rmat m;
            make(&m, N, rows, cols, (int)shapes[sh][2], s);
            assert_true(kvq_slim_pk_fits(&m.W));
            void *pk = malloc(kvq_slim_pk_size(&m.W, R));
            kvq_slim_pk_init(&m.W, R, pk);
            kvq_slim_pk_pack(&m.W, 0, rows / (2 * R) * R, pk); /* in two parts, as threads do */
            kvq_slim_pk_pack(&m.W, rows / (2 * R) * R, rows, pk);
            float *Wf = malloc(rows * cols * sizeof *Wf), *Wp = malloc(rows * cols * sizeof *Wp);
            kvq_slim_dequant(&m.W, 0, rows, Wf);
            kvq_slim_pk_ref.dequant(pk, cols, rows, 0, rows, Wp);
            if (memcmp(Wf, Wp, rows * cols * sizeof *Wf)) fail_msg("R %d N %d, %lldx%lld: packing changed a weight", R, N, (long long)rows, (long long)cols);
            enum { NT = 7 };
            const size_t xrow = kvq_slim_pk_act_size(cols);
            uint8_t *act = malloc(xrow * NT), *act0 = malloc(kvq_slim_act_size(cols));
            float *x = malloc(cols * NT * sizeof *x), *yr = malloc(rows * NT * sizeof *yr), *ya = malloc(rows * NT * sizeof *ya);
            float *y0 = malloc(rows * sizeof *y0);
            for (int64_t i = 0; i < cols * NT; i++) x[i] = tu_randn(s) * (i % 41 == 0 ? 6.0f : 1.0f);
            for (int t = 0; t < NT; t++) kvq_slim_pk_act_quant(x + t * cols, act + t * xrow, cols);
            if (k) { /* the AVX2 activation quantizer writes the same bytes */
                uint8_t *a2 = malloc(xrow);
                for (int t = 0; t < NT; t++) {
                    k->quant(x + t * cols, a2, cols);
                    if (memcmp(a2, act + t * xrow, xrow)) fail_msg("%lld columns: AVX2 activations differ", (long long)cols);
                }
                free(a2);
            }
            kvq_slim_pk_ref.rows(pk, cols, rows, 0, rows, act, xrow, NT, yr, rows);
            for (int t = 0; t < NT; t++) {
                /* the file layout's reference on the same activations: the same integers, summed in another order */
                kvq_slim_act_quant(x + t * cols, act0, cols);
                kvq_slim_rows_ref(&m.W, 0, rows, act0, y0);
                for (int64_t r = 0; r < rows; r++)
                    if (fabsf(y0[r] - yr[t * rows + r]) > 1e-4f * (1 + fabsf(y0[r])))
                        fail_msg("R %d N %d, %lldx%lld token %d row %lld: decode layout %.6f vs file layout %.6f", R, N,
                                 (long long)rows, (long long)cols, t, (long long)r, yr[t * rows + r], y0[r]);
            }
            if (k)
                for (int n = 1; n <= NT; n += 2) { /* 1, 3, 5 and 7 tokens */
                    const int64_t r0 = rows >= 2 * R ? R : 0; /* a range that starts past the first row group */
                    for (int64_t i = 0; i < rows * NT; i++) ya[i] = -12345.0f;
                    k->rows(pk, cols, rows, r0, rows, act, xrow, n, ya, rows);
                    for (int t = 0; t < NT; t++)
                        for (int64_t r = 0; r < rows; r++) {
                            const float want = r < r0 || t >= n ? -12345.0f : yr[t * rows + r], got = ya[t * rows + r];
                            if (memcmp(&got, &want, sizeof got)) /* the same operations in the same order */
                                fail_msg("%s N %d, %lldx%lld, %d tokens: token %d row %lld (from %lld): %.6f vs reference %.6f",
                                         k->name, N, (long long)rows, (long long)cols, n, t, (long long)r, (long long)r0, got, want);
                        }
                }
            free(pk); free(Wf); free(Wp); free(act); free(act0); free(x); free(yr); free(ya); free(y0);
            unmake(&m);
        }
}

static void test_pk_layout(void **st) {
    (void)st;
    uint64_t s = 11;
    {
        rmat m;
        make(&m, 2, 8, 256, 64, &s);
        assert_false(kvq_slim_pk_fits(&m.W)); /* groups under 128 keep the file layout */
        unmake(&m);
    }
    { /* more groups than the packer's table holds keep the file layout too (only the count is read) */
        const void *aux[KVQ_TENSOR_AUX] = {(const void *)1, (const void *)1};
        uint64_t ab[KVQ_TENSOR_AUX] = {KVQ_SLIM_PK_MAX_GROUPS + 1, 0};
        const int64_t cols = (KVQ_SLIM_PK_MAX_GROUPS + 1) * (int64_t)KVQ_SLIM_UNIT;
        kvq_matw W = {kvq_slim_type(2), cols, 8, (const void *)1, (size_t)cols / 4, aux, ab, NULL, NULL};
        assert_false(kvq_slim_pk_fits(&W));
        ab[0] = KVQ_SLIM_PK_MAX_GROUPS;
        W.cols = KVQ_SLIM_PK_MAX_GROUPS * (int64_t)KVQ_SLIM_UNIT;
        assert_true(kvq_slim_pk_fits(&W));
    }
    const int isa = kvq_isa_active();
    if (isa < KVQ_ISA_AVX2) fprintf(stderr, "SKIP part: AVX2 not active, the 8-row layout's kernel is not checked\n");
    check_layout(8, isa >= KVQ_ISA_AVX2 ? &kvq_slim_x8_avx2 : NULL, &s);
    if (isa < KVQ_ISA_AVX512) fprintf(stderr, "SKIP part: AVX-512 not active, the 32-row layout's kernel is not checked\n");
    check_layout(32, isa >= KVQ_ISA_AVX512 ? &kvq_slim_x32_vnni : NULL, &s);
    /* each ISA's choice */
    int R = 0;
    assert_null(kvq_slim_pk_kernel(KVQ_ISA_SCALAR, &R));
    assert_ptr_equal(kvq_slim_pk_kernel(KVQ_ISA_AVX2, &R), &kvq_slim_x8_avx2);
    assert_int_equal(R, 8);
    assert_ptr_equal(kvq_slim_pk_kernel(KVQ_ISA_AVX512, &R), &kvq_slim_x32_vnni);
    assert_int_equal(R, 32);
}

static void test_check_refuses(void **st) {
    (void)st;
    uint64_t s = 9;
    rmat m;
    make(&m, 3, 8, 256, 64, &s);
    char msg[200];
    int8_t saved = m.bits[0];
    m.bits[0] = 7;
    assert_non_null(kvq_slim_check(m.W.type, 256, 8, m.aux, m.aux_bytes, msg, sizeof msg));
    assert_non_null(strstr(msg, "width"));
    m.bits[0] = 0;
    assert_non_null(kvq_slim_check(m.W.type, 256, 8, m.aux, m.aux_bytes, msg, sizeof msg));
    m.bits[0] = saved;
    m.bits[1] = (int8_t)(m.bits[1] == 4 ? 3 : m.bits[1] + 1); /* sum no longer 3 x ng */
    assert_non_null(kvq_slim_check(m.W.type, 256, 8, m.aux, m.aux_bytes, msg, sizeof msg));
    assert_non_null(strstr(msg, "average"));
    m.bits[1] = 3;
    for (int g = 0; g < 4; g++) m.bits[g] = 3;
    assert_null(kvq_slim_check(m.W.type, 256, 8, m.aux, m.aux_bytes, msg, sizeof msg));
    m.aux_bytes[1] -= 4; /* a short scale table */
    assert_non_null(kvq_slim_check(m.W.type, 256, 8, m.aux, m.aux_bytes, msg, sizeof msg));
    m.aux_bytes[1] += 4;
    m.aux_bytes[0] = 3; /* 256 / 3 groups */
    assert_non_null(kvq_slim_check(m.W.type, 256, 8, m.aux, m.aux_bytes, msg, sizeof msg));
    unmake(&m);
}

static void test_sba_average(void **st) {
    (void)st;
    uint64_t s = 11;
    for (int ng = 1; ng <= 40; ng++)
        for (int N = 2; N <= 4; N++)
            for (int p = 0; p <= ng / 2; p++) {
                double sal[64];
                int8_t bits[64];
                for (int g = 0; g < ng; g++) sal[g] = tu_randn(&s);
                kvq_wq_sba_bits(sal, ng, N, p, bits);
                int sum = 0, lo = 0, hi = 0;
                for (int g = 0; g < ng; g++) {
                    sum += bits[g];
                    lo += bits[g] == N - 1;
                    hi += bits[g] == N + 1;
                    if (bits[g] == N - 1)
                        for (int h = 0; h < ng; h++)
                            if (bits[h] == N + 1 && sal[h] < sal[g]) fail_msg("a less salient group got more bits");
                }
                if (sum != ng * N || lo != hi || lo != p) fail_msg("ng %d N %d p %d: sum %d, %d low, %d high", ng, N, p, sum, lo, hi);
            }
}

/* GPTQ written the direct way: H^-1 by Gauss-Jordan in double, then for each
 * column j: quantize with the group's (d, m), and update every later column
 * by the OBS rule using the Cholesky factor of H^-1 computed naively. */
static void gptq_direct(const float *W0, int rows, int cols, int G, int N, const float *H, float *Wq) {
    double *A = calloc((size_t)cols * cols, sizeof *A), *I = calloc((size_t)cols * cols, sizeof *I);
    double mean = 0;
    for (int j = 0; j < cols; j++) mean += H[j * cols + j];
    mean /= cols;
    for (int i = 0; i < cols; i++) {
        for (int j = 0; j < cols; j++) A[i * cols + j] = H[i * cols + j];
        A[i * cols + i] += 0.01 * mean;
        I[i * cols + i] = 1;
    }
    for (int c = 0; c < cols; c++) { /* Gauss-Jordan, no pivoting (positive definite) */
        const double p = A[c * cols + c];
        for (int j = 0; j < cols; j++) A[c * cols + j] /= p, I[c * cols + j] /= p;
        for (int r = 0; r < cols; r++) {
            if (r == c) continue;
            const double f = A[r * cols + c];
            for (int j = 0; j < cols; j++) A[r * cols + j] -= f * A[c * cols + j], I[r * cols + j] -= f * I[c * cols + j];
        }
    }
    /* upper Cholesky U of Hinv = U^T U */
    double *U = calloc((size_t)cols * cols, sizeof *U);
    for (int j = 0; j < cols; j++) {
        double s = I[j * cols + j];
        for (int k = 0; k < j; k++) s -= U[k * cols + j] * U[k * cols + j];
        U[j * cols + j] = sqrt(s);
        for (int i = j + 1; i < cols; i++) {
            double t = I[j * cols + i];
            for (int k = 0; k < j; k++) t -= U[k * cols + j] * U[k * cols + i];
            U[j * cols + i] = t / U[j * cols + j];
        }
    }
    float *W = malloc((size_t)rows * cols * sizeof *W);
    memcpy(W, W0, (size_t)rows * cols * sizeof *W);
    for (int r = 0; r < rows; r++) {
        float d = 0, m = 0;
        for (int j = 0; j < cols; j++) {
            if (j % G == 0) kvq_wq_fit(W + r * cols + j, G, N, 1.0f, &d, &m);
            const float q = d * (float)kvq_wq_code(W[r * cols + j], d, m, N) + m;
            Wq[r * cols + j] = q;
            const double e = (W[r * cols + j] - q) / U[j * cols + j];
            for (int k = j + 1; k < cols; k++) W[r * cols + k] -= (float)(e * U[j * cols + k]);
        }
    }
    free(A); free(I); free(U); free(W);
}

static void dequant_all(int N, int rows, int cols, const int8_t *bits, const uint8_t *codes, const kvq_f16 *dm, int ng,
                        float *out) {
    const void *aux[KVQ_TENSOR_AUX] = {bits, dm};
    uint64_t ab[KVQ_TENSOR_AUX] = {(uint64_t)ng, (uint64_t)rows * ng * 4};
    kvq_matw W = {kvq_slim_type(N), cols, rows, codes, (size_t)cols * N / 8, aux, ab, NULL, NULL};
    kvq_slim_dequant(&W, 0, rows, out);
}

static void test_gptq_direct(void **st) {
    (void)st;
    uint64_t s = 13;
    const int rows = 12, cols = 128, G = 32, N = 3, n = 400, ng = cols / G;
    float *W = malloc(rows * cols * sizeof *W), *X = malloc((size_t)n * cols * sizeof *X), *H = calloc(cols * cols, sizeof *H);
    for (int i = 0; i < rows * cols; i++) W[i] = tu_randn(&s);
    /* correlated inputs with a few outlier channels, as activations are */
    for (int t = 0; t < n; t++) {
        const float z = tu_randn(&s);
        for (int j = 0; j < cols; j++) X[t * cols + j] = (tu_randn(&s) + 0.7f * z) * (j % 29 == 0 ? 5.0f : 1.0f);
    }
    for (int t = 0; t < n; t++)
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < cols; j++) H[i * cols + j] += X[t * cols + i] * X[t * cols + j] / n;
    int8_t bits[8];
    uint8_t *codes = malloc((size_t)rows * cols * N / 8);
    kvq_f16 *dm = malloc((size_t)rows * ng * 4);
    float *Wq = malloc(rows * cols * sizeof *Wq), *Wd = malloc(rows * cols * sizeof *Wd);
    kvq_wq_params p = kvq_wq_default_params();
    p.method = KVQ_WQ_GPTQ;
    p.bits = N;
    p.group = G;
    kvq_wq_report rep;
    assert_int_equal(kvq_wq_matrix(&p, W, rows, cols, H, X, 64, bits, codes, dm, &rep, NULL), KVQ_OK);
    dequant_all(N, rows, cols, bits, codes, dm, ng, Wq);
    gptq_direct(W, rows, cols, G, N, H, Wd);
    int differ = 0;
    for (int i = 0; i < rows * cols; i++) differ += fabsf(Wq[i] - Wd[i]) > 1e-3f * (1 + fabsf(Wd[i]));
    /* float vs double arithmetic may flip a rounding decision now and then */
    if (differ > rows * cols / 100) fail_msg("GPTQ differs from the direct implementation at %d of %d weights", differ, rows * cols);
    const double e_gptq = rep.rel_err;
    p.method = KVQ_WQ_RTN;
    assert_int_equal(kvq_wq_matrix(&p, W, rows, cols, H, X, 64, bits, codes, dm, &rep, NULL), KVQ_OK);
    if (!(e_gptq < 0.8 * rep.rel_err)) fail_msg("GPTQ output error %.4f is not well below RTN's %.4f", e_gptq, rep.rel_err);
    p.method = KVQ_WQ_SLIM;
    assert_int_equal(kvq_wq_matrix(&p, W, rows, cols, H, X, 64, bits, codes, dm, &rep, NULL), KVQ_OK);
    int sum = 0;
    for (int g = 0; g < ng; g++) sum += bits[g];
    assert_int_equal(sum, ng * N);
    free(W); free(X); free(H); free(codes); free(dm); free(Wq); free(Wd);
}

/* GPTQ into q4_0 / q4_1 blocks: kvq's scalar dequantizers read back values
 * that are valid codes of the block (each one d*(q-8) or d*q+m with q in
 * 0..15), and GPTQ's output error is below RTN's. */
/* The affine pair (w = d q + m) of value i of a standard block, and its
 * largest code: q4_0 and q4_1 per 32 values, q4_K and q5_K per 32-value
 * sub-block of a 256-value super-block. */
static void block_affine(int type, const uint8_t *row, int i, float *d, float *m, int *qmax) {
    if (type == KVQ_TYPE_Q4_0) {
        *d = kvq_f16_to_f32(((const kvq_block_q4_0 *)row)[i / 32].d);
        *m = -8 * *d;
        *qmax = 15;
    } else if (type == KVQ_TYPE_Q4_1) {
        const kvq_block_q4_1 *b = (const kvq_block_q4_1 *)row + i / 32;
        *d = kvq_f16_to_f32(b->d);
        *m = kvq_f16_to_f32(b->m);
        *qmax = 15;
    } else if (type == KVQ_TYPE_Q2_K) {
        const kvq_block_q2_K *b = (const kvq_block_q2_K *)row + i / 256;
        const uint8_t sc = b->scales[i % 256 / 16];
        *d = kvq_f16_to_f32(b->d) * (float)(sc & 0xF);
        *m = -kvq_f16_to_f32(b->dmin) * (float)(sc >> 4);
        *qmax = 3;
    } else if (type == KVQ_TYPE_Q3_K) {
        /* d (u - 4), u in 0..7, d of either sign: as an affine grid |d| q - 4|d| or - 3|d| */
        const kvq_block_q3_K *b = (const kvq_block_q3_K *)row + i / 256;
        int8_t sc[16];
        kvq_q3_K_scales(b->scales, sc);
        const float dl = kvq_f16_to_f32(b->d) * (float)sc[i % 256 / 16];
        *d = fabsf(dl);
        *m = dl >= 0 ? -4 * dl : 3 * dl;
        *qmax = 7;
    } else {
        const size_t bb = kvq_row_size(type, 256);
        const kvq_block_q4_K *b = (const kvq_block_q4_K *)(row + (size_t)(i / 256) * bb); /* q5_K: the same head */
        uint8_t sc, mn;
        kvq_k4_scale_min(i % 256 / 32, b->scales, &sc, &mn);
        *d = kvq_f16_to_f32(b->d) * sc;
        *m = -kvq_f16_to_f32(b->dmin) * mn;
        *qmax = type == KVQ_TYPE_Q5_K ? 31 : 15;
    }
}

static void test_gptq_q4_blocks(void **st) {
    (void)st;
    uint64_t s = 17;
    const int rows = 16, cols = 512, n = 900;
    float *W = malloc(rows * cols * sizeof *W), *X = malloc((size_t)n * cols * sizeof *X), *H = calloc(cols * cols, sizeof *H);
    for (int i = 0; i < rows * cols; i++) W[i] = tu_randn(&s);
    for (int t = 0; t < n; t++) {
        const float z = tu_randn(&s);
        for (int j = 0; j < cols; j++) X[t * cols + j] = (tu_randn(&s) + 0.8f * z) * (j % 31 == 0 ? 4.0f : 1.0f);
    }
    for (int t = 0; t < n; t++)
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < cols; j++) H[i * cols + j] += X[t * cols + i] * X[t * cols + j] / n;
    const int types[] = {KVQ_TYPE_Q4_0, KVQ_TYPE_Q4_1, KVQ_TYPE_Q2_K, KVQ_TYPE_Q3_K, KVQ_TYPE_Q4_K, KVQ_TYPE_Q5_K};
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        const int type = types[k];
        const kvq_type_traits *tr = kvq_traits((kvq_type)type);
        const size_t rb = kvq_row_size(type, cols);
        uint8_t *blk = malloc(rb * rows);
        float *back = malloc(cols * sizeof *back);
        kvq_wq_params p = kvq_wq_default_params();
        kvq_wq_report rg, rr;
        p.method = KVQ_WQ_GPTQ;
        assert_int_equal(kvq_wq_matrix_q4(&p, type, W, rows, cols, H, X, 256, blk, &rg, NULL), KVQ_OK);
        /* every value read back by kvq's scalar dequantizer is a code of its (sub-)block's grid */
        for (int r = 0; r < rows; r++) {
            tr->to_float(blk + r * rb, back, cols);
            for (int i = 0; i < cols; i++) {
                float d, m;
                int qmax;
                block_affine(type, blk + r * rb, i, &d, &m, &qmax);
                const float q = d != 0 ? (back[i] - m) / d : 0;
                if (!(fabsf(q - roundf(q)) < 1e-2f && q > -0.5f && q < qmax + 0.5f))
                    fail_msg("%s row %d: value %.5f is not a code of its block", kvq_type_name(type), r, back[i]);
            }
        }
        p.method = KVQ_WQ_RTN;
        assert_int_equal(kvq_wq_matrix_q4(&p, type, W, rows, cols, H, X, 256, blk, &rr, NULL), KVQ_OK);
        if (!(rg.rel_err < 0.8 * rr.rel_err))
            fail_msg("%s: GPTQ error %.5f is not well below RTN's %.5f", kvq_type_name(type), rg.rel_err, rr.rel_err);
        /* RTN writes the type's own blocks (up to ties in the rounding) */
        if (type != KVQ_TYPE_Q4_1) {
            uint8_t *ref = malloc(rb);
            int same = 0;
            for (int r = 0; r < rows; r++) {
                tr->from_float(W + r * cols, ref, cols);
                same += !memcmp(ref, blk + r * rb, rb);
            }
            if (same < rows / 2) fail_msg("RTN %s matches the reference on only %d of %d rows", kvq_type_name(type), same, rows);
            free(ref);
        }
        free(blk);
        free(back);
    }
    free(W); free(X); free(H);
}

static void test_bad_params(void **st) {
    (void)st;
    tu_log lg = {0};
    kvq_logger l = {tu_log_cb, &lg};
    float W[64 * 4] = {0};
    int8_t bits[4];
    uint8_t codes[256];
    kvq_f16 dm[64];
    kvq_wq_report rep;
    kvq_wq_params p = kvq_wq_default_params();
    p.method = KVQ_WQ_RTN;
    p.bits = 5;
    assert_int_equal(kvq_wq_matrix(&p, W, 4, 64, NULL, NULL, 0, bits, codes, dm, &rep, &l), KVQ_ERR_ARG);
    p.bits = 2;
    p.group = 48;
    assert_int_equal(kvq_wq_matrix(&p, W, 4, 64, NULL, NULL, 0, bits, codes, dm, &rep, &l), KVQ_ERR_ARG);
    assert_non_null(strstr(lg.last, "group 48"));
    p.group = 32;
    p.method = KVQ_WQ_GPTQ;
    assert_int_equal(kvq_wq_matrix(&p, W, 4, 64, NULL, NULL, 0, bits, codes, dm, &rep, &l), KVQ_ERR_ARG);
    assert_non_null(strstr(lg.last, "calibration"));
    /* standard blocks: a type GPTQ does not write, and rows that are no multiple of a K super-block */
    p.method = KVQ_WQ_RTN;
    static uint8_t blk[4 * 288];
    static float W288[4 * 288];
    assert_int_equal(kvq_wq_matrix_q4(&p, KVQ_TYPE_Q6_K, W288, 4, 256, NULL, NULL, 0, blk, &rep, &l),
                     KVQ_ERR_UNSUPPORTED);
    assert_int_equal(kvq_wq_matrix_q4(&p, KVQ_TYPE_Q4_K, W288, 4, 288, NULL, NULL, 0, blk, &rep, &l), KVQ_ERR_ARG);
    assert_non_null(strstr(lg.last, "rows of 288 are not a multiple of q4_K's block of 256"));
    assert_int_equal(kvq_wq_matrix_q4(&p, KVQ_TYPE_Q4_0, W288, 4, 288, NULL, NULL, 0, blk, &rep, &l), KVQ_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_roundtrip), cmocka_unit_test(test_kernels_match),
        cmocka_unit_test(test_pk_layout),
        cmocka_unit_test(test_check_refuses),  cmocka_unit_test(test_sba_average),
        cmocka_unit_test(test_gptq_direct),    cmocka_unit_test(test_gptq_q4_blocks),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
