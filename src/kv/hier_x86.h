/* Steps of the hier codec's integer attention written once for the AVX2 and
 * AVX-512 kernels (hier_kernels.c): the views' minimums and steps. (The
 * rounding of queries and weights to 8-bit factors the AVX-512 file redoes 16
 * lanes wide, with the AVX2 code's operations and summation order.) Equal
 * factors and exact integer sums make the two ISAs agree bit for bit. */
#ifndef KVQ_KV_HIER_X86_H
#define KVQ_KV_HIER_X86_H
#include <stdbool.h>
#include <stdint.h>
#include "../core/fp16.h"

#if defined(__x86_64__)
#define KVQ_HIER_T2 __attribute__((target("avx2,fma,f16c")))

/* A key block's channel minimums and steps in a view (ms as hier_kernels.h). */
KVQ_HIER_T2 void kvq_hier_kms_avx2(bool target, const kvq_f16 *ms, int hd, float *mn, float *sc);

/* The (mn, sc) of value group gr for np tokens; ms at the first token's pairs. */
KVQ_HIER_T2 void kvq_hier_vms_avx2(bool target, const kvq_f16 *ms, int np, int ng, int gr, float *mn, float *sc);

/* hier_kernels_avx512.c */
struct kvq_hier_kernels;
extern const struct kvq_hier_kernels kvq_hier_k_avx512;
#endif

#endif
