/* The KV cache: a storage codec crossed with a token policy.
 *
 * A codec decides how one layer's K/V for one token are stored and read back
 * (f32/f16 reference, KIVI/KVTuner quantized, QuantSpec 4+4 planes, AQUA-KV
 * residuals). It computes attention on its own compressed form through two
 * fused primitives, qk (scores) and av (weighted value sum); the shared
 * driver in kv_attn.c does the tiling, online softmax and threading.
 *
 * A policy decides which cached slots exist and which each query reads:
 * full, sinks + window, SnapKV eviction at end of prefill + per-step top-k
 * (RocketKV). It returns spans of slots per KV head; codecs never know.
 *
 * Slots: each layer holds n slots per KV head. Without eviction slot i is
 * the token at position i. Eviction (compact) keeps the same number of slots
 * per head but may keep different tokens per head; keys carry their RoPE, so
 * attention does not need positions afterwards. */
#ifndef KVQ_KV_KV_H
#define KVQ_KV_KV_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "../core/log.h"
#include "kv_pages.h"


#define KVQ_KV_MAX_OPTS 16

typedef struct kvq_kv_opt { char key[32]; char val[224]; } kvq_kv_opt;

typedef struct kvq_kv_spec {
    char codec[24];
    int n_copt;
    kvq_kv_opt copt[KVQ_KV_MAX_OPTS];
    char policy[24];
    int n_popt;
    kvq_kv_opt popt[KVQ_KV_MAX_OPTS];
} kvq_kv_spec;

/* CODEC[:OPT[,OPT]...][+POLICY[:OPT[,OPT]...]], OPT = key=value | word.
 * e.g. "f16", "kivi:k4v2,g=32", "kivi:layers=tuned.yaml+window:sink=4,win=512". */
kvq_status kvq_kv_spec_parse(const char *s, kvq_kv_spec *out, char *err, size_t err_cap);
/* Writes the canonical text of a spec. */
void kvq_kv_spec_format(const kvq_kv_spec *s, char *buf, size_t cap);

typedef struct kvq_kv_geom {
    int32_t n_layer, n_head, n_head_kv, head_dim, n_ctx;
    int32_t n_batch;  /* most tokens appended between commits (0: commit after every token) */
    uint64_t fingerprint; /* the model's (kvq_model_fingerprint), 0 when unknown: codecs with
                             calibrated data check theirs against it */
} kvq_kv_geom;

typedef struct kvq_kv_layer kvq_kv_layer;
typedef struct kvq_kv_cache kvq_kv_cache;

/* What a step is: prompt chunks and decode tokens are final once attended;
 * draft and verify tokens stay pending until kvq_kv_accept. */
typedef enum kvq_step_mode { KVQ_STEP_PROMPT, KVQ_STEP_DECODE, KVQ_STEP_DRAFT, KVQ_STEP_VERIFY } kvq_step_mode;

typedef struct kvq_kv_step {
    int32_t n;              /* tokens in the step */
    const int32_t *pos;     /* their positions [n] */
    kvq_step_mode mode;
    int view;               /* KVQ_VIEW_FULL or KVQ_VIEW_DRAFT */
    int32_t slots0;         /* slots held before the step (set by kvq_kv_step_begin) */
} kvq_kv_step;

