#include "gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"

#define ALIGN 32

typedef struct wtensor {
    char name[256];
    uint32_t type, n_dims;
    int64_t ne[4];
    const void *data;
    uint64_t nbytes, offset;
} wtensor;

struct kvq_gguf_writer {
    uint8_t *meta; /* serialized kv pairs */
    size_t meta_n, meta_cap;
    uint64_t n_kv;
    wtensor *t;
    uint64_t n_t, cap_t;
    bool oom;
};

static void put(kvq_gguf_writer *w, const void *p, size_t n) {
    if (w->oom) return;
    if (w->meta_n + n > w->meta_cap) {
        size_t nc = (w->meta_n + n) * 2 + 256;
        uint8_t *m = realloc(w->meta, nc);
        if (!m) { w->oom = true; return; }
        w->meta = m;
        w->meta_cap = nc;
    }
    memcpy(w->meta + w->meta_n, p, n);
    w->meta_n += n;
}
static void put_u32(kvq_gguf_writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(kvq_gguf_writer *w, uint64_t v) { put(w, &v, 8); }
static void put_str(kvq_gguf_writer *w, const char *s, uint64_t n) { put_u64(w, n); put(w, s, (size_t)n); }
static void key(kvq_gguf_writer *w, const char *k, uint32_t type) {
    put_str(w, k, strlen(k));
    put_u32(w, type);
    w->n_kv++;
}

kvq_gguf_writer *kvq_gguf_writer_new(void) { return calloc(1, sizeof(kvq_gguf_writer)); }

void kvq_gguf_writer_free(kvq_gguf_writer *w) {
    if (!w) return;
    free(w->meta);
    free(w->t);
    free(w);
}

void kvq_gguf_set_str(kvq_gguf_writer *w, const char *k, const char *v) { key(w, k, KVQ_GGUF_STRING); put_str(w, v, strlen(v)); }
void kvq_gguf_set_u32(kvq_gguf_writer *w, const char *k, uint32_t v) { key(w, k, KVQ_GGUF_U32); put_u32(w, v); }
void kvq_gguf_set_f32(kvq_gguf_writer *w, const char *k, float v) { key(w, k, KVQ_GGUF_F32); put(w, &v, 4); }
void kvq_gguf_set_bool(kvq_gguf_writer *w, const char *k, bool v) {
    uint8_t b = v;
    key(w, k, KVQ_GGUF_BOOL);
    put(w, &b, 1);
}

static size_t elem_size(uint32_t t) {
    switch (t) {
    case KVQ_GGUF_U8: case KVQ_GGUF_I8: case KVQ_GGUF_BOOL: return 1;
    case KVQ_GGUF_U16: case KVQ_GGUF_I16: return 2;
    case KVQ_GGUF_U32: case KVQ_GGUF_I32: case KVQ_GGUF_F32: return 4;
    default: return 8;
    }
}

void kvq_gguf_set_arr(kvq_gguf_writer *w, const char *k, uint32_t elem, const void *data, uint64_t n) {
    key(w, k, KVQ_GGUF_ARRAY);
    put_u32(w, elem);
    put_u64(w, n);
    put(w, data, (size_t)n * elem_size(elem));
}

void kvq_gguf_set_arr_str(kvq_gguf_writer *w, const char *k, const char *const *s, const uint64_t *len, uint64_t n) {
    key(w, k, KVQ_GGUF_ARRAY);
    put_u32(w, KVQ_GGUF_STRING);
    put_u64(w, n);
    for (uint64_t i = 0; i < n; i++) put_str(w, s[i], len ? len[i] : strlen(s[i]));
}

void kvq_gguf_copy_kv(kvq_gguf_writer *w, const struct kvq_gguf_kv *kv) {
    /* the value bytes are already serialized in the source file: copy them verbatim */
    const uint8_t *p = kv->val;
    size_t n;
    if (kv->type == KVQ_GGUF_STRING) {
        uint64_t l;
        memcpy(&l, p, 8);
        n = 8 + (size_t)l;
    } else if (kv->type == KVQ_GGUF_ARRAY) {
        if (kv->arr_type == KVQ_GGUF_STRING) {
            const uint8_t *c = kv->val;
            for (uint64_t i = 0; i < kv->n; i++) kvq_gguf_str_next(&c);
            n = (size_t)(c - kv->val);
        } else {
            n = (size_t)kv->n * elem_size(kv->arr_type);
        }
        put_str(w, kv->key.s, kv->key.n);
        put_u32(w, KVQ_GGUF_ARRAY);
        put_u32(w, kv->arr_type);
        put_u64(w, kv->n);
        put(w, p, n);
        w->n_kv++;
        return;
    } else {
        n = elem_size(kv->type);
    }
    put_str(w, kv->key.s, kv->key.n);
    put_u32(w, kv->type);
    put(w, p, n);
    w->n_kv++;
}

void kvq_gguf_add_tensor(kvq_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                         const void *data, uint64_t nbytes) {
    if (w->n_t == w->cap_t) {
        uint64_t nc = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *t = realloc(w->t, (size_t)nc * sizeof *t);
        if (!t) { w->oom = true; return; }
        w->t = t;
        w->cap_t = nc;
    }
    wtensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = (uint32_t)n_dims;
    for (int i = 0; i < n_dims && i < 4; i++) t->ne[i] = ne[i];
    t->data = data;
    t->nbytes = nbytes;
}

kvq_status kvq_gguf_write(kvq_gguf_writer *w, const char *path, const kvq_logger *lg) {
    if (w->oom) return kvq_err(lg, KVQ_ERR_NOMEM, "gguf writer: out of memory");
    FILE *f = fopen(path, "wb");
    if (!f) return kvq_err(lg, KVQ_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    uint64_t off = 0;
    for (uint64_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += (w->t[i].nbytes + ALIGN - 1) / ALIGN * ALIGN;
    }
    uint32_t ver = 3;
    bool ok = fwrite("GGUF", 1, 4, f) == 4 && fwrite(&ver, 4, 1, f) == 1 && fwrite(&w->n_t, 8, 1, f) == 1 &&
              fwrite(&w->n_kv, 8, 1, f) == 1 && fwrite(w->meta, 1, w->meta_n, f) == w->meta_n;
    uint64_t pos = 24 + w->meta_n;
    for (uint64_t i = 0; ok && i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        ok = fwrite(&nl, 8, 1, f) == 1 && fwrite(t->name, 1, nl, f) == nl && fwrite(&t->n_dims, 4, 1, f) == 1 &&
             fwrite(t->ne, 8, t->n_dims, f) == t->n_dims && fwrite(&t->type, 4, 1, f) == 1 &&
             fwrite(&t->offset, 8, 1, f) == 1;
        pos += 8 + nl + 4 + 8ull * t->n_dims + 4 + 8;
    }
    static const uint8_t zero[ALIGN] = {0};
    uint64_t pad = (ALIGN - pos % ALIGN) % ALIGN;
    ok = ok && fwrite(zero, 1, pad, f) == pad;
    for (uint64_t i = 0; ok && i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        ok = fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
        uint64_t tp = (ALIGN - t->nbytes % ALIGN) % ALIGN;
        ok = ok && fwrite(zero, 1, tp, f) == tp;
    }
    if (fclose(f) != 0) ok = false;
    return ok ? KVQ_OK : kvq_err(lg, KVQ_ERR_IO, "failed writing '%s'", path);
}
