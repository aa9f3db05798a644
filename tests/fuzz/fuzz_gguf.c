/* libFuzzer target: GGUF reader, then the model/vocabulary loader on the same bytes. */
#include <stdlib.h>
#include "fuzz_util.h"
#include "io/gguf.h"
#include "kvq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kvq_gguf g;
    if (kvq_gguf_parse(data, size, &g, NULL) == KVQ_OK) {
        free(g.kv);
        free(g.tensors);
        char path[64];
        int fd = fuzz_memfile(data, size, path, sizeof path);
        if (fd < 0) return 0;
        for (int vocab_only = 0; vocab_only < 2; vocab_only++) {
            kvq_model_params p = kvq_model_default_params();
            p.path = path;
            p.vocab_only = vocab_only;
            kvq_model *m = NULL;
            if (kvq_model_load(&p, &m) == KVQ_OK) {
                kvq_token t[64];
                int n;
                kvq_tokenize(m, "Hello world 123", 15, true, t, 64, &n);
                kvq_model_free(m);
            }
        }
        close(fd);
    }
    return 0;
}