typedef struct kvq_codec {
    const char *name;
    /* Keys arrive before RoPE (AQUA-KV predicts pre-RoPE keys); the codec then
     * rotates on read with kvq_kv_cache.rope. Otherwise keys arrive rotated. */
    bool prerope;
    /* Has a cheaper read view (QuantSpec's upper plane) for KVQ_VIEW_DRAFT. */
    bool has_draft_view;
    /* Parses codec options into one config per layer (cfg_size bytes each). */
    size_t cfg_size;
    kvq_status (*configure)(const kvq_kv_spec *s, const kvq_kv_geom *g, void *cfgs, char *err, size_t err_cap);
    /* Frees what configure loaded (a predictor file). NULL: nothing. */
    void (*release)(void *cfgs, int n_layer);
    /* Bytes the codec holds once, whatever the number of tokens (AQUA-KV's
     * predictors), not counted in bytes_for. NULL: none. */
    uint64_t (*aux_bytes)(const void *cfgs, int n_layer);
    /* Exact bytes one layer holds with n tokens: codes, scales, mins, windows, aux. */
    uint64_t (*bytes_for)(const kvq_kv_layer *L, int64_t n);
    /* Sets L->page (slots per page) and the fixed buffers; pages come with reserve. */
    kvq_status (*init)(kvq_kv_layer *L);
    void (*destroy)(kvq_kv_layer *L);
    /* Makes room for n slots in all (allocates pages), so that the appends and
     * commits of a step cannot fail half-way. */
    kvq_status (*reserve)(kvq_kv_layer *L, int n);
    /* Appends n tokens; k and v are [n][n_head_kv*head_dim], pos their
     * positions (NULL: slot order). Room was reserved. */
    kvq_status (*append)(kvq_kv_layer *L, const float *k, const float *v, int n, const int32_t *pos);
    /* Optional whole-layer work after the step's append and before attention
     * (cross-head, cross-layer: AQUA-KV). */
    kvq_status (*prepare)(kvq_kv_layer *L, const kvq_kv_step *s);
    /* After the attention that read the step's tokens, and after an accept:
     * slots [0, n_final) are verified. Codecs with a full-precision window
     * compress only verified slots, so a prefill chunk attends to its own
     * tokens at full precision (as the papers evaluate) and speculative tokens
     * are never flushed. NULL: the codec stores its final form on append. */
    void (*commit)(kvq_kv_layer *L, int n_final);
    /* scores[g*n + i] = q[g] . k(slot t0+i) for the n_q query heads q[g*head_dim] of KV head h.
     * [t0, t0+n) never crosses a page boundary (L->page). vis: the slots the
     * query may see (its position + 1), for codecs whose stored form a query
     * reads depends on where it stands (hier keeps a block in both forms
     * while queries on either side of its flush point may read it). */
    void (*qk)(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *q, int n_q, float *scores);
    /* out[g*head_dim + d] += sum_i w[g*n + i] * v(slot t0+i)[d]; same range rule */
    void (*av)(const kvq_kv_layer *L, int view, int vis, int h, int t0, int n, const float *w, int n_q, float *out);
    /* qk and av must compute each query's result independently of the other
     * queries of the call, bit for bit (the driver batches query positions).
     * When what they read depends on vis: the slot below which a query that
     * sees vis slots reads one stored form and from which it reads another
     * (two queries read a tile alike when it clamps to the same value within
     * the tile). NULL: reads do not depend on vis. */
    int (*read_bound)(const kvq_kv_layer *L, int vis);
    /* Dense reconstruction of slots [t0, t0+n): [n][n_head_kv*head_dim] (tests, scoring, conversion). */
    void (*read)(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v);
    /* Drops slots >= n and returns the pages they leave empty. */
    void (*truncate)(kvq_kv_layer *L, int n);
    /* Keeps slots keep[h*n_keep + j] (ascending per head), for eviction, and
     * returns the pages freed. NULL: kvq_kv_compact rebuilds the layer
     * through read + append (exact for codecs that re-encode losslessly). */
    kvq_status (*compact)(kvq_kv_layer *L, const int32_t *keep, int n_keep);
    /* Slots a key read touches at least (a transposed tile, a block); sparse
     * policies pick pages no smaller. NULL: 1. */
    int (*grain)(const kvq_kv_layer *L);
    kvq_status (*save)(const kvq_kv_layer *L, FILE *f);
    /* L->n is set and room reserved; the data is untrusted. */
    kvq_status (*load)(kvq_kv_layer *L, FILE *f);
} kvq_codec;

