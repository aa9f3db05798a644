#include "gguf.h"

#include <stdlib.h>
#include <string.h>
#include "../kernels/types.h"

#define GGUF_MAX_ALIGNMENT (1u << 20)
#define GGUF_MAX_NAME 256

typedef struct cursor {
    const uint8_t *p, *end;
    const kvq_logger *lg;
} cursor;

static size_t left(const cursor *c) { return (size_t)(c->end - c->p); }

static kvq_status take(cursor *c, size_t n, const uint8_t **out, const char *what) {
    if (n > left(c))
        return kvq_err(c->lg, KVQ_ERR_FORMAT, "gguf: truncated file while reading %s (%zu bytes needed, %zu left)",
                       what, n, left(c));
    *out = c->p;
    c->p += n;
    return KVQ_OK;
}

static kvq_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    const uint8_t *p = NULL;
    kvq_status st = take(c, 4, &p, what);
    if (st == KVQ_OK) memcpy(v, p, 4);
    return st;
}

static kvq_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    const uint8_t *p = NULL;
    kvq_status st = take(c, 8, &p, what);
    if (st == KVQ_OK) memcpy(v, p, 8);
    return st;
}

static kvq_status rd_str(cursor *c, kvq_gguf_str *s, const char *what) {
    uint64_t n;
    kvq_status st = rd_u64(c, &n, what);
    if (st) return st;
    if (n > left(c))
        return kvq_err(c->lg, KVQ_ERR_FORMAT, "gguf: %s declares a string of %llu bytes but only %zu remain", what,
                       (unsigned long long)n, left(c));
    const uint8_t *p;
    take(c, (size_t)n, &p, what);
    s->s = (const char *)p;
    s->n = n;
    return KVQ_OK;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case KVQ_GGUF_U8: case KVQ_GGUF_I8: case KVQ_GGUF_BOOL: return 1;
    case KVQ_GGUF_U16: case KVQ_GGUF_I16: return 2;
    case KVQ_GGUF_U32: case KVQ_GGUF_I32: case KVQ_GGUF_F32: return 4;
    case KVQ_GGUF_U64: case KVQ_GGUF_I64: case KVQ_GGUF_F64: return 8;
    }
    return 0;
}

static const char *vtype_name(uint32_t t) {
    static const char *names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                  "bool", "string", "array", "uint64", "int64", "float64"};
    return t < KVQ_GGUF_VTYPE_COUNT ? names[t] : "invalid";
}

static kvq_status parse_value(cursor *c, kvq_gguf_kv *kv) {
    kv->val = c->p;
    if (kv->type == KVQ_GGUF_STRING) {
        kvq_gguf_str s;
        return rd_str(c, &s, "a string value");
    }
    if (kv->type == KVQ_GGUF_ARRAY) {
        kvq_status st = rd_u32(c, &kv->arr_type, "an array type");
        if (!st) st = rd_u64(c, &kv->n, "an array length");
        if (st) return st;
        kv->val = c->p;
        if (kv->arr_type == KVQ_GGUF_ARRAY)
            return kvq_err(c->lg, KVQ_ERR_UNSUPPORTED, "gguf: key '%.*s' holds nested arrays", (int)kv->key.n,
                           kv->key.s);
        if (kv->arr_type == KVQ_GGUF_STRING) {
            /* every string needs at least its 8-byte length */
            if (kv->n > left(c) / 8)
                return kvq_err(c->lg, KVQ_ERR_FORMAT, "gguf: key '%.*s' declares %llu strings, more than the file holds",
                               (int)kv->key.n, kv->key.s, (unsigned long long)kv->n);
            for (uint64_t i = 0; i < kv->n; i++) {
                kvq_gguf_str s;
                st = rd_str(c, &s, "an array string");
                if (st) return st;
            }
            return KVQ_OK;
        }
        size_t es = scalar_size(kv->arr_type);
        if (!es)
            return kvq_err(c->lg, KVQ_ERR_FORMAT, "gguf: key '%.*s' has an array of invalid type %u", (int)kv->key.n,
                           kv->key.s, kv->arr_type);
        if (kv->n > left(c) / es)
            return kvq_err(c->lg, KVQ_ERR_FORMAT, "gguf: key '%.*s' declares %llu elements, more than the file holds",
                           (int)kv->key.n, kv->key.s, (unsigned long long)kv->n);
        const uint8_t *p;
        return take(c, (size_t)kv->n * es, &p, "array data");
    }
    size_t es = scalar_size(kv->type);
    if (!es)
        return kvq_err(c->lg, KVQ_ERR_FORMAT, "gguf: key '%.*s' has invalid value type %u", (int)kv->key.n,
                       kv->key.s, kv->type);
    const uint8_t *p;
    return take(c, es, &p, "a value");
}

