/* Hybrid sparse attention (RocketKV stage 2): per-page element-wise key
 * bounds, kept channel-major so scoring streams one channel's bounds over all
 * pages, and the per-step choice of pages for one query group:
 *   a_i = sum_h |q_h,i|, I = the top-r channels;  s_i = sign(sum_h q_h,i)
 *   u_h,p = sum_{i in I} q_h,i * (s_i > 0 ? Kmax[i][p] : Kmin[i][p])
 *   tau_h = sqrt(D * sum_{i in I}|q_h,i| / sum_i |q_h,i|)
 *   score_p = sum_h softmax over tokens of u_h/tau_h (a page's score counts once per token)
 * and the top pages hold k tokens, shared by the group. Summaries follow the
 * cache: appended tokens extend them, truncation and compaction rebuild the
 * pages they touch from the codec's own keys. Bounds are fp16, rounded
 * outwards (a page's min down, its max up), so they stay bounds; their memory
 * is charged to the cache like its pages. */
#ifndef KVQ_KV_HSA_H
#define KVQ_KV_HSA_H
#include "kv.h"

typedef struct kvq_hsa {
    int page, n_layer, n_head_kv, head_dim;
    int *n_slots;        /* [n_layer] slots summarized */
    int *cap_pages;      /* [n_layer] pages the arrays hold */
    uint16_t **mn, **mx; /* [n_layer] -> [n_head_kv][head_dim][cap_pages], fp16 */
    kvq_kv_mem *mem;
    uint64_t bytes;      /* held by the arrays */
} kvq_hsa;

kvq_status kvq_hsa_init(kvq_hsa *s, const kvq_kv_cache *c, int page);
void kvq_hsa_free(kvq_hsa *s);
/* Keys (post-RoPE) [n][n_head_kv*head_dim] of slots [slot0, slot0+n) of layer il. */
kvq_status kvq_hsa_append(kvq_hsa *s, int il, const float *k, int n, int slot0);
/* Layer il now holds n slots (truncation, compaction): rebuilds from the
 * codec's keys whatever is no longer exact. from: the first slot that changed. */
kvq_status kvq_hsa_resync(kvq_hsa *s, kvq_kv_cache *c, int il, int from);
/* Bytes of summaries per page-worth of tokens: exact accounting. */
uint64_t kvq_hsa_bytes_for(const kvq_hsa *s, int64_t n_slots);

/* Chooses pages for the n_q query heads q[n_q][head_dim] of KV head h at
 * layer il over slots [0, n_vis): r channels, k tokens (rounded up to whole
 * pages). cand (optional, one byte per page) limits the choice to candidate
 * pages plus every page from cand_from on. Writes merged spans; returns
 * their count, or -1 when the choice would cover everything. */
int kvq_hsa_select(const kvq_hsa *s, int il, int h, const float *q, int n_q, int n_vis, int r, int k,
                   const uint8_t *cand, int cand_from, kvq_span *out, int cap);

/* The score of every page (the quantity ranked above), for tests: out[n_pages]. */
void kvq_hsa_page_scores(const kvq_hsa *s, int il, int h, const float *q, int n_q, int n_vis, int r, float *out);

/* r for n_vis visible tokens and a token budget: the estimate reads about
 * what the chosen tokens do (r = D * page * budget / n_vis, in [1, D]); at
 * n_vis = RocketKV's cap this is the digest's r. */
int kvq_hsa_channels(int head_dim, int page, long budget, int n_vis);

#endif