struct kvq_kv_layer {
    const kvq_codec *codec;
    const void *cfg;        /* this layer's codec config */
    int32_t il, n_head_kv, head_dim, cap, n_batch;
    int32_t n;              /* slots held */
    int32_t page;           /* slots per page (the attention driver never crosses one) */
    size_t page_bytes;      /* bytes per page (all heads) */
    void *state;
    kvq_kv_layer *prev;     /* the layer below, for cross-layer codecs (AQUA-KV) */
    kvq_kv_cache *cache;
};

typedef struct kvq_span { int32_t t0, t1; } kvq_span;

typedef struct kvq_policy {
    const char *name;
    kvq_status (*init)(kvq_kv_cache *c, char *err, size_t err_cap);
    void (*destroy)(kvq_kv_cache *c);
    /* After the codec appended n tokens to layer il at slots [slot0, slot0+n);
     * keys post-RoPE, [n][n_head_kv*head_dim] (per-page summaries). */
    void (*on_append)(kvq_kv_cache *c, int il, const float *k, int n, int slot0);
    /* Spans of slots KV head h of layer il reads for a query that may see
     * slots [0, n_vis). Returns the span count (<= cap), or -1 for "all".
     * Called in parallel over heads: it must only write out. */
    int (*select)(kvq_kv_cache *c, int il, int h, const float *q_group, int n_q, int n_vis, kvq_span *out, int cap);
    /* Once per layer when a prompt ends (eviction). */
    kvq_status (*prefill_end)(kvq_kv_cache *c, int il);
    /* Once per layer at the end of a step whose slots are all verified
     * (policies that free what they no longer read do it here). */
    kvq_status (*after_step)(kvq_kv_cache *c, int il);
    /* Slots >= n of layer il are gone. */
    void (*on_truncate)(kvq_kv_cache *c, int il, int n);
    /* Exact bytes of the policy's own data (page summaries), counted in bytes_used. */
    uint64_t (*bytes)(const kvq_kv_cache *c);
    /* The most slots layer il holds at the end of any step, however long the
     * context (NULL or 0: no bound; eviction after a prompt does not bound
     * what generation adds). */
    int32_t (*held_bound)(const kvq_kv_cache *c, int il);
    bool needs_compact;     /* evicts: the codec must compact */
    int32_t obs_window;     /* how many recent queries per layer the policy wants kept (init may change
                               kvq_kv_cache.obs_w from its options) */
    int32_t max_spans;      /* spans select may return (0: 1); init may raise kvq_kv_cache.max_spans */
} kvq_policy;

/* Where decode time goes, accumulated over the cache's life (bench). */
typedef struct kvq_kv_stats {
    uint64_t attn_ns;       /* kvq_kv_attend, selection included */
    uint64_t select_ns;     /* policy.select */
    uint64_t n_attn;        /* layer attentions */
} kvq_kv_stats;

struct kvq_kv_cache {
    kvq_kv_geom g;
    kvq_kv_stats stats;
    kvq_kv_spec spec;
    const kvq_codec *codec;
    const kvq_policy *policy;
    void *cfgs;             /* n_layer codec configs */
    void *pstate;           /* policy state */
    kvq_kv_layer *layers;
    kvq_kv_mem mem;         /* what the cache holds from the allocator */
    struct kvq_kv_pool *own_pool;
    kvq_kv_step step;       /* the step in progress */
    bool in_step;
    int32_t n_pending;      /* the newest slots, appended by draft/verify steps, not yet verified */
    int32_t obs_w;          /* queries per layer the ring keeps (the policy's obs_window, or its option) */
    int32_t max_spans;      /* spans select may return per (query, head) */
    int32_t n_threads;      /* threads for whole-cache work the policies do (eviction) */
    float *obs_q;           /* [n_layer][obs_w][n_head*head_dim], ring of recent queries */
    int32_t obs_n;          /* queries held in the ring */
    int32_t obs_head;
    const kvq_logger *lg;
    /* RoPE for codecs that store pre-RoPE keys: rotates n rows of keys at positions pos */
    void (*rope)(const void *user, float *k, int n, const int32_t *pos, int n_heads);
    const void *rope_user;
    /* attention scratch, grown on demand */
    float *scratch;
    size_t scratch_cap;
    float *kscratch;        /* rotated keys for policies of prerope codecs */
    size_t kscratch_cap;
};

