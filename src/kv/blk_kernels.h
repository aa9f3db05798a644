/* Fused attention kernels for the llama.cpp-compatible q8_0 / q4_0 KV caches
 * (codec_pertoken.c): a token's key or value is head_dim/32 ggml blocks
 * (fp16 d, then 32 int8 codes or 16 bytes of nibbles), held in tiles of 8
 * tokens (below). Scalar reference + AVX2.
 *
 * Keys: the query is quantized once per call to int16 per block of 32
 * (q16 = round(q * 32767 / max|q|), scale sq = max|q| / 32767), so a block's
 * dot is an exact integer sum of code x q16; the score is
 * sum over blocks of fmaf(isum, d * sq, acc), in block order. The int16
 * rounding adds a relative error near 1e-5 per query value, far below the
 * cache's own (int8 codes: 4e-3), unlike the int8 query llama.cpp uses.
 * Values: 16-bit integer weights against the codes (blk_kernels.c).
 *
 * Keys and values are stored in tiles of 8 tokens, not in rows. A key
 * row's dot needs a horizontal sum per block, which cost more than the
 * products on AVX2 (30 ns per token for 4 query heads at head_dim 64), and
 * value rows had to be paired token by token before each pmaddwd. A tile
 * holds, per block of 32 channels, the 8 tokens' fp16 d (16 bytes), then
 * the code bytes of the 8 ggml blocks, rearranged in 16-byte chunks:
 *  - keys: chunk p (0 <= p < B/2, B = 32 code bytes for q8_0, 16 for
 *    q4_0), byte 2t + e = token t's code byte 2p + e. Widened to int16 a
 *    chunk is 8 tokens x 2 channels: one pmaddwd per query gives the 8
 *    tokens' sums side by side.
 *  - values: token pair P (tokens 2P, 2P+1), chunk j (0 <= j < B/8), byte
 *    2c + e = token 2P + e's code byte 8j + c. Widened, a chunk is 8
 *    channels x 2 tokens: one pmaddwd against the pair's two weights.
 * (q4_0's byte i holds channel i in its low nibble and 16 + i in its high
 * one, so a q4_0 chunk serves two sets of channels.) Same bytes as the
 * ggml blocks, so the same size; kvq_blk_put/get convert a token's row.
 *
 * A query's result never depends on the other queries of the call, bit for
 * bit (the attention driver batches query positions). */
#ifndef KVQ_KV_BLK_KERNELS_H
#define KVQ_KV_BLK_KERNELS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* bytes of one ggml block (fp16 d and 32 codes), and of one tile of 8
 * tokens' keys or values (8 ggml block rows) */
static inline size_t kvq_blk_block_bytes(bool q8) { return q8 ? 34 : 18; }
static inline size_t kvq_blk_tile_bytes(int hd, bool q8) { return (size_t)hd / 32 * 8 * kvq_blk_block_bytes(q8); }
/* token t's key or value (tile t / 8, lane t % 8) from / to a ggml block row */
void kvq_blk_put(uint8_t *tiles, int t, int hd, bool q8, bool value, const uint8_t *row);
void kvq_blk_get(const uint8_t *tiles, int t, int hd, bool q8, bool value, uint8_t *row);

typedef struct kvq_blk_kernels {
    /* s[g*lds + i] = q_g . k(token t0 + i), i < n, the keys in tiles from
     * `tiles` (token 0 at lane 0 of the first); hd a multiple of 32. Lanes
     * of a partial tile outside the range are read, not used. */
    void (*qk)(const uint8_t *tiles, int t0, int n, int hd, bool q8, const float *q, int nq, float *s, int lds);
    /* out[g*hd + c] += sum_{i<n} w[g*ldw + i] * v(token t0 + i)[c], the
     * values in tiles as the keys are */
    void (*av)(const uint8_t *tiles, int t0, int n, int hd, bool q8, const float *w, int ldw, int nq, float *out);
} kvq_blk_kernels;

const kvq_blk_kernels *kvq_blk_kernels_isa(int isa);

#endif
