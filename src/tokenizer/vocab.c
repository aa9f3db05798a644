#include "vocab.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MARKER "\xe2\x96\x81" /* U+2581, SentencePiece's visible space */
/* long texts are encoded in pieces of about this many bytes (see encode_fragment) */
#define CHUNK (v->chunk ? v->chunk : (size_t)1 << 16)

static void mark_pair(kvq_vocab *v, uint8_t a, uint8_t b) {
    const unsigned k = (unsigned)a << 8 | b;
    v->span_pair[k >> 3] |= (uint8_t)(1u << (k & 7));
}

static bool pair_spanned(const kvq_vocab *v, uint8_t a, uint8_t b) {
    const unsigned k = (unsigned)a << 8 | b;
    return v->span_pair[k >> 3] >> (k & 7) & 1;
}


static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

kvq_status kvq_vocab_init(kvq_vocab *v, kvq_vocab_kind kind, int32_t n, size_t text_bytes, const kvq_logger *lg) {
    memset(v, 0, sizeof *v);
    v->kind = kind;
    v->bos = v->eos = v->eot = v->unk = -1;
    if (n <= 0 || n > (1 << 24))
        return kvq_err(lg, KVQ_ERR_FORMAT, "vocabulary size %d is out of range (1..16777216)", n);
    v->n = n;
    v->text = calloc((size_t)n, sizeof *v->text);
    v->len = calloc((size_t)n, sizeof *v->len);
    v->score = calloc((size_t)n, sizeof *v->score);
    v->attr = calloc((size_t)n, 1);
    v->arena = malloc(text_bytes + (size_t)n + 1);
    v->tab_mask = pow2_at_least((uint64_t)n * 2) - 1;
    v->tab = malloc(((size_t)v->tab_mask + 1) * sizeof *v->tab);
    if (!v->text || !v->len || !v->score || !v->attr || !v->arena || !v->tab) {
        kvq_vocab_free(v);
        return kvq_err(lg, KVQ_ERR_NOMEM, "no memory for a vocabulary of %d tokens", n);
    }
    memset(v->tab, 0xff, ((size_t)v->tab_mask + 1) * sizeof *v->tab);
    for (int i = 0; i < 256; i++) v->byte_tok[i] = -1;
    /* the arena is filled front to back by kvq_vocab_set; text[i] stays NULL until set */
    v->arena[0] = 0;
    v->len[0] = 0;
    return KVQ_OK;
}

/* Arena cursor lives after the texts already placed; ids may be set in order only. */
kvq_status kvq_vocab_set(kvq_vocab *v, int32_t id, const char *text, size_t len, float score, int attr,
                         const kvq_logger *lg) {
    if (id < 0 || id >= v->n) return kvq_err(lg, KVQ_ERR_FORMAT, "token id %d out of range", id);
    if (len > 65535) return kvq_err(lg, KVQ_ERR_FORMAT, "token %d is %zu bytes long", id, len);
    char *dst = id == 0 ? v->arena : v->text[id - 1] + v->len[id - 1] + 1;
    if (id > 0 && !v->text[id - 1]) return kvq_err(lg, KVQ_ERR_INTERNAL, "vocabulary built out of order");
    memcpy(dst, text, len);
    dst[len] = 0;
    v->text[id] = dst;
    v->len[id] = (uint32_t)len;
    v->score[id] = isfinite(score) ? score : -1e30f;
    v->attr[id] = (uint8_t)attr;
    return KVQ_OK;
}

int32_t kvq_vocab_find(const kvq_vocab *v, const char *text, size_t len) {
    uint32_t h = hash_bytes(text, len) & v->tab_mask;
    for (;;) {
        int32_t id = v->tab[h];
        if (id < 0) return -1;
        if (v->len[id] == len && memcmp(v->text[id], text, len) == 0) return id;
        h = (h + 1) & v->tab_mask;
    }
}

int kvq_parse_byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int b = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        b = b * 16 + d;
    }
    return b;
}

kvq_status kvq_vocab_alloc_merges(kvq_vocab *v, int32_t n_merges, const kvq_logger *lg) {
    if (n_merges < 0 || n_merges > (1 << 24)) return kvq_err(lg, KVQ_ERR_FORMAT, "%d merges is out of range", n_merges);
    v->m_mask = pow2_at_least((uint64_t)n_merges * 2) - 1;
    v->mkey = malloc(((size_t)v->m_mask + 1) * sizeof *v->mkey);
    v->mrank = malloc(((size_t)v->m_mask + 1) * sizeof *v->mrank);
    if (!v->mkey || !v->mrank) return kvq_err(lg, KVQ_ERR_NOMEM, "no memory for %d merges", n_merges);
    memset(v->mkey, 0xff, ((size_t)v->m_mask + 1) * sizeof *v->mkey);
    return KVQ_OK;
}

