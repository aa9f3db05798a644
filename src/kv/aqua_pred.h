/* AQUA-KV's predictors: per layer l >= 1, keys from the layer below's
 * reconstructed keys and values from this layer's reconstructed keys and
 * the layer below's reconstructed values,
 *     p_k = A_l k_hat_{l-1} + a_l          A_l [C][C]
 *     p_v = B_l [k_hat_l ; v_hat_{l-1}] + b_l   B_l [C][2C]
 * (C = n_head_kv * head_dim, keys before RoPE), stored in a GGUF side file
 * with the fingerprint of the model they were fitted on:
 *     aqua.fingerprint (string, hex), aqua.n_layer, aqua.n_embd_kv (u32),
 *     aqua.bits (u32), aqua.quantizer ("higgs" | "uniform"), aqua.calib_tokens (u32),
 *     aqua.relmse_k / aqua.relmse_v (f32 arrays, held-out, per layer)
 *     tensors aqua.blk.L.k.weight [C x C], aqua.blk.L.k.bias [C],
 *             aqua.blk.L.v.weight [2C x C], aqua.blk.L.v.bias [C]   (f32, L = 1..n_layer-1)
 * A file is untrusted: the fingerprint, every shape and every value (no
 * NaN or infinity) are checked when it is loaded. */
#ifndef KVQ_KV_AQUA_PRED_H
#define KVQ_KV_AQUA_PRED_H
#include <stdint.h>
#include "../io/gguf.h"

typedef struct kvq_aqua_pred {
    int n_layer, C, bits, kind;
    uint32_t calib_tokens;
    const float **A, **a, **B, **b; /* [n_layer], entries for l >= 1 */
    float *relmse_k, *relmse_v;     /* [n_layer], NULL when absent */
    uint64_t n_params;
    kvq_gguf g;
} kvq_aqua_pred;

/* fingerprint 0: not checked (a caller that cannot know the model). */
kvq_status kvq_aqua_pred_load(const char *path, int n_layer, int C, uint64_t fingerprint, kvq_aqua_pred *p,
                              const kvq_logger *lg, char *err, size_t err_cap);
void kvq_aqua_pred_free(kvq_aqua_pred *p);

/* Writes predictors given as full arrays (calibration). */
kvq_status kvq_aqua_pred_write(const char *path, int n_layer, int C, uint64_t fingerprint, int bits, int kind,
                               uint32_t calib_tokens, float *const *A, float *const *a, float *const *B,
                               float *const *b, const float *relmse_k, const float *relmse_v, const kvq_logger *lg);

#endif