const kvq_codec  *kvq_codec_find(const char *name);
const kvq_policy *kvq_policy_find(const char *name);
/* Comma-separated names of the registered codecs / policies. */
void kvq_codec_names(char *buf, size_t cap);
void kvq_policy_names(char *buf, size_t cap);

/* Memory: mem_cap bytes for this cache alone (0: none), pool a budget shared
 * with other caches (NULL: none). */
typedef struct kvq_kv_mem_opts { uint64_t cap; struct kvq_kv_pool *pool; } kvq_kv_mem_opts;

kvq_status kvq_kv_cache_new(const kvq_kv_geom *g, const char *spec, const kvq_logger *lg, kvq_kv_cache **out,
                            char *err, size_t err_cap);
kvq_status kvq_kv_cache_new_ex(const kvq_kv_geom *g, const char *spec, const kvq_kv_mem_opts *mem,
                               const kvq_logger *lg, kvq_kv_cache **out, char *err, size_t err_cap);
/* The same with the codec and policy given directly (tests inject recording
 * mocks; spec supplies their options). */
kvq_status kvq_kv_cache_new_with(const kvq_kv_geom *g, const kvq_kv_spec *spec, const kvq_codec *codec,
                                 const kvq_policy *policy, const kvq_kv_mem_opts *mem, const kvq_logger *lg,
                                 kvq_kv_cache **out, char *err, size_t err_cap);
void       kvq_kv_cache_free(kvq_kv_cache *c);

/* Bytes a spec needs for n tokens over all layers, without allocating. */
kvq_status kvq_kv_bytes_for(const kvq_kv_geom *g, const char *spec, int64_t n, uint64_t *bytes, char *err,
                            size_t err_cap);
/* Bytes a spec holds once outside the per-token cache (codec aux_bytes); aux may be NULL. */
kvq_status kvq_kv_bytes_for_ex(const kvq_kv_geom *g, const char *spec, int64_t n, uint64_t *bytes, uint64_t *aux,
                               char *err, size_t err_cap);

/* ---- the step protocol: what the forward pass calls -------------------
 *   kvq_kv_step_begin(c, {n, pos, mode, view})     room for n tokens in every layer
 *   for each layer: kvq_kv_step_layer(c, il, q, k, v, ...)
 *       append(pos) -> policy.on_append -> observe queries -> codec.prepare
 *       -> policy.select (parallel over heads) -> attend(view) -> codec.commit
 *   kvq_kv_step_end(c, prompt_end)                  policy.prefill_end per layer,
 *                                                   policy.after_step per layer
 *   kvq_kv_accept(c, n)                             draft/verify: n pending tokens
 *                                                   verified, the rest dropped */
kvq_status kvq_kv_step_begin(kvq_kv_cache *c, const kvq_kv_step *s);
/* q [n][n_head*head_dim] post-RoPE; k, v [n][n_head_kv*head_dim] (k pre-RoPE
 * for prerope codecs); out [n][n_head*head_dim]. */
kvq_status kvq_kv_step_layer(kvq_kv_cache *c, int il, const float *q, const float *k, const float *v, float scale,
                             float *out, int n_threads);
kvq_status kvq_kv_step_end(kvq_kv_cache *c, bool prompt_end);
/* After a failed kvq_kv_step_layer: drops what the step appended. */
void       kvq_kv_step_abort(kvq_kv_cache *c);
/* Of the pending slots, the first n are verified and the rest dropped. */
kvq_status kvq_kv_accept(kvq_kv_cache *c, int n);
int32_t    kvq_kv_n_pending(const kvq_kv_cache *c);

