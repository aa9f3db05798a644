/* Row quantizers for AQUA-KV's residuals: a row of C values (all KV heads of
 * one token) in groups of g, each group stored as its codes plus fp16 scale
 * data, in row_bytes bytes:
 *   higgs    HIGGS vector quantization (higgs.h): the group's norm and one
 *            grid index per d values; 2 bits: d = 4, 256 points; 3 bits: d = 2,
 *            64 points; 4 bits: d = 2, 256 points;
 *   uniform  asymmetric min/scale per group, b-bit codes (the comparison).
 * g is the largest power of two dividing C, at most 1024: the group adapts to
 * the model's KV width, as HIGGS's Hadamard transform needs a power of two. */
#ifndef KVQ_QUANT_RESQ_H
#define KVQ_QUANT_RESQ_H
#include <stddef.h>
#include <stdint.h>
#include "../core/log.h"
#include "higgs.h"

enum { KVQ_RESQ_HIGGS = 0, KVQ_RESQ_UNIFORM = 1 };

typedef struct kvq_resq {
    int kind, bits, C, g;
    const kvq_higgs_grid *grid;
    int idx_bits;       /* bits per grid index (higgs) */
    size_t group_bytes, row_bytes;
} kvq_resq;

kvq_status kvq_resq_init(kvq_resq *q, int kind, int bits, int C);
void kvq_resq_quant(const kvq_resq *q, const float *x, uint8_t *out);
void kvq_resq_dequant(const kvq_resq *q, const uint8_t *in, float *x);

#endif