static int cmp_str(kvq_gguf_str a, kvq_gguf_str b) {
    uint64_t n = a.n < b.n ? a.n : b.n;
    int r = memcmp(a.s, b.s, (size_t)n);
    if (r) return r;
    return a.n < b.n ? -1 : a.n > b.n;
}

static int cmp_tensor_off(const void *a, const void *b) {
    const kvq_gguf_tensor *x = *(kvq_gguf_tensor *const *)a, *y = *(kvq_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}
static int cmp_tensor_name(const void *a, const void *b) {
    return cmp_str((*(kvq_gguf_tensor *const *)a)->name, (*(kvq_gguf_tensor *const *)b)->name);
}
static int cmp_kv_key(const void *a, const void *b) {
    return cmp_str((*(kvq_gguf_kv *const *)a)->key, (*(kvq_gguf_kv *const *)b)->key);
}

/* Duplicate keys or tensor names would make lookups ambiguous. */
static kvq_status check_duplicates(kvq_gguf *g, const kvq_logger *lg) {
    size_t n = (size_t)(g->n_kv > g->n_tensors ? g->n_kv : g->n_tensors);
    if (n < 2) return KVQ_OK;
    void **idx = malloc(n * sizeof *idx);
    if (!idx) return kvq_err(lg, KVQ_ERR_NOMEM, "gguf: no memory");
    kvq_status st = KVQ_OK;
    for (uint64_t i = 0; i < g->n_kv; i++) idx[i] = &g->kv[i];
    qsort(idx, (size_t)g->n_kv, sizeof *idx, cmp_kv_key);
    for (uint64_t i = 1; i < g->n_kv && !st; i++)
        if (!cmp_kv_key(&idx[i - 1], &idx[i]))
            st = kvq_err(lg, KVQ_ERR_FORMAT, "gguf: duplicate key '%.*s'", (int)((kvq_gguf_kv *)idx[i])->key.n,
                         ((kvq_gguf_kv *)idx[i])->key.s);
    for (uint64_t i = 0; i < g->n_tensors && !st; i++) idx[i] = &g->tensors[i];
    if (!st) qsort(idx, (size_t)g->n_tensors, sizeof *idx, cmp_tensor_name);
    for (uint64_t i = 1; i < g->n_tensors && !st; i++)
        if (!cmp_tensor_name(&idx[i - 1], &idx[i]))
            st = kvq_err(lg, KVQ_ERR_FORMAT, "gguf: duplicate tensor '%.*s'",
                         (int)((kvq_gguf_tensor *)idx[i])->name.n, ((kvq_gguf_tensor *)idx[i])->name.s);
    /* Overlapping tensors alias each other's bytes: a crafted file could make
     * one weight silently double as another. */
    for (uint64_t i = 0; i < g->n_tensors && !st; i++) idx[i] = &g->tensors[i];
    if (!st) qsort(idx, (size_t)g->n_tensors, sizeof *idx, cmp_tensor_off);
    for (uint64_t i = 1; i < g->n_tensors && !st; i++) {
        const kvq_gguf_tensor *a = idx[i - 1], *b = idx[i];
        if (a->offset + a->nbytes > b->offset)
            st = kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensors '%.*s' and '%.*s' overlap", (int)a->name.n, a->name.s,
                         (int)b->name.n, b->name.s);
    }
    free(idx);
    return st;
}

