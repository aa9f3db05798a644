/* SIMD kernel sets. Each file is compiled with its own target attributes and
 * only installed into the trait table when CPUID reports the ISA. */
#ifndef KVQ_KERNELS_SIMD_H
#define KVQ_KERNELS_SIMD_H
#include <stdbool.h>
#include "types.h"

void kvq_simd_install_avx2(kvq_type_traits *table);
/* Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q2_K, Q3_K (simd_avx2_lowbit.c); part of the AVX2 set. */
void kvq_simd_install_avx2_lowbit(kvq_type_traits *table);
/* vbmi: the CPU has AVX-512 VBMI (the Q4_0 decode layout needs its byte permutes). */
void kvq_simd_install_avx512(kvq_type_traits *table, bool vbmi);

#endif
