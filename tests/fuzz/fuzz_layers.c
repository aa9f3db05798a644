/* libFuzzer target: per-layer KV bit tables (kvq text format and KVTuner YAML). */
#include "kv/kv_layers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int8_t kb[32], vb[32];
    char err[256];
    kvq_layer_bits_parse((const char *)data, size, 32, kb, vb, err, sizeof err);
    kvq_layer_bits_parse((const char *)data, size, 2, kb, vb, err, sizeof err);
    return 0;
}