static kvq_status parse_tensor_info(cursor *c, kvq_gguf_tensor *t) {
    const kvq_logger *lg = c->lg;
    kvq_status st = rd_str(c, &t->name, "a tensor name");
    if (st) return st;
    if (t->name.n == 0 || t->name.n >= GGUF_MAX_NAME)
        return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensor name of length %llu", (unsigned long long)t->name.n);
    const int nn = (int)t->name.n;
    if ((st = rd_u32(c, &t->n_dims, "tensor dims"))) return st;
    if (t->n_dims < 1 || t->n_dims > KVQ_GGUF_MAX_DIMS)
        return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensor '%.*s' has %u dimensions (1..4 allowed)", nn, t->name.s,
                       t->n_dims);
    uint64_t nel = 1;
    for (int d = 0; d < KVQ_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t v;
        if ((st = rd_u64(c, &v, "a tensor dimension"))) return st;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensor '%.*s' has dimension %u = %llu", nn, t->name.s, d,
                           (unsigned long long)v);
        if (__builtin_mul_overflow(nel, v, &nel) || nel > (uint64_t)INT64_MAX)
            return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensor '%.*s' element count overflows 64 bits", nn, t->name.s);
        t->ne[d] = (int64_t)v;
    }
    if ((st = rd_u32(c, &t->type, "a tensor type"))) return st;
    if (!kvq_type_size((int)t->type))
        return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "gguf: tensor '%.*s' has unknown type id %u", nn, t->name.s, t->type);
    int64_t blck = kvq_type_blck((int)t->type);
    if (t->ne[0] % blck)
        return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensor '%.*s' row of %lld is not a multiple of the %s block (%lld)",
                       nn, t->name.s, (long long)t->ne[0], kvq_type_name((int)t->type), (long long)blck);
    if (__builtin_mul_overflow(nel / (uint64_t)blck, (uint64_t)kvq_type_size((int)t->type), &t->nbytes))
        return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensor '%.*s' byte size overflows", nn, t->name.s);
    return rd_u64(c, &t->offset, "a tensor offset");
}

