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

enum { KVQ_VIEW_FULL = 0, KVQ_VIEW_DRAFT = 1 }; /* QuantSpec reads: 8-bit target, 4-bit draft */

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
} kvq_kv_geom;

typedef struct kvq_kv_layer kvq_kv_layer;
typedef struct kvq_kv_cache kvq_kv_cache;

typedef struct kvq_codec {
    const char *name;
    /* Keys arrive before RoPE (AQUA-KV predicts pre-RoPE keys); the codec then
     * rotates on read with kvq_kv_cache.rope. Otherwise keys arrive rotated. */
    bool prerope;
    /* Parses codec options into one config per layer (cfg_size bytes each). */
    size_t cfg_size;
    kvq_status (*configure)(const kvq_kv_spec *s, const kvq_kv_geom *g, void *cfgs, char *err, size_t err_cap);
    /* Exact bytes one layer holds with n tokens: codes, scales, mins, windows, aux. */
    uint64_t (*bytes_for)(const kvq_kv_layer *L, int64_t n);
    kvq_status (*init)(kvq_kv_layer *L);
    void (*destroy)(kvq_kv_layer *L);
    /* Appends n tokens; k and v are [n][n_head_kv*head_dim]. */
    kvq_status (*append)(kvq_kv_layer *L, const float *k, const float *v, int n);
    /* Called after the attention that read the tokens just appended. Codecs
     * with a full-precision window quantize here, so a prefill chunk attends
     * to its own tokens at full precision (as the papers' evaluations do).
     * NULL: the codec stores its final form on append. */
    void (*commit)(kvq_kv_layer *L);
    /* scores[g*n + i] = q[g] . k(slot t0+i) for the n_q query heads q[g*head_dim] of KV head h */
    void (*qk)(const kvq_kv_layer *L, int view, int h, int t0, int n, const float *q, int n_q, float *scores);
    /* out[g*head_dim + d] += sum_i w[g*n + i] * v(slot t0+i)[d] */
    void (*av)(const kvq_kv_layer *L, int view, int h, int t0, int n, const float *w, int n_q, float *out);
    /* Dense reconstruction of slots [t0, t0+n): [n][n_head_kv*head_dim] (tests, scoring, fallbacks). */
    void (*read)(const kvq_kv_layer *L, int view, int t0, int n, float *k, float *v);
    void (*truncate)(kvq_kv_layer *L, int n);
    /* Keeps slots keep[h*n_keep + j] (ascending per head), for eviction. NULL: not supported. */
    kvq_status (*compact)(kvq_kv_layer *L, const int32_t *keep, int n_keep);
    kvq_status (*save)(const kvq_kv_layer *L, FILE *f);
    kvq_status (*load)(kvq_kv_layer *L, FILE *f);
} kvq_codec;

struct kvq_kv_layer {
    const kvq_codec *codec;
    const void *cfg;        /* this layer's codec config */
    int32_t il, n_head_kv, head_dim, cap, n_batch;
    int32_t n;              /* slots held */
    void *state;
    kvq_kv_layer *prev;     /* the layer below, for cross-layer codecs (AQUA-KV) */
    kvq_kv_cache *cache;
};

typedef struct kvq_span { int32_t t0, t1; } kvq_span;

typedef struct kvq_policy {
    const char *name;
    kvq_status (*init)(kvq_kv_cache *c, char *err, size_t err_cap);
    void (*destroy)(kvq_kv_cache *c);
    /* Spans of slots KV head h of layer il reads for a query that may see
     * slots [0, n_vis). Returns the span count (<= cap), or -1 for "all". */
    int (*select)(kvq_kv_cache *c, int il, int h, const float *q_group, int n_q, int n_vis, kvq_span *out, int cap);
    /* Called once per layer when a prefill ends (eviction). */
    kvq_status (*prefill_end)(kvq_kv_cache *c, int il);
    int32_t obs_window;     /* how many recent queries per layer the policy wants kept */
    int32_t max_spans;
} kvq_policy;

struct kvq_kv_cache {
    kvq_kv_geom g;
    kvq_kv_spec spec;
    const kvq_codec *codec;
    const kvq_policy *policy;
    void *cfgs;             /* n_layer codec configs */
    void *pstate;           /* policy state */
    kvq_kv_layer *layers;
    float *obs_q;           /* [n_layer][obs_window][n_head*head_dim], ring of recent queries */
    int32_t obs_n;          /* queries held in the ring */
    int32_t obs_head;
    const kvq_logger *lg;
    /* RoPE for codecs that store pre-RoPE keys: rotates n rows of keys at positions pos */
    void (*rope)(const void *user, float *k, int n, const int32_t *pos, int n_heads);
    const void *rope_user;
    /* attention scratch, grown on demand */
    float *scratch;
    size_t scratch_cap;
};

const kvq_codec  *kvq_codec_find(const char *name);
const kvq_policy *kvq_policy_find(const char *name);

kvq_status kvq_kv_cache_new(const kvq_kv_geom *g, const char *spec, const kvq_logger *lg, kvq_kv_cache **out,
                            char *err, size_t err_cap);
void       kvq_kv_cache_free(kvq_kv_cache *c);

/* Bytes a spec needs for n tokens over all layers, without allocating. */
kvq_status kvq_kv_bytes_for(const kvq_kv_geom *g, const char *spec, int64_t n, uint64_t *bytes, char *err,
                            size_t err_cap);

kvq_status kvq_kv_append(kvq_kv_cache *c, int il, const float *k, const float *v, int n);
/* Ends a step for a layer: lets the codec compress what attention has read. */
void       kvq_kv_commit(kvq_kv_cache *c, int il);
/* Records the queries of an eval chunk (for policies with an observation window). */
void       kvq_kv_observe(kvq_kv_cache *c, int il, const float *q, int n);
/* Attention for n_q queries [n_q][n_head*head_dim] (post-RoPE); query i sees
 * slots [0, n_vis0 + i). Writes out [n_q][n_head*head_dim]. */
kvq_status kvq_kv_attend(kvq_kv_cache *c, int il, const float *q, int n_q, int n_vis0, float scale, int view,
                         float *out, int n_threads);
kvq_status kvq_kv_prefill_end(kvq_kv_cache *c);
kvq_status kvq_kv_truncate(kvq_kv_cache *c, int n);
int32_t    kvq_kv_n(const kvq_kv_cache *c);
uint64_t   kvq_kv_bytes_used(const kvq_kv_cache *c);
kvq_status kvq_kv_save(const kvq_kv_cache *c, const char *path);
kvq_status kvq_kv_load(kvq_kv_cache *c, const char *path);

/* Option helpers for codec/policy parsers. */
const char *kvq_kv_opt_get(const kvq_kv_opt *o, int n, const char *key);
bool kvq_kv_opt_int(const kvq_kv_opt *o, int n, const char *key, long lo, long hi, long *out, char *err, size_t cap);

#endif
