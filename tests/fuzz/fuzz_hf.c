/* libFuzzer target: a Hugging Face folder whose tokenizer.json (first byte
 * even) or config.json (first byte odd) is the fuzzed input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kvq.h"

static char dir[64];
static const char *CONFIG = "{\"model_type\": \"llama\", \"hidden_size\": 8, \"num_hidden_layers\": 1, "
                            "\"num_attention_heads\": 2, \"intermediate_size\": 8, \"vocab_size\": 16}";
static const char *TOKENIZER = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                               "\"merges\": [\"a b\"]}}";

static void put(const char *name, const void *p, size_t n) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(p, 1, n, f); fclose(f); }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    snprintf(dir, sizeof dir, "/tmp/kvq-fuzz-hf-%d", (int)getpid());
    char cmd[128];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 0;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (data[0] & 1) {
        put("config.json", data + 1, size - 1);
        put("tokenizer.json", TOKENIZER, strlen(TOKENIZER));
    } else {
        put("config.json", CONFIG, strlen(CONFIG));
        put("tokenizer.json", data + 1, size - 1);
    }
    kvq_model_params p = kvq_model_default_params();
    p.path = dir;
    p.vocab_only = true;
    kvq_model *m = NULL;
    if (kvq_model_load(&p, &m) == KVQ_OK) {
        kvq_token t[64];
        int n;
        kvq_tokenize(m, "ab ba abab", 10, true, t, 64, &n);
        kvq_model_free(m);
    }
    return 0;
}