kvq_status kvq_gguf_parse(const uint8_t *buf, size_t size, kvq_gguf *g, const kvq_logger *lg) {
    memset(g, 0, sizeof *g);
    g->base = buf;
    g->size = size;
    g->alignment = 32;
    cursor c = {buf, buf + size, lg};
    const uint8_t *magic;
    kvq_status st;
    if (size < 4 || memcmp(buf, "GGUF", 4) != 0)
        return kvq_err(lg, KVQ_ERR_FORMAT, "not a GGUF file (bad magic)");
    take(&c, 4, &magic, "magic");
    if ((st = rd_u32(&c, &g->version, "the version"))) return st;
    if (g->version < 2 || g->version > 3)
        return kvq_err(lg, KVQ_ERR_UNSUPPORTED, "gguf: version %u is not supported (2 and 3 are)", g->version);
    if ((st = rd_u64(&c, &g->n_tensors, "the tensor count")) || (st = rd_u64(&c, &g->n_kv, "the key count")))
        return st;
    /* Smallest possible entries: a kv is 8+1 (key) + 4 (type) + 1 (value); a
     * tensor info is 8+1 (name) + 4 + 8 (one dim) + 4 + 8. */
    if (g->n_kv > left(&c) / 14)
        return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: key count %llu is impossible for a %zu-byte file",
                       (unsigned long long)g->n_kv, size);
    if (g->n_tensors > left(&c) / 33)
        return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensor count %llu is impossible for a %zu-byte file",
                       (unsigned long long)g->n_tensors, size);
    g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) { st = kvq_err(lg, KVQ_ERR_NOMEM, "gguf: no memory for the index"); goto fail; }

    for (uint64_t i = 0; i < g->n_kv; i++) {
        kvq_gguf_kv *kv = &g->kv[i];
        if ((st = rd_str(&c, &kv->key, "a key"))) goto fail;
        if (kv->key.n == 0) { st = kvq_err(lg, KVQ_ERR_FORMAT, "gguf: empty key"); goto fail; }
        if ((st = rd_u32(&c, &kv->type, "a value type"))) goto fail;
        if ((st = parse_value(&c, kv))) goto fail;
    }
    const kvq_gguf_kv *al = kvq_gguf_find(g, "general.alignment");
    if (al) {
        uint32_t a;
        if ((st = kvq_gguf_get_u32(g, "general.alignment", true, &a, lg))) goto fail;
        if (a == 0 || (a & (a - 1)) || a > GGUF_MAX_ALIGNMENT) {
            st = kvq_err(lg, KVQ_ERR_FORMAT, "gguf: general.alignment = %u (a power of two up to %u expected)", a,
                         GGUF_MAX_ALIGNMENT);
            goto fail;
        }
        g->alignment = a;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((st = parse_tensor_info(&c, &g->tensors[i]))) goto fail;

    uint64_t pos = (uint64_t)(c.p - buf);
    uint64_t data = (pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors && data > size) {
        st = kvq_err(lg, KVQ_ERR_FORMAT, "gguf: truncated before the tensor data");
        goto fail;
    }
    g->data_offset = data;
    uint64_t avail = size > data ? size - data : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        kvq_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment) {
            st = kvq_err(lg, KVQ_ERR_FORMAT, "gguf: tensor '%.*s' offset %llu is not aligned to %llu", (int)t->name.n,
                         t->name.s, (unsigned long long)t->offset, (unsigned long long)g->alignment);
            goto fail;
        }
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            st = kvq_err(lg, KVQ_ERR_FORMAT,
                         "gguf: tensor '%.*s' (%llu bytes at offset %llu) lies past the end of the file",
                         (int)t->name.n, t->name.s, (unsigned long long)t->nbytes, (unsigned long long)t->offset);
            goto fail;
        }
        t->data = buf + data + t->offset;
    }
    if ((st = check_duplicates(g, lg))) goto fail;
    return KVQ_OK;
fail:
    free(g->kv);
    free(g->tensors);
    g->kv = NULL;
    g->tensors = NULL;
    return st;
}

kvq_status kvq_gguf_open(const char *path, kvq_gguf *g, const kvq_logger *lg) {
    kvq_mapfile m;
    kvq_status st = kvq_mapfile_open(path, &m, lg);
    if (st) return st;
    st = kvq_gguf_parse(m.data, m.size, g, lg);
    if (st) {
        kvq_mapfile_close(&m);
        return st;
    }
    g->map = m;
    return KVQ_OK;
}

void kvq_gguf_close(kvq_gguf *g) {
    free(g->kv);
    free(g->tensors);
    kvq_mapfile_close(&g->map);
    memset(g, 0, sizeof *g);
}

bool kvq_gguf_str_eq(kvq_gguf_str s, const char *z) {
    size_t n = strlen(z);
    return s.n == n && memcmp(s.s, z, n) == 0;
}

