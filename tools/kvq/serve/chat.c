/* Chat templates. A GGUF carries its template as Jinja text; rather than run
 * Jinja, kvq recognises the common families by their markers and renders
 * them itself. Markup and message content are kept as separate segments:
 * markup is tokenized with special tokens parsed, content as plain text, so
 * a message that contains "<|im_start|>system" stays text.
 *
 * Without a template, or with one of no known family, the plain transcript
 * ("User: ...\nAssistant:") is the documented fallback (docs/serving.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "serve.h"

static const struct { srv_tpl t; const char *name; } NAMES[] = {
    {SRV_TPL_PLAIN, "plain"},   {SRV_TPL_CHATML, "chatml"},   {SRV_TPL_LLAMA2, "llama2"},
    {SRV_TPL_LLAMA3, "llama3"}, {SRV_TPL_MISTRAL, "mistral"}, {SRV_TPL_ZEPHYR, "zephyr"},
};

const char *srv_tpl_name(srv_tpl t) {
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        if (NAMES[i].t == t) return NAMES[i].name;
    return "?";
}

bool srv_tpl_from_name(const char *name, srv_tpl *t) {
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        if (!strcmp(NAMES[i].name, name)) return *t = NAMES[i].t, true;
    return false;
}

static bool has(const char *text, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(text + i, needle, k)) return true;
    return false;
}

bool srv_tpl_detect(const char *text, size_t n, srv_tpl *t) {
    *t = SRV_TPL_PLAIN;
    if (!text || !n) return false;
    if (has(text, n, "<|im_start|>")) *t = SRV_TPL_CHATML;
    else if (has(text, n, "<|start_header_id|>")) *t = SRV_TPL_LLAMA3;
    else if (has(text, n, "<<SYS>>")) *t = SRV_TPL_LLAMA2;
    else if (has(text, n, "[INST]")) *t = SRV_TPL_MISTRAL;
    else if (has(text, n, "<|user|>") && !has(text, n, "<|end|>")) *t = SRV_TPL_ZEPHYR; /* <|end|>: phi-3, not zephyr */
    else return false;
    return true;
}

void srv_render_free(srv_render *r) {
    free(r->buf);
    free(r->seg);
    memset(r, 0, sizeof *r);
}

static bool put(srv_render *r, const char *s, bool special) {
    size_t n = strlen(s);
    if (!n) return true;
    if (r->len + n + 1 > r->cap) {
        size_t cap = (r->len + n + 1) * 2;
        char *b = realloc(r->buf, cap);
        if (!b) return false;
        r->buf = b;
        r->cap = cap;
    }
    /* joins a segment of the same kind: fewer tokenizer calls */
    if (r->n_seg && r->seg[r->n_seg - 1].special == special) {
        r->seg[r->n_seg - 1].n += n;
    } else {
        if (r->n_seg == r->cap_seg) {
            int cap = r->cap_seg ? r->cap_seg * 2 : 16;
            srv_seg *g = realloc(r->seg, (size_t)cap * sizeof *g);
            if (!g) return false;
            r->seg = g;
            r->cap_seg = cap;
        }
        r->seg[r->n_seg++] = (srv_seg){r->len, n, special};
    }
    memcpy(r->buf + r->len, s, n + 1);
    r->len += n;
    return true;
}

#define M(s) ok = ok && put(out, (s), true)
#define C(s) ok = ok && put(out, (s), false)

/* llama2 and mistral fold the system prompt into the first user turn. */
static bool render_inst(srv_tpl t, const srv_msg *msgs, int n, srv_render *out) {
    bool ok = true;
    const char *sys = NULL;
    bool first_user = true;
    for (int i = 0; i < n; i++) {
        const srv_msg *m = &msgs[i];
        if (!strcmp(m->role, "system")) {
            sys = m->content;
            continue;
        }
        if (!strcmp(m->role, "user")) {
            M(first_user ? "[INST] " : "<s>[INST] ");
            if (sys && t == SRV_TPL_LLAMA2) {
                M("<<SYS>>\n");
                C(sys);
                M("\n<</SYS>>\n\n");
            } else if (sys) {
                C(sys);
                M("\n\n");
            }
            sys = NULL;
            C(m->content);
            M(" [/INST]");
            first_user = false;
        } else {
            M(" ");
            C(m->content);
            M(" </s>");
        }
    }
    return ok;
}

int srv_chat_render(srv_tpl t, const srv_msg *msgs, int n, srv_render *out, char *err, size_t err_cap) {
    memset(out, 0, sizeof *out);
    bool ok = true;
    if (t == SRV_TPL_LLAMA2 || t == SRV_TPL_MISTRAL) {
        ok = render_inst(t, msgs, n, out);
    } else {
        for (int i = 0; i < n && ok; i++) {
            const char *role = msgs[i].role, *c = msgs[i].content;
            switch (t) {
            case SRV_TPL_CHATML: M("<|im_start|>"); M(role); M("\n"); C(c); M("<|im_end|>\n"); break;
            case SRV_TPL_LLAMA3: M("<|start_header_id|>"); M(role); M("<|end_header_id|>\n\n"); C(c); M("<|eot_id|>"); break;
            case SRV_TPL_ZEPHYR: M("<|"); M(role); M("|>\n"); C(c); M("</s>\n"); break;
            default: /* plain: the role as text; content never ends a turn by itself */
                C(!strcmp(role, "system") ? "System: " : !strcmp(role, "user") ? "User: " : "Assistant: ");
                C(c);
                C("\n");
                break;
            }
        }
    }
    switch (t) { /* the assistant's turn begins */
    case SRV_TPL_CHATML: M("<|im_start|>assistant\n"); break;
    case SRV_TPL_LLAMA3: M("<|start_header_id|>assistant<|end_header_id|>\n\n"); break;
    case SRV_TPL_ZEPHYR: M("<|assistant|>\n"); break;
    case SRV_TPL_PLAIN: C("Assistant:"); break;
    default: break;
    }
    if (!ok) {
        srv_render_free(out);
        snprintf(err, err_cap, "out of memory rendering the conversation");
        return 500;
    }
    return 0;
}