static int32_t merge_rank(const kvq_vocab *v, int32_t a, int32_t b) {
    if (!v->mkey || a < 0 || b < 0) return -1;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t h = (uint32_t)mix64(key) & v->m_mask;
    while (v->mkey[h] != UINT64_MAX) {
        if (v->mkey[h] == key) return v->mrank[h];
        h = (h + 1) & v->m_mask;
    }
    return -1;
}

kvq_status kvq_vocab_add_merge(kvq_vocab *v, const char *a, size_t alen, const char *b, size_t blen, int32_t rank,
                               const kvq_logger *lg) {
    /* a vocabulary may hold an empty token; a merge with an empty side joins nothing */
    if (!alen || !blen) {
        kvq_logf(lg, KVQ_LOG_DEBUG, "merge %d has an empty side; ignored", rank);
        return KVQ_OK;
    }
    int32_t ia = kvq_vocab_find(v, a, alen), ib = kvq_vocab_find(v, b, blen);
    if (ia < 0 || ib < 0) {
        kvq_logf(lg, KVQ_LOG_DEBUG, "merge %d refers to a token not in the vocabulary; ignored", rank);
        return KVQ_OK;
    }
    if ((uint32_t)v->n_merges + 1 > v->m_mask / 2 + 1)
        return kvq_err(lg, KVQ_ERR_FORMAT, "more merges than declared");
    mark_pair(v, (uint8_t)a[alen - 1], (uint8_t)b[0]); /* the merged symbol spans the junction */
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    uint32_t h = (uint32_t)mix64(key) & v->m_mask;
    while (v->mkey[h] != UINT64_MAX) {
        if (v->mkey[h] == key) return KVQ_OK; /* first (best) rank wins */
        h = (h + 1) & v->m_mask;
    }
    v->mkey[h] = key;
    v->mrank[h] = rank;
    v->n_merges++;
    return KVQ_OK;
}

kvq_status kvq_vocab_finish(kvq_vocab *v, const kvq_logger *lg) {
    int32_t n_bad_bytes = 0, first_bad = -1;
    for (int32_t id = 0; id < v->n; id++) {
        if (!v->text[id]) return kvq_err(lg, KVQ_ERR_FORMAT, "token %d has no text", id);
        for (uint32_t i = 1; i < v->len[id]; i++) mark_pair(v, (uint8_t)v->text[id][i - 1], (uint8_t)v->text[id][i]);
        int b = kvq_parse_byte_token(v->text[id], v->len[id]);
        if (b < 0 && v->len[id] >= 4 && !memcmp(v->text[id], "<0x", 3) && v->text[id][v->len[id] - 1] == '>' &&
            v->kind != KVQ_VOCAB_BYTE_BPE && n_bad_bytes++ == 0)
            first_bad = id;
        if (v->attr[id] == KVQ_TOK_BYTE && b < 0)
            return kvq_err(lg, KVQ_ERR_FORMAT, "token %d is marked as a byte token but its text '%.16s' is not <0xHH>",
                           id, v->text[id]);
        if (b >= 0 && v->kind != KVQ_VOCAB_BYTE_BPE && v->byte_tok[b] < 0) {
            v->byte_tok[b] = id;
            v->attr[id] = KVQ_TOK_BYTE;
        }
        uint32_t h = hash_bytes(v->text[id], v->len[id]) & v->tab_mask;
        while (v->tab[h] >= 0) {
            int32_t o = v->tab[h];
            if (v->len[o] == v->len[id] && memcmp(v->text[o], v->text[id], v->len[id]) == 0) break;
            h = (h + 1) & v->tab_mask;
        }
        if (v->tab[h] < 0) v->tab[h] = id; /* duplicates keep the lowest id */
    }
    /* such a token is kept as plain text, so the byte it meant to stand for
     * falls back to <unk> */
    if (n_bad_bytes)
        kvq_logf(lg, KVQ_LOG_WARN, "%d token(s) look like byte tokens but are not <0xHH> (the first: id %d, '%.16s'); "
                 "kept as text", n_bad_bytes, first_bad, v->text[first_bad]);
    for (kvq_token *t = &v->bos; t <= &v->unk; t++)
        if (*t >= v->n) {
            kvq_logf(lg, KVQ_LOG_WARN, "special token id %d is outside the vocabulary; ignored", *t);
            *t = -1;
        }
    if (v->kind == KVQ_VOCAB_SPM && v->n > 1) {
        /* A vocabulary whose scores are all equal (some converters write -1000
         * everywhere) would merge left to right and tokenize badly. BPE-trained
         * vocabularies list tokens in merge order, so rank by id instead. */
        float s0 = NAN;
        bool all_same = true;
        for (int32_t id = 0; id < v->n && all_same; id++) {
            if (v->attr[id] != KVQ_TOK_NORMAL) continue;
            if (isnan(s0)) s0 = v->score[id];
            else if (v->score[id] != s0) all_same = false;
        }
        if (all_same && !isnan(s0)) {
            for (int32_t id = 0; id < v->n; id++) v->score[id] = -(float)id;
            v->scores_repaired = true;
            kvq_logf(lg, KVQ_LOG_WARN, "tokenizer scores are all %g: ranking merges by token id instead", s0);
        }
    }
    return KVQ_OK;
}

