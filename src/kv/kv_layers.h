/* Per-layer (key bits, value bits) tables: kvq's own text format (one
 * "kXvY" per line, layer order, '#' comments) or KVTuner's published YAML
 * (layer index -> {nbits_key, nbits_value}). Validated against the model. */
#ifndef KVQ_KV_LAYERS_H
#define KVQ_KV_LAYERS_H
#include <stddef.h>
#include <stdint.h>
#include "kvq.h"

/* Parses a table held in memory (the fuzz entry point). */
kvq_status kvq_layer_bits_parse(const char *text, size_t len, int n_layer, int8_t *kb, int8_t *vb, char *err,
                                size_t err_cap);
/* "kXvY" exactly (decimal, within long, nothing after); no range check. */
bool       kvq_kv_bits_pair(const char *word, long *k, long *v);
kvq_status kvq_layer_bits_load(const char *path, int n_layer, int8_t *kb, int8_t *vb, char *err, size_t err_cap);

#endif
