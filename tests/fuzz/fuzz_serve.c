/* libFuzzer target: kvq serve's request parser and chat template
 * application on arbitrary bytes. The first byte picks the endpoint and the
 * template; the rest is the request body. A body that parses is rendered
 * with the template and tokenized segment by segment as the server does
 * (with the TinyStories-656K vocabulary from ../shared when present). */
#include <stdlib.h>
#include <string.h>
#include "../../tools/kvq/serve/serve.h"

static kvq_model *vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    kvq_model_params p = kvq_model_default_params();
    p.path = "../shared/models/tinystories-656k";
    p.vocab_only = 1;
    if (kvq_model_load(&p, &vocab)) vocab = NULL;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const srv_kind kind = data[0] & 1 ? SRV_CHAT : SRV_COMPLETION;
    const srv_tpl tpl = (srv_tpl)((data[0] >> 1) % 6);
    srv_limits lim = {.max_tokens = 4096, .max_prompt_bytes = 1 << 16};
    srv_req r;
    char err[256], param[64];
    if (srv_req_parse((const char *)data + 1, size - 1, kind, &lim, &r, err, sizeof err, param, sizeof param)) {
        if (!err[0]) abort(); /* a refusal always says why */
        return 0;
    }
    if (kind == SRV_CHAT) {
        srv_render rd;
        if (srv_chat_render(tpl, r.msgs, r.n_msgs, &rd, err, sizeof err) == 0) {
            for (int i = 0; i < rd.n_seg; i++) {
                if (rd.seg[i].off + rd.seg[i].n > rd.len) abort();
                if (!vocab) continue;
                kvq_token t[512];
                int n = 0;
                kvq_tokenize_ex(vocab, rd.buf + rd.seg[i].off, rd.seg[i].n, false, rd.seg[i].special, t, 512, &n);
            }
            srv_render_free(&rd);
        }
    }
    srv_req_free(&r);
    return 0;
}