void kvq_vocab_free(kvq_vocab *v) {
    free(v->text);
    free(v->len);
    free(v->score);
    free(v->attr);
    free(v->arena);
    free(v->tab);
    free(v->mkey);
    free(v->mrank);
    memset(v, 0, sizeof *v);
}

/* ------------------------------------------------------------ merge engine */

typedef struct sym { int32_t prev, next; uint32_t start, len; } sym;
typedef struct cand { float prio; int32_t left; uint32_t size; } cand;

typedef struct heap { cand *a; size_t n, cap; } heap;

static bool cand_before(const cand *x, const cand *y) {
    return x->prio > y->prio || (x->prio == y->prio && x->left < y->left);
}

static int heap_push(heap *h, cand c) {
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        cand *na = realloc(h->a, nc * sizeof *na);
        if (!na) return -1;
        h->a = na;
        h->cap = nc;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = c;
    return 0;
}

static cand heap_pop(heap *h) {
    cand top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < h->n && cand_before(&h->a[l], best)) { m = l; best = &h->a[l]; }
        if (r < h->n && cand_before(&h->a[r], best)) m = r;
        if (m == i) break;
        h->a[i] = h->a[m];
        i = m;
    }
    if (h->n) h->a[i] = last;
    return top;
}

typedef struct enc {
    const kvq_vocab *v;
    const char *buf;
    sym *s;
    heap h;
    kvq_token *out;
    int cap, n;
    int n_unk;      /* characters that no token or byte token covers */
    bool last_unk;  /* the last token emitted stands for unknown characters */
    bool oom;
} enc;

static void try_pair(enc *e, int32_t left) {
    if (left < 0) return;
    int32_t right = e->s[left].next;
    if (right < 0) return;
    const sym *a = &e->s[left], *b = &e->s[right];
    float prio;
    if (e->v->kind == KVQ_VOCAB_SPM) {
        int32_t id = kvq_vocab_find(e->v, e->buf + a->start, a->len + b->len);
        if (id < 0) return;
        prio = e->v->score[id];
    } else {
        int32_t ia = kvq_vocab_find(e->v, e->buf + a->start, a->len);
        int32_t ib = kvq_vocab_find(e->v, e->buf + b->start, b->len);
        int32_t r = merge_rank(e->v, ia, ib);
        if (r < 0) return;
        prio = -(float)r;
    }
    if (heap_push(&e->h, (cand){prio, left, a->len + b->len}) != 0) e->oom = true;
}

static void emit(enc *e, kvq_token t) {
    if (e->n < e->cap) e->out[e->n] = t;
    e->n++;
    e->last_unk = false;
}

