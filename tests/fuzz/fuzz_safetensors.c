/* libFuzzer target: safetensors header parser. */
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kvq_safetensors s;
    if (kvq_safetensors_parse(data, size, &s, NULL) == KVQ_OK) kvq_safetensors_free(&s);
    return 0;
}
