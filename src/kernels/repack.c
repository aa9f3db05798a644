/* Which types have a repacked decode layout, on which ISA, and the shared
 * activation layout (repack.h, repack_act.h). */
#include "repack.h"

#include <immintrin.h>
#include <string.h>

#include "../core/cpu.h"
#include "quant_ref.h"
#include "repack_act.h"
#include "simd_x86.h"
#include "slim.h"
#include "slim_pk.h"

size_t kvq_x8_act_size(int64_t cols) { return (size_t)(cols / 32) * sizeof(kvq_x8_act); }

void kvq_x8_quant_ref(const float *x, void *act, int64_t cols) {
    kvq_x8_act *a = act;
    for (int64_t b = 0; b < cols / 32; b++) {
        kvq_quant32_ref(x + 32 * b, a[b].qs, &a[b].d);
        int32_t s = 0;
        for (int i = 0; i < 32; i++) s += a[b].qs[i];
        a[b].c = -8 * s;
    }
}

/* The same bytes as the reference (simd_x86.h says why). Scalar, this was
 * about a third of a 2048-wide product in L2. */
__attribute__((target("avx2,fma,f16c"))) void kvq_x8_quant_avx2(const float *x, void *act, int64_t cols) {
    kvq_x8_act *a = act;
    for (int64_t b = 0; b < cols / 32; b++) {
        const float *p = x + 32 * b;
        const float d = kvq_absmax_avx2(p, 32) / 127.0f;
        const __m256i q = kvq_i8x32_avx2(p, _mm256_set1_ps(d ? 1.0f / d : 0.0f));
        _mm256_storeu_si256((__m256i *)a[b].qs, q);
        a[b].d = d;
        a[b].c = -8 * kvq_hsum8_epi32(kvq_i8_sum4_avx2(q));
    }
}

/* AVX-512 hosts (which all have VNNI here, cpu.c) take the 16-row layout
 * for the 32-wide types, and the AVX2 8-row kernels for Q2_K and Q3_K,
 * which have no AVX-512 kernel of their own. On a Zen 5 host (bench/README.md)
 * the file-layout AVX-512 kernels streamed from DRAM at 24-65% of the
 * repacked kernels' rate. Q4_K and Q6_K keep the file layout there: Q6_K's
 * AVX-512 kernel was as fast as its 8-row one, and Q4_K's 8-row kernel
 * decoded no faster in the whole model while prefill, which a repacked
 * matrix also runs through its kernel, fell to half of the int8 GEMM's
 * (gemm_i8.c). */
const kvq_packed_kernel *kvq_repack_kernel(kvq_type t, int isa) {
    if (isa < KVQ_ISA_AVX2) return NULL;
    if (isa >= KVQ_ISA_AVX512) {
        if (t == KVQ_TYPE_Q4_0) return &kvq_q4_0x16_vnni;
        if (t == KVQ_TYPE_Q8_0) return &kvq_q8_0x16_vnni;
        if (t == KVQ_TYPE_Q5_0) return &kvq_q5_0x16_vnni;
        if (t == KVQ_TYPE_IQ4_NL) return &kvq_iq4_nlx16_vnni;
        if (t == KVQ_TYPE_Q4_K || t == KVQ_TYPE_Q6_K) return NULL;
    }
    if (t == KVQ_TYPE_Q4_0) return &kvq_q4_0x8_avx2;
    if (t == KVQ_TYPE_Q8_0) return &kvq_q8_0x8_avx2;
    if (t == KVQ_TYPE_Q5_0) return &kvq_q5_0x8_avx2;
    if (t == KVQ_TYPE_IQ4_NL) return &kvq_iq4_nlx8_avx2;
    if (t == KVQ_TYPE_Q4_K) return &kvq_q4_Kx8_avx2;
    if (t == KVQ_TYPE_Q6_K) return &kvq_q6_Kx8_avx2;
    if (t == KVQ_TYPE_Q2_K) return &kvq_q2_Kx8_avx2;
    if (t == KVQ_TYPE_Q3_K) return &kvq_q3_Kx8_avx2;
    return NULL;
}

const kvq_packed_kernel *kvq_repack_kernel_ref(kvq_type t) {
    if (t == KVQ_TYPE_Q4_0) return &kvq_q4_0x8_ref;
    if (t == KVQ_TYPE_Q8_0) return &kvq_q8_0x8_ref;
    if (t == KVQ_TYPE_Q5_0) return &kvq_q5_0x8_ref;
    if (t == KVQ_TYPE_IQ4_NL) return &kvq_iq4_nlx8_ref;
    if (t == KVQ_TYPE_Q4_K) return &kvq_q4_Kx8_ref;
    if (t == KVQ_TYPE_Q6_K) return &kvq_q6_Kx8_ref;
    if (t == KVQ_TYPE_Q2_K) return &kvq_q2_Kx8_ref;
    if (t == KVQ_TYPE_Q3_K) return &kvq_q3_Kx8_ref;
    return NULL;
}

const kvq_packed_kernel *kvq_packed_ref(const kvq_packed_kernel *k, kvq_type t) {
    return k->ref ? k->ref : k->pack ? k : kvq_repack_kernel_ref(t);
}

void kvq_packed_rows(const kvq_packed_kernel *k, kvq_type t, const void *src, size_t row_bytes, int64_t cols,
                     int64_t rows, int64_t r0, int64_t r1, void *dst) {
    if (k->pack) k->pack(src, row_bytes, cols, rows, r0, r1, dst);
    else kvq_repack_rows(t, src, row_bytes, cols, rows, r0, r1, dst);
}

bool kvq_repack_fits(kvq_type t, int64_t cols) {
    return kvq_repack_kernel_ref(t) && cols > 0 && cols % (kvq_type_blck(t) == 256 ? 256 : 32) == 0;
}

size_t kvq_repack_act_size(kvq_type t, int64_t cols) {
    if (kvq_slim_bits(t)) return kvq_slim_pk_act_size(cols); /* slim_pk.h */
    const kvq_packed_kernel *k = kvq_repack_kernel_ref(t);
    return k ? k->act_size(cols) : 0;
}

void kvq_repack_rows(kvq_type t, const void *src, size_t row_bytes, int64_t cols, int64_t rows, int64_t r0,
                     int64_t r1, void *dst) {
    if (t == KVQ_TYPE_Q4_0) kvq_q4_0x8_pack(src, row_bytes, cols, rows, r0, r1, dst);
    if (t == KVQ_TYPE_Q8_0) kvq_q8_0x8_pack(src, row_bytes, cols, rows, r0, r1, dst);
    if (t == KVQ_TYPE_Q5_0) kvq_q5_0x8_pack(src, row_bytes, cols, rows, r0, r1, dst);
    if (t == KVQ_TYPE_IQ4_NL) kvq_iq4_nlx8_pack(src, row_bytes, cols, rows, r0, r1, dst);
    if (t == KVQ_TYPE_Q4_K) kvq_q4_Kx8_pack(src, row_bytes, cols, rows, r0, r1, dst);
    if (t == KVQ_TYPE_Q6_K) kvq_q6_Kx8_pack(src, row_bytes, cols, rows, r0, r1, dst);
    if (t == KVQ_TYPE_Q2_K) kvq_q2_Kx8_pack(src, row_bytes, cols, rows, r0, r1, dst);
    if (t == KVQ_TYPE_Q3_K) kvq_q3_Kx8_pack(src, row_bytes, cols, rows, r0, r1, dst);
}
