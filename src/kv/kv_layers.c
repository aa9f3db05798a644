#include "kv_layers.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include "../core/mapfile.h"
#include "../core/nesting.h"

/* A table for 1024 layers is under 64 KB in either form. */
#define MAX_TABLE (1u << 20)
/* KVTuner's tables nest two levels (layer -> {nbits_key, nbits_value}) */
#define MAX_YAML_DEPTH 16
#define MAX_YAML_INDENT 64

static kvq_status fail(char *err, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && cap) vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return KVQ_ERR_ARG;
}

static bool valid_bits(long b) { return b == 2 || b == 4 || b == 8 || b == 16; }
/* 16 means "this layer stays fp16", only as a pair */
static bool valid_pair(long k, long v) { return valid_bits(k) && valid_bits(v) && ((k == 16) == (v == 16)); }

/* "kXvY" exactly, each a decimal within long (no overflow, nothing after) */
bool kvq_kv_bits_pair(const char *w, long *k, long *v) {
    char *e;
    if (*w != 'k' || w[1] < '0' || w[1] > '9') return false;
    errno = 0;
    *k = strtol(w + 1, &e, 10);
    if (errno || *e != 'v' || e[1] < '0' || e[1] > '9') return false;
    *v = strtol(e + 1, &e, 10);
    return !errno && !*e;
}

static bool parse_long(const char *s, long *out) {
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (!*s || *e || errno) return false;
    *out = v;
    return true;
}

static kvq_status parse_yaml(const char *text, size_t len, int n_layer, int8_t *kb, int8_t *vb, char *err, size_t cap) {
    const int depth = kvq_nesting_depth(text, len, 0), indent = kvq_max_indent(text, len);
    if (depth > MAX_YAML_DEPTH)
        return fail(err, cap, "yaml: brackets nest %d deep; a layer table needs at most %d", depth, MAX_YAML_DEPTH);
    if (indent > MAX_YAML_INDENT)
        return fail(err, cap, "yaml: a line is indented by %d columns; a layer table needs at most %d", indent,
                    MAX_YAML_INDENT);
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) return fail(err, cap, "yaml: cannot initialize the parser");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    kvq_status st = KVQ_OK;
    if (!yaml_parser_load(&p, &doc)) {
        st = fail(err, cap, "yaml: %s at line %zu", p.problem ? p.problem : "syntax error", p.problem_mark.line + 1);
        yaml_parser_delete(&p);
        return st;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int seen = 0;
    if (!root || root->type != YAML_MAPPING_NODE) {
        st = fail(err, cap, "yaml: the top level must map layer indices to {nbits_key, nbits_value}");
        goto done;
    }
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(&doc, pr->key), *v = yaml_document_get_node(&doc, pr->value);
        long layer, bk = -1, bv = -1;
        if (!k || k->type != YAML_SCALAR_NODE || !parse_long((const char *)k->data.scalar.value, &layer)) {
            st = fail(err, cap, "yaml: a key is not a layer index");
            goto done;
        }
        if (layer < 0 || layer >= n_layer) {
            st = fail(err, cap, "yaml: layer %ld does not exist (the model has %d layers)", layer, n_layer);
            goto done;
        }
        if (!v || v->type != YAML_MAPPING_NODE) {
            st = fail(err, cap, "yaml: layer %ld is not a mapping of nbits_key / nbits_value", layer);
            goto done;
        }
        for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
            yaml_node_t *qk = yaml_document_get_node(&doc, q->key), *qv = yaml_document_get_node(&doc, q->value);
            long x;
            if (!qk || qk->type != YAML_SCALAR_NODE || !qv || qv->type != YAML_SCALAR_NODE ||
                !parse_long((const char *)qv->data.scalar.value, &x)) {
                st = fail(err, cap, "yaml: layer %ld has a malformed entry", layer);
                goto done;
            }
            if (!strcmp((const char *)qk->data.scalar.value, "nbits_key")) bk = x;
            else if (!strcmp((const char *)qk->data.scalar.value, "nbits_value")) bv = x;
        }
        if (bk < 0 || bv < 0) {
            st = fail(err, cap, "yaml: layer %ld lacks nbits_key or nbits_value", layer);
            goto done;
        }
        if (!valid_pair(bk, bv)) {
            st = fail(err, cap, "layer %ld asks for K%ld V%ld: unsupported bit width (2, 4 or 8; k16v16 keeps fp16)",
                      layer, bk, bv);
            goto done;
        }
        if (kb[layer]) {
            st = fail(err, cap, "yaml: layer %ld is listed twice", layer);
            goto done;
        }
        kb[layer] = (int8_t)bk;
        vb[layer] = (int8_t)bv;
        seen++;
    }
    if (seen != n_layer) st = fail(err, cap, "the table covers %d layers but the model has %d", seen, n_layer);
