/* libFuzzer target: a llama2.c checkpoint with a fuzzed tokenizer file, and
 * a fuzzed (small) checkpoint header. The first byte picks which. */
#include <string.h>
#include "fuzz_util.h"
#include "kvq.h"

static const int32_t HDR[7] = {8, 16, 1, 2, 1, 8, 4};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char mpath[64], tpath[64];
    int mfd = -1, tfd = -1;
    if (data[0] & 1) { /* fuzzed checkpoint, fixed tiny tokenizer */
        mfd = fuzz_memfile(data + 1, size - 1, mpath, sizeof mpath);
        uint8_t tok[4 + 8 * 16];
        size_t o = 4;
        memset(tok, 0, sizeof tok);
        for (int i = 0; i < 8; i++) { int32_t l = 1; memcpy(tok + o + 4, &l, 4); tok[o + 8] = (uint8_t)('a' + i); o += 9; }
        tfd = fuzz_memfile(tok, o, tpath, sizeof tpath);
    } else { /* valid tiny checkpoint, fuzzed tokenizer */
        size_t nf = 8 * 8 + 1 * (8 + 8 * 8 + 2 * 8 * 4 + 8 * 8 + 8 + 3 * 8 * 16) + 8 + 4 * 4;
        static float w[4096];
        uint8_t buf[sizeof HDR + sizeof w];
        memcpy(buf, HDR, sizeof HDR);
        memcpy(buf + sizeof HDR, w, nf * 4);
        mfd = fuzz_memfile(buf, sizeof HDR + nf * 4, mpath, sizeof mpath);
        tfd = fuzz_memfile(data + 1, size - 1, tpath, sizeof tpath);
    }
    if (mfd >= 0 && tfd >= 0) {
        kvq_model_params p = kvq_model_default_params();
        p.path = mpath;
        p.tokenizer_path = tpath;
        kvq_model *m = NULL;
        if (kvq_model_load(&p, &m) == KVQ_OK) {
            kvq_token t[64];
            int n;
            kvq_tokenize(m, "abc def", 7, true, t, 64, &n);
            kvq_model_free(m);
        }
    }
    if (mfd >= 0) close(mfd);
    if (tfd >= 0) close(tfd);
    return 0;
}
