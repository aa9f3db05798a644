/* Fast Walsh-Hadamard transform: x <- H x for n = 2^k values, H unnormalized
 * (entries +-1, H H = n I). The per-token KV codecs' `rot` option and the
 * HIGGS quantizer of AQUA-KV residuals rotate with it. */
#ifndef KVQ_KERNELS_FWHT_H
#define KVQ_KERNELS_FWHT_H

void kvq_fwht_ref(float *x, int n);  /* scalar reference */
void kvq_fwht_avx2(float *x, int n); /* AVX2; n < 8 falls back to the reference */
void kvq_fwht(float *x, int n);      /* the active ISA's */

#endif
