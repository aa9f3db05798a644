/* The steps of the hier codec's integer attention that the AVX2 and AVX-512
 * kernels share (hier_kernels.c): the rounding of queries and weights to the
 * 8-bit factors (and, for the target view, their low bytes) that both feed to
 * their integer products. Sharing them is what makes the two ISAs' integer
 * sums identical, so their results agree bit for bit. */
#ifndef KVQ_KV_HIER_X86_H
#define KVQ_KV_HIER_X86_H
#include <stdbool.h>
#include <stdint.h>
#include "../core/fp16.h"

#if defined(__x86_64__)
#define KVQ_HIER_T2 __attribute__((target("avx2,fma,f16c")))

/* A key block's channel minimums and steps in a view (ms as hier_kernels.h). */
KVQ_HIER_T2 void kvq_hier_kms_avx2(bool target, const kvq_f16 *ms, int hd, float *mn, float *sc);

/* ng queries as int8 (hd % 8 == 0): qh[g*ldq + d] and, for the target view,
 * the low parts ql; al[g] the integer sum's scale (the view's divisor
 * included), bs[g] = sum_d q_d mn_d. */
KVQ_HIER_T2 void kvq_hier_qint_avx2(bool target, const float *q, int ng, int hd, const float *mn, const float *sc,
                                    int8_t *qh, int8_t *ql, int ldq, float *al, float *bs);

/* The (mn, sc) of value group gr for np tokens; ms at the first token's pairs. */
KVQ_HIER_T2 void kvq_hier_vms_avx2(bool target, const kvq_f16 *ms, int np, int ng, int gr, float *mn, float *sc);

/* One query's weights over a pass of np tokens starting at byte off of nquad
 * quads (4 * nquad bytes, zero outside the pass): wq 8 unsigned bits, wl (the
 * target view's) signed low parts; beta the scale (the view's divisor
 * included), mt = sum_i w_i mn_i. */
KVQ_HIER_T2 void kvq_hier_wint_avx2(bool target, const float *w, const float *mn, const float *sc, int np, int off,
                                    int nquad, uint8_t *wq, int8_t *wl, float *beta, float *mt);

/* hier_kernels_avx512.c */
struct kvq_hier_kernels;
extern const struct kvq_hier_kernels kvq_hier_k_avx512;
#endif

#endif