/* Merges the symbols of buf[0..len) (one pre-tokenized word) and emits ids. */
static void encode_word(enc *e, const char *buf, size_t len) {
    if (!len) return;
    e->last_unk = false; /* unknowns fuse within a word only, as in Hugging Face's BPE model */
    if (e->v->ignore_merges) {
        const int32_t whole = kvq_vocab_find(e->v, buf, len);
        if (whole >= 0) {
            emit(e, whole);
            return;
        }
    }
    e->buf = buf;
    e->s = malloc(len * sizeof *e->s);
    if (!e->s) { e->oom = true; return; }
    int32_t ns = 0;
    for (size_t p = 0; p < len;) {
        int l = kvq_utf8_len(buf + p, len - p);
        e->s[ns] = (sym){ns - 1, ns + 1, (uint32_t)p, (uint32_t)l};
        ns++;
        p += (size_t)l;
    }
    e->s[ns - 1].next = -1;
    e->h.n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) try_pair(e, i);
    while (e->h.n && !e->oom) {
        cand c = heap_pop(&e->h);
        sym *a = &e->s[c.left];
        if (a->len == 0 || a->next < 0) continue;
        sym *b = &e->s[a->next];
        if (a->len + b->len != c.size) continue; /* stale: a neighbour changed */
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0) e->s[b->next].prev = c.left;
        try_pair(e, a->prev);
        try_pair(e, c.left);
    }
    for (int32_t i = 0; i >= 0; i = e->s[i].next) {
        const sym *s = &e->s[i];
        int32_t id = kvq_vocab_find(e->v, buf + s->start, s->len);
        if (id >= 0) { emit(e, id); continue; }
        /* byte fallback when every byte has its token; otherwise the
         * character is unknown (once, not once per byte) */
        bool bytes = true;
        for (uint32_t k = 0; k < s->len; k++) bytes &= e->v->byte_tok[(uint8_t)buf[s->start + k]] >= 0;
        if (bytes) {
            for (uint32_t k = 0; k < s->len; k++) emit(e, e->v->byte_tok[(uint8_t)buf[s->start + k]]);
            continue;
        }
        /* a merged symbol that is no token holds several characters */
        for (uint32_t k = 0; k < s->len; k += (uint32_t)kvq_utf8_len(buf + s->start + k, s->len - k)) {
            e->n_unk++;
            if (e->v->fuse_unk && e->last_unk) continue;
            emit(e, e->v->unk >= 0 ? e->v->unk : 0);
            e->last_unk = true;
        }
    }
    free(e->s);
    e->s = NULL;
}

typedef struct word_ctx { enc *e; const char *text; char *tmp; } word_ctx;

/* Byte-level BPE: map each byte of the word to its printable codepoint. */
static void byte_word(void *user, size_t start, size_t len) {
    word_ctx *w = user;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) o += (size_t)kvq_utf8_encode(kvq_byte_to_cp((uint8_t)w->text[start + i]), w->tmp + o);
    encode_word(w->e, w->tmp, o);
}

/* Encodes one fragment of raw text; prefix: whether the vocabulary's space
 * prefix applies (at the start, and after a special token, as llama.cpp does). */
static kvq_status encode_fragment(enc *e, const char *text, size_t len, bool prefix) {
    const kvq_vocab *v = e->v;
    char *norm = NULL;
    size_t norm_len;
    if (v->normal != KVQ_NORMAL_NONE) {
        if (kvq_unicode_normalize(v->normal, text, len, &norm, &norm_len)) return KVQ_ERR_NOMEM;
        if (norm) {
            text = norm;
            len = norm_len;
        }
    }
    kvq_status st = KVQ_OK;
    if (v->kind == KVQ_VOCAB_BYTE_BPE) {
        /* in pieces cut after a newline that a non-space follows: every
         * pre-tokenizer pattern kvq knows ends a word there */
        for (size_t at = 0; at < len && !st;) {
            size_t end = len;
            if (len - at > CHUNK)
                for (end = at + CHUNK; end < len; end++)
                    if (text[end - 1] == '\n' && !strchr(" \t\r\n\v\f", text[end])) break;
            char *tmp = malloc((end - at) * 2 + 4);
            if (!tmp) st = KVQ_ERR_NOMEM;
            else {
                word_ctx w = {e, text + at, tmp};
                kvq_pretokenize(v->pretok, text + at, end - at, byte_word, &w);
                free(tmp);
            }
            at = end;
        }
    } else if (len > 0) {
        /* prefix a space, then write spaces as U+2581 where the vocabulary does */
        size_t cap_b = (len + 1) * 3 + 1, o = 0;
        char *buf = malloc(cap_b);
        if (!buf) st = KVQ_ERR_NOMEM;
        else {
            if (prefix && v->add_space_prefix) {
                if (v->space_is_marker) { memcpy(buf, MARKER, 3); o = 3; }
                else buf[o++] = ' ';
            }
            for (size_t i = 0; i < len; i++) {
                if (text[i] == ' ' && v->space_is_marker) { memcpy(buf + o, MARKER, 3); o += 3; }
                else buf[o++] = text[i];
            }
            /* the merge engine's memory grows with the word (a long text is
             * one word here): cut it between characters that no token or
             * merge joins, so no merge is lost */
            for (size_t at = 0; at < o;) {
                size_t end = o;
                if (o - at > CHUNK)
                    for (end = at + CHUNK; end < o; end++)
                        if (((uint8_t)buf[end] & 0xC0) != 0x80 && !pair_spanned(v, (uint8_t)buf[end - 1], (uint8_t)buf[end]))
                            break;
                encode_word(e, buf + at, end - at);
                at = end;
            }
            free(buf);
        }
    }
    free(norm);
    if (st) return st;
    return e->oom ? KVQ_ERR_NOMEM : KVQ_OK;
}

