/* kvq's weight types against ggml's, the independent implementation that
 * wrote the files users bring. Built and run by bench/ggml-types-check.sh
 * against a llama.cpp build; never by CI.
 *
 * Per type, on Gaussian rows (and rows with outliers):
 *   1. ggml quantizes; kvq's dequantizer (scalar and the active ISA) must give
 *      ggml's dequantized values (max relative difference printed);
 *   2. kvq's dot product against ggml's on the same blocks and activations
 *      (each quantizes the activations to its own partner type);
 *   3. kvq quantizes; ggml's dequantizer must read kvq's blocks as kvq does. */
#include <ggml-cpu.h>
#include <ggml.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant_ref.h"
#include "kernels/types.h"
#include "core/cpu.h"

static double randn(unsigned long long *s) {
    double uv[2];
    for (int k = 0; k < 2; k++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        uv[k] = ((*s >> 11) + 0.5) / 9007199254740992.0;
    }
    const double u = uv[0], v = uv[1];
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double scale = 0, m = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(a[i]));
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return scale ? m / scale : m;
}

int main(void) {
    /* kvq and ggml share the GGUF type ids */
    const int types[] = {KVQ_TYPE_Q4_0, KVQ_TYPE_Q4_1, KVQ_TYPE_Q5_0, KVQ_TYPE_Q5_1, KVQ_TYPE_Q8_0, KVQ_TYPE_Q2_K,
                         KVQ_TYPE_Q3_K, KVQ_TYPE_Q4_K, KVQ_TYPE_Q5_K, KVQ_TYPE_Q6_K, KVQ_TYPE_IQ4_NL, KVQ_TYPE_IQ4_XS};
    const int64_t n = 4096, rows = 8;
    ggml_cpu_init();
    float *x = malloc(sizeof(float) * n * rows), *act = malloc(sizeof(float) * n);
    float *yg = malloc(sizeof(float) * n * rows), *yk = malloc(sizeof(float) * n * rows);
    unsigned char *q = malloc((size_t)n * rows * 2), *qa = malloc((size_t)n * 4), *qk = malloc((size_t)n * 4);
    unsigned long long s = 42;
    for (int64_t i = 0; i < n * rows; i++) x[i] = (float)randn(&s) * (i % 97 == 0 ? 8.0f : 1.0f);
    for (int64_t i = 0; i < n; i++) act[i] = (float)randn(&s);
    int bad = 0;
    printf("%-7s %14s %14s %14s %14s\n", "type", "dequant ref", "dequant isa", "dot rel diff", "kvq blocks");
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        const int t = types[k];
        const struct ggml_type_traits *gt = ggml_get_type_traits((enum ggml_type)t);
        const struct ggml_type_traits_cpu *gc = ggml_get_type_traits_cpu((enum ggml_type)t);
        const kvq_type_traits *ref = kvq_traits_isa((kvq_type)t, KVQ_ISA_SCALAR), *isa = kvq_traits((kvq_type)t);
        if (!ref || !isa || kvq_row_size(t, n) != ggml_row_size((enum ggml_type)t, n)) {
            printf("%-7s kvq has no kernels or another row size\n", gt->type_name);
            bad++;
            continue;
        }
        const size_t rb = kvq_row_size(t, n);
        ggml_quantize_chunk((enum ggml_type)t, x, q, 0, rows, n, NULL);
        gt->to_float(q, yg, n * rows);
        ref->to_float(q, yk, n * rows);
        double e_ref = max_rel(yg, yk, n * rows);
        isa->to_float(q, yk, n * rows);
        double e_isa = max_rel(yg, yk, n * rows);
        /* dots: ggml's vec_dot on its partner type, kvq's on its own */
        double e_dot = 0;
        const kvq_type_traits *kp = kvq_traits(isa->dot_type);
        for (int64_t r = 0; r < rows; r++) {
            float dg = 0;
            const struct ggml_type_traits_cpu *gp = ggml_get_type_traits_cpu(gc->vec_dot_type);
            gp->from_float(act, qa, n);
            gc->vec_dot((int)n, &dg, 0, q + r * rb, 0, qa, 0, 1);
            kp->from_float(act, qk, n);
            float dk = isa->vec_dot(q + r * rb, qk, n);
            double exact = 0, norm = 0;
            gt->to_float(q + r * rb, yg, n);
            for (int64_t i = 0; i < n; i++) exact += (double)yg[i] * act[i], norm += fabs((double)yg[i] * act[i]);
            /* both differ from the exact dot by their activation rounding; compare them on that scale */
            e_dot = fmax(e_dot, fabs((double)dk - dg) / norm);
        }
        /* kvq's quantizer: ggml must read the blocks as kvq does */
        ref->from_float(x, q, n * rows);
        gt->to_float(q, yg, n * rows);
        ref->to_float(q, yk, n * rows);
        double e_kvq = max_rel(yg, yk, n * rows);
        int ok = e_ref < 1e-6 && e_isa < 1e-6 && e_kvq < 1e-6 && e_dot < 2e-3;
        bad += !ok;
        printf("%-7s %14.3g %14.3g %14.3g %14.3g %s\n", gt->type_name, e_ref, e_isa, e_dot, e_kvq, ok ? "ok" : "MISMATCH");
    }
    printf("%s\n", bad ? "FAILED" : "all types agree with ggml");
    return bad != 0;
}
