/* libFuzzer target: arbitrary bytes through all three encoders (SPM scores,
 * BPE merges, byte-level BPE) and back through the decoder. Uses the
 * vocabularies in ../shared when present. */
#include <stdlib.h>
#include "kvq.h"

static kvq_model *models[3];

static kvq_model *load(const char *path) {
    kvq_model_params p = kvq_model_default_params();
    p.path = path;
    p.vocab_only = 1;
    kvq_model *m = NULL;
    return kvq_model_load(&p, &m) == KVQ_OK ? m : NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    models[0] = load("../shared/tokenizers/ggml-vocab-llama-spm.gguf");
    models[1] = load("../shared/models/tinystories-656k");
    models[2] = load("../shared/tokenizers/ggml-vocab-gpt-2.gguf");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int i = 0; i < 3; i++) {
        if (!models[i]) continue;
        int n = 0;
        kvq_tokenize(models[i], (const char *)data, size, true, NULL, 0, &n);
        kvq_token *t = malloc(((size_t)n + 1) * sizeof *t);
        if (t && kvq_tokenize(models[i], (const char *)data, size, true, t, n, &n) == KVQ_OK) {
            char buf[256];
            for (int k = 0; k < n; k++) kvq_token_to_piece(models[i], k ? t[k - 1] : -1, t[k], buf, sizeof buf);
        }
        free(t);
    }
    return 0;
}