done:
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    return st;
}

static kvq_status parse_text(const char *text, size_t len, int n_layer, int8_t *kb, int8_t *vb, char *err, size_t cap) {
    int n = 0, line = 0;
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line++;
        char buf[128];
        size_t l = e - i < sizeof buf - 1 ? e - i : sizeof buf - 1;
        memcpy(buf, text + i, l);
        buf[l] = 0;
        char *hash = strchr(buf, '#');
        if (hash) *hash = 0;
        if (e - i > sizeof buf - 2 && !hash)
            return fail(err, cap, "line %d is longer than %zu characters", line, sizeof buf - 2);
        char word[64], rest[2];
        int nw = sscanf(buf, " %63s %1s", word, rest);
        if (nw >= 1) {
            long k, v;
            if (nw == 2) return fail(err, cap, "line %d: one kXvY per line, but '%s' is followed by more", line, word);
            if (!kvq_kv_bits_pair(word, &k, &v))
                return fail(err, cap, "line %d: expected kXvY (e.g. k4v2), got '%s'", line, word);
            if (!valid_pair(k, v))
                return fail(err, cap, "line %d: K%ld V%ld: unsupported bit width (2, 4 or 8; k16v16 keeps fp16)", line,
                            k, v);
            if (n >= n_layer) return fail(err, cap, "the table has more than the model's %d layers", n_layer);
            kb[n] = (int8_t)k;
            vb[n] = (int8_t)v;
            n++;
        }
        i = e + 1;
    }
    if (n != n_layer) return fail(err, cap, "the table covers %d layers but the model has %d", n, n_layer);
    return KVQ_OK;
}

kvq_status kvq_layer_bits_parse(const char *text, size_t len, int n_layer, int8_t *kb, int8_t *vb, char *err,
                                size_t err_cap) {
    if (n_layer <= 0) return fail(err, err_cap, "no layers");
    memset(kb, 0, (size_t)n_layer);
    memset(vb, 0, (size_t)n_layer);
    /* KVTuner's files are YAML mappings; kvq's own are one kXvY per line */
    for (size_t i = 0; i + 9 <= len; i++)
        if (!memcmp(text + i, "nbits_key", 9)) return parse_yaml(text, len, n_layer, kb, vb, err, err_cap);
    return parse_text(text, len, n_layer, kb, vb, err, err_cap);
}

typedef struct { char *err; size_t cap; } err_sink;
static void to_err(void *user, kvq_log_level lvl, const char *msg) {
    const err_sink *e = user;
    if (lvl == KVQ_LOG_ERROR && e->err && e->cap) snprintf(e->err, e->cap, "layer table: %s", msg);
}

kvq_status kvq_layer_bits_load(const char *path, int n_layer, int8_t *kb, int8_t *vb, char *err, size_t err_cap) {
    err_sink sink = {err, err_cap};
    const kvq_logger lg = {to_err, &sink};
    kvq_status ost;
    FILE *f = kvq_fopen_read(path, &lg, &ost);
    if (!f) return ost;
    char *buf = malloc(MAX_TABLE);
    size_t n = buf ? fread(buf, 1, MAX_TABLE, f) : 0;
    bool more = buf && fgetc(f) != EOF;
    fclose(f);
    if (!buf) return KVQ_ERR_NOMEM;
    kvq_status st = more ? fail(err, err_cap, "layer table '%s' is larger than 4 MiB", path)
                         : kvq_layer_bits_parse(buf, n, n_layer, kb, vb, err, err_cap);
    free(buf);
    if (st && err && err_cap) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s: %s", path, err);
        snprintf(err, err_cap, "%s", tmp);
    }
    return st;
}
