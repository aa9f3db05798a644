#include "safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/nesting.h"

#define ST_MAX_HEADER (100u << 20)
/* {tensor: {shape: [...]}} and __metadata__ are three levels */
#define ST_MAX_DEPTH 8

static int dtype_size(const char *d) {
    static const struct { const char *n; int s; } T[] = {
        {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
        {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8}};
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        if (!strcmp(d, T[i].n)) return T[i].s;
    return 0;
}

static int cmp_off(const void *a, const void *b) {
    const kvq_st_tensor *x = *(kvq_st_tensor *const *)a, *y = *(kvq_st_tensor *const *)b;
    return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : (const uint8_t *)x->data > (const uint8_t *)y->data;
}

kvq_status kvq_safetensors_parse(const uint8_t *buf, size_t size, kvq_safetensors *s, const kvq_logger *lg) {
    memset(s, 0, sizeof *s);
    if (size < 8) return kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: file too short");
    uint64_t hn;
    memcpy(&hn, buf, 8);
    if (hn < 2 || hn > size - 8 || hn > ST_MAX_HEADER)
        return kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: header length %llu does not fit a %zu-byte file",
                       (unsigned long long)hn, size);
    const int depth = kvq_nesting_depth((const char *)buf + 8, (size_t)hn, 1);
    if (depth > ST_MAX_DEPTH)
        return kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: the header nests %d deep; a safetensors header needs %d",
                       depth, ST_MAX_DEPTH);
    cJSON *root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hn);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: header is not a JSON object");
    }
    const uint8_t *data = buf + 8 + hn;
    uint64_t avail = size - 8 - hn;
    kvq_status st = KVQ_OK;
    int n = cJSON_GetArraySize(root);
    s->t = calloc((size_t)n + 1, sizeof *s->t);
    if (!s->t) { cJSON_Delete(root); return kvq_err(lg, KVQ_ERR_NOMEM, "safetensors: no memory"); }
    for (cJSON *e = root->child; e; e = e->next) {
        if (!e->string) { st = kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: unnamed entry"); break; }
        if (!strcmp(e->string, "__metadata__")) continue;
        kvq_st_tensor *t = &s->t[s->n];
        if (strlen(e->string) >= sizeof t->name) { st = kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: tensor name too long"); break; }
        strcpy(t->name, e->string);
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2) {
            st = kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: tensor '%s' lacks dtype/shape/data_offsets", t->name);
            break;
        }
        int es = dtype_size(dt->valuestring);
        if (!es || strlen(dt->valuestring) >= sizeof t->dtype) {
            st = kvq_err(lg, KVQ_ERR_UNSUPPORTED, "safetensors: tensor '%s' has unknown dtype '%.16s'", t->name, dt->valuestring);
            break;
        }
        strcpy(t->dtype, dt->valuestring);
        t->n_dims = cJSON_GetArraySize(sh);
        if (t->n_dims > 4) { st = kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: tensor '%s' has %d dims", t->name, t->n_dims); break; }
        uint64_t nel = 1;
        int d = 0;
        for (cJSON *x = sh->child; x; x = x->next, d++) {
            double v = cJSON_IsNumber(x) ? x->valuedouble : -1;
            if (!(v >= 0 && v <= 9007199254740992.0) || (double)(int64_t)v != v ||
                __builtin_mul_overflow(nel, (uint64_t)v, &nel)) {
                st = kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: tensor '%s' has an invalid shape", t->name);
                break;
            }
            t->shape[d] = (int64_t)v;
        }
        if (st) break;
        double b = cJSON_IsNumber(of->child) ? of->child->valuedouble : -1;
        double en = cJSON_IsNumber(of->child->next) ? of->child->next->valuedouble : -1;
        if (b != floor(b) || en != floor(en)) {
            st = kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: tensor '%s' has fractional data_offsets", t->name);
            break;
        }
        if (!(b >= 0 && en >= b && en <= (double)avail)) {
            st = kvq_err(lg, KVQ_ERR_FORMAT,
                         "safetensors: tensor '%s' data [%.0f, %.0f) lies outside the %llu data bytes", t->name, b, en,
                         (unsigned long long)avail);
            break;
        }
        uint64_t nb;
        if (__builtin_mul_overflow(nel, (uint64_t)es, &nb) || nb != (uint64_t)(en - b)) {
            st = kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: tensor '%s' holds %.0f bytes, its shape needs %llu", t->name,
                         en - b, (unsigned long long)nb);
            break;
        }
        t->nbytes = nb;
        t->data = data + (uint64_t)b;
        s->n++;
    }
    cJSON_Delete(root);
    if (!st && s->n > 1) {
        kvq_st_tensor **idx = malloc((size_t)s->n * sizeof *idx);
        if (!idx) st = KVQ_ERR_NOMEM;
        for (int i = 0; !st && i < s->n; i++) idx[i] = &s->t[i];
        if (!st) qsort(idx, (size_t)s->n, sizeof *idx, cmp_off);
        for (int i = 1; !st && i < s->n; i++)
            if ((const uint8_t *)idx[i - 1]->data + idx[i - 1]->nbytes > (const uint8_t *)idx[i]->data)
                st = kvq_err(lg, KVQ_ERR_FORMAT, "safetensors: tensors '%s' and '%s' overlap", idx[i - 1]->name,
                             idx[i]->name);
        free(idx);
    }
    if (st) kvq_safetensors_free(s);
    return st;
}

void kvq_safetensors_free(kvq_safetensors *s) {
    free(s->t);
    memset(s, 0, sizeof *s);
}

const kvq_st_tensor *kvq_safetensors_find(const kvq_safetensors *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}
