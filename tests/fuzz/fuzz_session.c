/* libFuzzer target: session files (kvq_ctx_load) for a tiny llama2.c model.
 * The first byte picks the context's KV spec (so streams of another spec go
 * through conversion) and whether the harness writes the model's real
 * fingerprint and a valid checksum into the input, so that mutations reach
 * the token history and the KV stream behind those checks. */
#include <stdlib.h>
#include <string.h>
#include "context/context.h"
#include "core/hashstream.h"
#include "fuzz_util.h"

static const int32_t HDR[7] = {8, 16, 1, 2, 1, 8, 4};
static kvq_model *model;

static kvq_model *tiny_model(void) {
    size_t nf = 8 * 8 + 1 * (8 + 8 * 8 + 2 * 8 * 4 + 8 * 8 + 8 + 3 * 8 * 16) + 8 + 4 * 4;
    static float w[4096];
    static uint8_t buf[sizeof HDR + sizeof w];
    for (size_t i = 0; i < nf; i++) w[i] = (float)((i * 37) % 11) * 0.01f;
    memcpy(buf, HDR, sizeof HDR);
    memcpy(buf + sizeof HDR, w, nf * 4);
    char mpath[64], tpath[64];
    uint8_t tok[4 + 8 * 16];
    size_t o = 4;
    memset(tok, 0, sizeof tok);
    for (int i = 0; i < 8; i++) { int32_t l = 1; memcpy(tok + o + 4, &l, 4); tok[o + 8] = (uint8_t)('a' + i); o += 9; }
    int mfd = fuzz_memfile(buf, sizeof HDR + nf * 4, mpath, sizeof mpath), tfd = fuzz_memfile(tok, o, tpath, sizeof tpath);
    kvq_model_params p = kvq_model_default_params();
    p.path = mpath;
    p.tokenizer_path = tpath;
    kvq_model *m = NULL;
    kvq_model_load(&p, &m);
    close(mfd);
    close(tfd);
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model) model = tiny_model();
    if (!model || size < 1) return 0;
    static const char *specs[] = {"f16", "f32", "kivi:k4v2,g=4,r=4", "q4_0"};
    const uint8_t mode = data[0];
    uint8_t *buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    size_t n = size - 1;
    if ((mode & 4) && n >= 16) {
        uint64_t fp = kvq_model_fingerprint(model);
        memcpy(buf + 8, &fp, 8);
    }
    if ((mode & 8) && n >= 8) { /* a valid checksum over everything before the last 8 bytes */
        FILE *mem = fmemopen(NULL, n, "w+");
        kvq_hashstream *h = kvq_hashstream_open_writer(mem);
        fwrite(buf, 1, n - 8, kvq_hashstream_file(h));
        uint64_t sum = kvq_hashstream_digest(h);
        kvq_hashstream_close(h);
        fclose(mem);
        memcpy(buf + n - 8, &sum, 8);
    }
    char path[64];
    int fd = fuzz_memfile(buf, n, path, sizeof path);
    if (fd >= 0) {
        kvq_ctx_params p = kvq_ctx_default_params();
        p.n_ctx = 64;
        p.n_threads = 1;
        p.kv_spec = specs[mode & 3];
        kvq_ctx *c = NULL;
        if (kvq_ctx_new(model, &p, &c) == KVQ_OK) {
            if (kvq_ctx_load(c, path) == KVQ_OK && kvq_ctx_n_past(c) < 64) {
                kvq_token t = 1; /* a restored context must keep working */
                kvq_eval(c, &t, 1, false, NULL);
            }
            kvq_ctx_free(c);
        }
        close(fd);
    }
    free(buf);
    return 0;
}
