/* Page allocation and the byte budgets it is charged to. */
#include "kv_pages.h"

#include <stdlib.h>
#include <string.h>

kvq_status kvq_kv_mem_charge(kvq_kv_mem *m, int64_t delta) {
    if (!m) return KVQ_OK;
    if (delta > 0) {
        if (m->cap && m->held + (uint64_t)delta > m->cap) return KVQ_ERR_CONTEXT_FULL;
        if (m->pool) {
            /* a compare-and-swap loop, so that two caches racing for the last
             * bytes of a pool cannot both pass the cap */
            uint64_t cur = atomic_load(&m->pool->used);
            do {
                if (m->pool->cap && cur + (uint64_t)delta > m->pool->cap) return KVQ_ERR_CONTEXT_FULL;
            } while (!atomic_compare_exchange_weak(&m->pool->used, &cur, cur + (uint64_t)delta));
        }
        m->held += (uint64_t)delta;
    } else if (delta < 0) {
        m->held -= (uint64_t)-delta;
        if (m->pool) atomic_fetch_sub(&m->pool->used, (uint64_t)-delta);
    }
    return KVQ_OK;
}

kvq_status kvq_pages_init(kvq_pages *p, int32_t slots_per_page, size_t page_bytes, int32_t cap_slots,
                          kvq_kv_mem *mem) {
    memset(p, 0, sizeof *p);
    p->slots = slots_per_page;
    p->bytes = page_bytes;
    p->mem = mem;
    p->max_pg = kvq_pages_for(slots_per_page, cap_slots);
    p->pg = calloc((size_t)p->max_pg + 1, sizeof *p->pg);
    return p->pg ? KVQ_OK : KVQ_ERR_NOMEM;
}

kvq_status kvq_pages_reserve(kvq_pages *p, int32_t n_slots) {
    int32_t need = kvq_pages_for(p->slots, n_slots);
    if (need > p->max_pg) return KVQ_ERR_CONTEXT_FULL;
    while (p->n_pg < need) {
        kvq_status st = kvq_kv_mem_charge(p->mem, (int64_t)p->bytes);
        if (st) return st;
        /* zeroed: full-tile kernels read the unused slots of a page's last tile */
        uint8_t *pg = calloc(1, p->bytes ? p->bytes : 1);
        if (!pg) {
            kvq_kv_mem_charge(p->mem, -(int64_t)p->bytes);
            return KVQ_ERR_NOMEM;
        }
        p->pg[p->n_pg++] = pg;
    }
    return KVQ_OK;
}

void kvq_pages_release(kvq_pages *p, int32_t n_slots) {
    int32_t keep = kvq_pages_for(p->slots, n_slots < 0 ? 0 : n_slots);
    while (p->n_pg > keep) {
        free(p->pg[--p->n_pg]);
        p->pg[p->n_pg] = NULL;
        kvq_kv_mem_charge(p->mem, -(int64_t)p->bytes);
    }
}

void kvq_pages_free(kvq_pages *p) {
    if (!p->pg) return;
    kvq_pages_release(p, 0);
    free(p->pg);
    p->pg = NULL;
}

kvq_status kvq_kv_pool_new(uint64_t cap_bytes, kvq_kv_pool **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return KVQ_ERR_NOMEM;
    (*out)->cap = cap_bytes;
    return KVQ_OK;
}

void kvq_kv_pool_free(kvq_kv_pool *p) { free(p); }
uint64_t kvq_kv_pool_used(const kvq_kv_pool *p) { return atomic_load(&((kvq_kv_pool *)p)->used); }
uint64_t kvq_kv_pool_cap(const kvq_kv_pool *p) { return p->cap; }
