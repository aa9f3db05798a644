/* Attention kernels shared by the KV codecs, each with a scalar reference.
 *
 * Keys are stored in tiles of KVQ_KT slots, transposed ([dim][slot]), so a
 * query is broadcast one dimension at a time against a whole tile: no
 * horizontal reductions, and quantized codecs (KIVI keys, per channel over
 * blocks of tokens) use the same shape. Values stay row-major. */
#ifndef KVQ_KV_SIMD_H
#define KVQ_KV_SIMD_H
#include <stdint.h>

#define KVQ_KT 32

typedef struct kvq_attn_kernels {
    /* s[g*lds + j] = sum_d q[g*hd + d] * kt[d*KVQ_KT + j], j < KVQ_KT (a full key tile) */
    void (*qk_tile_f16)(const uint16_t *kt, int hd, const float *q, int nq, float *s, int lds);
    void (*qk_tile_f32)(const float *kt, int hd, const float *q, int nq, float *s, int lds);
    /* out[g*hd + d] += sum_{i<n} w[g*ldw + i] * v[i*hd + d] */
    void (*av_f16)(const uint16_t *v, int n, int hd, const float *w, int ldw, int nq, float *out);
    void (*av_f32)(const float *v, int n, int hd, const float *w, int ldw, int nq, float *out);
    /* Online-softmax step over one tile of scores: s *= scale; m' = max(m, s);
     * s = exp(s - m'); returns the correction exp(m - m') and adds sum(s) to *l
     * after scaling *l by it; *m = m'. */
    float (*softmax_step)(float *s, int n, float scale, float *m, float *l);
} kvq_attn_kernels;

const kvq_attn_kernels *kvq_attn_kernels_isa(int isa);
const kvq_attn_kernels *kvq_attn_kernels_active(void);

#endif