/* ---- lower-level calls (tests, benchmarks, conversion) ---------------- */
/* Room for n more slots in every layer, all or nothing (KVQ_ERR_CONTEXT_FULL at a cap). */
kvq_status kvq_kv_reserve(kvq_kv_cache *c, int n);
kvq_status kvq_kv_append(kvq_kv_cache *c, int il, const float *k, const float *v, int n);
kvq_status kvq_kv_append_pos(kvq_kv_cache *c, int il, const float *k, const float *v, int n, const int32_t *pos);
/* Ends a step for a layer: lets the codec compress what attention has read (all slots verified). */
void       kvq_kv_commit(kvq_kv_cache *c, int il);
/* Records the queries of an eval chunk (for policies with an observation window). */
void       kvq_kv_observe(kvq_kv_cache *c, int il, const float *q, int n);
/* Attention for n_q queries [n_q][n_head*head_dim] (post-RoPE); query i sees
 * slots [0, n_vis0 + i). Writes out [n_q][n_head*head_dim]. */
kvq_status kvq_kv_attend(kvq_kv_cache *c, int il, const float *q, int n_q, int n_vis0, float scale, int view,
                         float *out, int n_threads);
kvq_status kvq_kv_prefill_end(kvq_kv_cache *c);
/* Keeps the first n slots of every layer, the top layer first: a cross-layer
 * codec (aqua) that truncates into its compressed tokens rebuilds them from
 * the layer below, which must still hold them. */
kvq_status kvq_kv_truncate(kvq_kv_cache *c, int n);
/* Keeps per KV head the slots keep[h*n_keep + j] (ascending) of layer il. */
kvq_status kvq_kv_compact(kvq_kv_cache *c, int il, const int32_t *keep, int n_keep);
int32_t    kvq_kv_n(const kvq_kv_cache *c);
/* Exact bytes of what is stored (codes, scales, windows), as bytes_for. */
uint64_t   kvq_kv_bytes_used(const kvq_kv_cache *c);
/* Bytes held from the allocator: pages (a partly filled last page counts
 * whole) and fixed buffers. This is what a memory cap bounds. */
uint64_t   kvq_kv_bytes_allocated(const kvq_kv_cache *c);
/* Upper bound of bytes_allocated at the full context. */
kvq_status kvq_kv_alloc_bound(const kvq_kv_geom *g, const char *spec, uint64_t *bytes, char *err, size_t err_cap);
/* The same, where a policy bounds what it holds (a window): *held the most
 * slots any layer keeps (n_ctx when unbounded), *held_bytes their exact
 * bytes over all layers. Validates the whole spec, policy options included. */
kvq_status kvq_kv_held_bound(const kvq_kv_geom *g, const char *spec, uint64_t *alloc, int32_t *held, uint64_t *held_bytes,
                             char *err, size_t err_cap);

/* Persistence (kv_persist.c): the cache in its compressed form. Loading a
 * stream written from another spec converts it through the codecs (read,
 * then append). Both take an open stream, so a session file can wrap them. */
kvq_status kvq_kv_write(const kvq_kv_cache *c, FILE *f);
kvq_status kvq_kv_read(kvq_kv_cache *c, FILE *f, const char *what);
/* Appends every slot of src to dst (empty, same shape) through the codecs. */
kvq_status kvq_kv_convert(kvq_kv_cache *src, kvq_kv_cache *dst);
kvq_status kvq_kv_save(const kvq_kv_cache *c, const char *path);
kvq_status kvq_kv_load(kvq_kv_cache *c, const char *path);

/* Option helpers for codec/policy parsers. */
const char *kvq_kv_opt_get(const kvq_kv_opt *o, int n, const char *key);
bool kvq_kv_opt_int(const kvq_kv_opt *o, int n, const char *key, long lo, long hi, long *out, char *err, size_t cap);

#endif
