/* Fused attention kernels for the llama.cpp-compatible q8_0 / q4_0 KV caches
 * (codec_pertoken.c): rows of head_dim/32 ggml blocks (fp16 d, then 32 int8
 * codes or 16 bytes of nibbles), rows `stride` bytes apart. Scalar reference
 * + AVX2.
 *
 * Keys: the query is quantized once per call to int16 per block of 32
 * (q16 = round(q * 32767 / max|q|), scale sq = max|q| / 32767), so a block's
 * dot is an exact integer sum of code x q16; the score is
 * sum over blocks of fmaf(isum, d * sq, acc), in block order. The int16
 * rounding adds a relative error near 1e-5 per query value, far below the
 * cache's own (int8 codes: 4e-3), unlike the int8 query llama.cpp uses.
 * Values: out += w * d * code, in float, token after token.
 *
 * A query's result never depends on the other queries of the call, bit for
 * bit (the attention driver batches query positions). */
#ifndef KVQ_KV_BLK_KERNELS_H
#define KVQ_KV_BLK_KERNELS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kvq_blk_kernels {
    /* s[g*lds + i] = q_g . k(row i), i < n; hd a multiple of 32 */
    void (*qk)(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *q, int nq, float *s, int lds);
    /* out[g*hd + c] += sum_{i<n} w[g*ldw + i] * v(row i)[c] */
    void (*av)(const uint8_t *rows, size_t stride, int n, int hd, bool q8, const float *w, int ldw, int nq, float *out);
} kvq_blk_kernels;

const kvq_blk_kernels *kvq_blk_kernels_isa(int isa);

#endif
