/* Paged KV memory. A layer's slots live in pages of `slots` slots each,
 * allocated as tokens arrive and returned when truncation or eviction leaves
 * them empty, so what a cache holds follows what it really stores (as vLLM's
 * paged KV memory does). A page holds every KV head of its slots; its inner
 * layout is the codec's.
 *
 * Every allocation is charged to a kvq_kv_mem: the cache's own count, and
 * optionally a pool shared by many caches (a server's sessions) with a byte
 * cap. A charge that would pass the cap is refused, and the step that needed
 * it fails with KVQ_ERR_CONTEXT_FULL before anything changed. */
#ifndef KVQ_KV_PAGES_H
#define KVQ_KV_PAGES_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/log.h"

/* A byte budget shared by caches (thread-safe). cap 0: unlimited. */
struct kvq_kv_pool {
    _Atomic uint64_t used;
    uint64_t cap;
};

/* One cache's memory: its own total, and the pool it draws from (may be NULL). */
typedef struct kvq_kv_mem {
    uint64_t held;            /* bytes this cache holds from the allocator */
    uint64_t cap;             /* this cache's own cap (0: none) */
    struct kvq_kv_pool *pool; /* shared budget (NULL: none) */
} kvq_kv_mem;

/* Takes or returns bytes (delta < 0 returns). Refusal leaves everything as it was. */
kvq_status kvq_kv_mem_charge(kvq_kv_mem *m, int64_t delta);

typedef struct kvq_pages {
    uint8_t **pg;    /* [max_pg] page pointers; the first n_pg are allocated */
    int32_t n_pg, max_pg;
    int32_t slots;   /* slots per page */
    size_t bytes;    /* bytes per page */
    kvq_kv_mem *mem;
} kvq_pages;

kvq_status kvq_pages_init(kvq_pages *p, int32_t slots_per_page, size_t page_bytes, int32_t cap_slots,
                          kvq_kv_mem *mem);
/* Allocates (zeroed) pages until n_slots fit. */
kvq_status kvq_pages_reserve(kvq_pages *p, int32_t n_slots);
/* Frees the pages that slots [0, n_slots) do not touch. */
void kvq_pages_release(kvq_pages *p, int32_t n_slots);
void kvq_pages_free(kvq_pages *p);

static inline uint8_t *kvq_page(const kvq_pages *p, int32_t slot) { return p->pg[slot / p->slots]; }
static inline int32_t kvq_pages_for(int32_t slots_per_page, int64_t n) {
    return (int32_t)((n + slots_per_page - 1) / slots_per_page);
}
static inline uint64_t kvq_pages_held(const kvq_pages *p) { return (uint64_t)p->n_pg * p->bytes; }

#endif