const kvq_gguf_kv *kvq_gguf_find(const kvq_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (kvq_gguf_str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const kvq_gguf_tensor *kvq_gguf_tensor_find(const kvq_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (kvq_gguf_str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

static kvq_status lookup(const kvq_gguf *g, const char *key, bool required, const kvq_gguf_kv **kv,
                         const kvq_logger *lg) {
    *kv = kvq_gguf_find(g, key);
    if (*kv) return KVQ_OK;
    if (required) return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: required key '%s' is missing", key);
    return KVQ_ERR_ARG;
}

static kvq_status wrong_type(const kvq_gguf_kv *kv, const char *want, const kvq_logger *lg) {
    return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: key '%.*s' is %s, expected %s", (int)kv->key.n, kv->key.s,
                   vtype_name(kv->type), want);
}

kvq_status kvq_gguf_get_u32(const kvq_gguf *g, const char *key, bool required, uint32_t *out, const kvq_logger *lg) {
    const kvq_gguf_kv *kv;
    kvq_status st = lookup(g, key, required, &kv, lg);
    if (st) return st;
    int64_t sv = 0;
    uint64_t uv = 0;
    bool is_signed = false;
    switch (kv->type) {
    case KVQ_GGUF_U8: uv = kv->val[0]; break;
    case KVQ_GGUF_U16: { uint16_t v; memcpy(&v, kv->val, 2); uv = v; } break;
    case KVQ_GGUF_U32: { uint32_t v; memcpy(&v, kv->val, 4); uv = v; } break;
    case KVQ_GGUF_U64: memcpy(&uv, kv->val, 8); break;
    case KVQ_GGUF_I8: sv = (int8_t)kv->val[0]; is_signed = true; break;
    case KVQ_GGUF_I16: { int16_t v; memcpy(&v, kv->val, 2); sv = v; is_signed = true; } break;
    case KVQ_GGUF_I32: { int32_t v; memcpy(&v, kv->val, 4); sv = v; is_signed = true; } break;
    case KVQ_GGUF_I64: memcpy(&sv, kv->val, 8); is_signed = true; break;
    default: return wrong_type(kv, "an integer", lg);
    }
    if (is_signed) {
        if (sv < 0) return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: key '%s' is negative (%lld)", key, (long long)sv);
        uv = (uint64_t)sv;
    }
    if (uv > UINT32_MAX)
        return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: key '%s' = %llu is out of range", key, (unsigned long long)uv);
    *out = (uint32_t)uv;
    return KVQ_OK;
}

kvq_status kvq_gguf_get_f32(const kvq_gguf *g, const char *key, bool required, float *out, const kvq_logger *lg) {
    const kvq_gguf_kv *kv;
    kvq_status st = lookup(g, key, required, &kv, lg);
    if (st) return st;
    if (kv->type == KVQ_GGUF_F32) { memcpy(out, kv->val, 4); return KVQ_OK; }
    if (kv->type == KVQ_GGUF_F64) { double d; memcpy(&d, kv->val, 8); *out = (float)d; return KVQ_OK; }
    return wrong_type(kv, "a float", lg);
}

kvq_status kvq_gguf_get_bool(const kvq_gguf *g, const char *key, bool required, bool *out, const kvq_logger *lg) {
    const kvq_gguf_kv *kv;
    kvq_status st = lookup(g, key, required, &kv, lg);
    if (st) return st;
    if (kv->type != KVQ_GGUF_BOOL) return wrong_type(kv, "a bool", lg);
    *out = kv->val[0] != 0;
    return KVQ_OK;
}

kvq_status kvq_gguf_get_str(const kvq_gguf *g, const char *key, bool required, kvq_gguf_str *out,
                            const kvq_logger *lg) {
    const kvq_gguf_kv *kv;
    kvq_status st = lookup(g, key, required, &kv, lg);
    if (st) return st;
    if (kv->type != KVQ_GGUF_STRING) return wrong_type(kv, "a string", lg);
    const uint8_t *p = kv->val;
    *out = kvq_gguf_str_next(&p);
    return KVQ_OK;
}

kvq_status kvq_gguf_get_arr(const kvq_gguf *g, const char *key, uint32_t elem, bool required, uint64_t *n,
                            const uint8_t **first, const kvq_logger *lg) {
    const kvq_gguf_kv *kv;
    kvq_status st = lookup(g, key, required, &kv, lg);
    if (st) return st;
    if (kv->type != KVQ_GGUF_ARRAY) return wrong_type(kv, "an array", lg);
    if (kv->arr_type != elem)
        return kvq_err(lg, KVQ_ERR_FORMAT, "gguf: key '%s' is an array of %s, expected an array of %s", key,
                       vtype_name(kv->arr_type), vtype_name(elem));
    *n = kv->n;
    *first = kv->val;
    return KVQ_OK;
}

kvq_gguf_str kvq_gguf_str_next(const uint8_t **cursor) {
    kvq_gguf_str s;
    memcpy(&s.n, *cursor, 8);
    s.s = (const char *)*cursor + 8;
    *cursor += 8 + s.n;
    return s;
}