/* The control or user-defined token whose text starts at s (longest), or -1. */
static int32_t special_at(const kvq_vocab *v, const char *s, size_t left) {
    int32_t best = -1;
    for (int32_t id = 0; id < v->n; id++) {
        uint8_t a = v->attr[id];
        if ((a != KVQ_TOK_CONTROL && a != KVQ_TOK_USER) || !v->len[id] || v->len[id] > left) continue;
        if (memcmp(s, v->text[id], v->len[id]) == 0 && (best < 0 || v->len[id] > v->len[best])) best = id;
    }
    return best;
}

kvq_status kvq_vocab_encode_unk(const kvq_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                                kvq_token *out, int cap, int *n_out, int *n_unk) {
    enc e = {.v = v, .out = out, .cap = cap < 0 ? 0 : cap};
    if (n_unk) *n_unk = 0;
    if (add_bos && v->bos >= 0) emit(&e, v->bos);
    if (len > ((size_t)1 << 30)) return KVQ_ERR_ARG;
    kvq_status st = KVQ_OK;
    size_t start = 0;
    if (parse_special) {
        /* specials like <|im_start|> are matched literally and never merged into text */
        for (size_t i = 0; i < len && !st; i++) {
            if (text[i] != '<' && text[i] != '[') continue; /* every special in practice starts so */
            int32_t id = special_at(v, text + i, len - i);
            if (id < 0) continue;
            st = encode_fragment(&e, text + start, i - start, true);
            emit(&e, id);
            i += v->len[id] - 1;
            start = i + 1;
        }
    }
    if (!st) st = encode_fragment(&e, text + start, len - start, true);
    free(e.h.a);
    if (st) return st;
    *n_out = e.n;
    if (n_unk) *n_unk = e.n_unk;
    return e.n > e.cap ? KVQ_ERR_ARG : KVQ_OK;
}

kvq_status kvq_vocab_encode_ex(const kvq_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                               kvq_token *out, int cap, int *n_out) {
    return kvq_vocab_encode_unk(v, text, len, add_bos, parse_special, out, cap, n_out, NULL);
}

kvq_status kvq_vocab_encode(const kvq_vocab *v, const char *text, size_t len, bool add_bos, kvq_token *out, int cap,
                            int *n_out) {
    return kvq_vocab_encode_ex(v, text, len, add_bos, false, out, cap, n_out);
}

int kvq_vocab_piece(const kvq_vocab *v, kvq_token prev, kvq_token tok, char *buf, int cap) {
    if (tok < 0 || tok >= v->n) return -(int)KVQ_ERR_ARG;
    const char *t = v->text[tok];
    size_t n = v->len[tok];
    int o = 0;
#define PUT(c) do { if (o < cap) buf[o] = (char)(c); o++; } while (0)
    uint8_t a = v->attr[tok];
    if (a == KVQ_TOK_CONTROL || a == KVQ_TOK_UNKNOWN || a == KVQ_TOK_UNUSED) return 0;
    if (a == KVQ_TOK_BYTE) {
        int b = kvq_parse_byte_token(t, n);
        if (b >= 0) PUT(b);
        return o;
    }
    if (v->kind == KVQ_VOCAB_BYTE_BPE) {
        for (size_t i = 0; i < n;) {
            int l;
            uint32_t cp = kvq_utf8_decode(t + i, n - i, &l);
            int b = kvq_cp_to_byte(cp);
            if (b >= 0) PUT(b);
            else for (int k = 0; k < l; k++) PUT(t[i + k]); /* added tokens keep raw text */
            i += (size_t)l;
        }
        return o;
    }
    /* After BOS the space the encoder prefixed is not part of the text. */
    bool strip = v->add_space_prefix && prev >= 0 && prev == v->bos;
    for (size_t i = 0; i < n;) {
        if (v->space_is_marker && i + 3 <= n && memcmp(t + i, MARKER, 3) == 0) {
            if (!(strip && i == 0)) PUT(' ');
            i += 3;
        } else {
            if (!(strip && i == 0 && t[i] == ' ')) PUT(t[i]);
            i++;
        }
    }
#undef PUT
    return o;
}
