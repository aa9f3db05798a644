/* UTF-8 stepping, the pre-tokenizers' character classes and normalization
 * forms; the Unicode data itself comes from utf8proc. */
#include "unicode.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

int kvq_utf8_len(const char *s, size_t avail) {
    int n;
    kvq_utf8_decode(s, avail, &n);
    return n;
}

uint32_t kvq_utf8_decode(const char *s, size_t avail, int *len) {
    const uint8_t *u = (const uint8_t *)s;
    *len = 1;
    if (avail == 0) return 0;
    uint8_t c = u[0];
    if (c < 0x80) return c;
    int n = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!n || (size_t)n > avail) return c;
    uint32_t cp = c & (0x7f >> n);
    for (int i = 1; i < n; i++) {
        if ((u[i] & 0xc0) != 0x80) return c;
        cp = (cp << 6) | (u[i] & 0x3f);
    }
    /* reject overlong forms and surrogates: treat the lead byte as a lone byte */
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return c;
    *len = n;
    return cp;
}

int kvq_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xc0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The regex classes of the pre-tokenizer patterns (\s, \p{L}, \p{N}) from
 * the Unicode database as utf8proc ships it, so that a codepoint falls in
 * the class Hugging Face's regex engine puts it in. */
bool kvq_cp_is_space(uint32_t cp) {
    /* White_Space: the Z categories, plus the controls \t\n\v\f\r and NEL */
    if ((cp >= 9 && cp <= 13) || cp == 0x85) return true;
    if (cp > 0x10ffff) return false;
    const utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

bool kvq_cp_is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    if (cp > 0x10ffff) return false;
    const utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool kvq_cp_is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 32) >= 'a' && (cp | 32) <= 'z';
    if (cp > 0x10ffff) return false;
    const utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
}

kvq_status kvq_unicode_normalize(kvq_normal form, const char *text, size_t len, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (form == KVQ_NORMAL_NONE || len == 0) return KVQ_OK;
    int opt = UTF8PROC_STABLE;
    if (form == KVQ_NORMAL_NFC || form == KVQ_NORMAL_NFKC) opt |= UTF8PROC_COMPOSE;
    else opt |= UTF8PROC_DECOMPOSE;
    if (form == KVQ_NORMAL_NFKC || form == KVQ_NORMAL_NFKD) opt |= UTF8PROC_COMPAT;
    /* Only valid UTF-8 can be normalized: each maximal valid run is, and
     * the bytes between runs are copied as they are (a Hugging Face
     * tokenizer never sees them; kvq still encodes them, byte by byte). */
    size_t cap = len * 3 + 16, o = 0;
    char *buf = malloc(cap);
    if (!buf) return KVQ_ERR_NOMEM;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len) {
            int l;
            const uint32_t cp = kvq_utf8_decode(text + j, len - j, &l);
            if (l == 1 && cp >= 0x80) break; /* an invalid byte */
            j += (size_t)l;
        }
        if (j > i) {
            utf8proc_uint8_t *d = NULL;
            const utf8proc_ssize_t n =
                utf8proc_map((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(j - i), &d, (utf8proc_option_t)opt);
            if (n < 0) { /* cannot happen on valid input; keep the run as it is */
                free(d);
                d = NULL;
            }
            const size_t add = n < 0 ? j - i : (size_t)n;
            if (o + add + 4 > cap) {
                cap = (o + add + 4) * 2;
                char *nb = realloc(buf, cap);
                if (!nb) { free(d); free(buf); return KVQ_ERR_NOMEM; }
                buf = nb;
            }
            memcpy(buf + o, d ? (const char *)d : text + i, add);
            o += add;
            free(d);
        }
        if (j < len) {
            if (o + 4 > cap) {
                cap = cap * 2;
                char *nb = realloc(buf, cap);
                if (!nb) { free(buf); return KVQ_ERR_NOMEM; }
                buf = nb;
            }
            buf[o++] = text[j++];
        }
        i = j;
    }
    *out = buf;
    *out_len = o;
    return KVQ_OK;
}

/* Bytes that are printable Latin-1 keep their codepoint; the other 68 are
 * moved to 256.. in byte order (GPT-2's bytes_to_unicode). */
static bool byte_is_direct(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); }

uint32_t kvq_byte_to_cp(uint8_t b) {
    if (byte_is_direct(b)) return b;
    int k = 0;
    for (int i = 0; i < b; i++) k += !byte_is_direct(i);
    return 256u + (uint32_t)k;
}

int kvq_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_direct((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    int k = (int)(cp - 256);
    for (int b = 0; b < 256; b++)
        if (!byte_is_direct(b) && k-- == 0) return b;
    return -1;
}

/* ------------------------------------------------------ pre-tokenization */

typedef struct cps { uint32_t *cp; size_t *off; size_t n; } cps;

static bool is_l(const cps *c, size_t i) { return i < c->n && kvq_cp_is_letter(c->cp[i]); }
static bool is_n(const cps *c, size_t i) { return i < c->n && kvq_cp_is_number(c->cp[i]); }
static bool is_s(const cps *c, size_t i) { return i < c->n && kvq_cp_is_space(c->cp[i]); }
static bool is_nl(const cps *c, size_t i) { return i < c->n && (c->cp[i] == '\r' || c->cp[i] == '\n'); }
static bool is_other(const cps *c, size_t i) { return i < c->n && !is_s(c, i) && !is_l(c, i) && !is_n(c, i); }

static uint32_t lower(uint32_t cp) { return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp; }

/* 's 't 're 've 'm 'll 'd; returns the match length or 0. */
static size_t contraction(const cps *c, size_t i, bool icase) {
    if (c->cp[i] != '\'' || i + 1 >= c->n) return 0;
    uint32_t a = c->cp[i + 1], b = i + 2 < c->n ? c->cp[i + 2] : 0;
    if (icase) { a = lower(a); b = lower(b); }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* \s+(?!\S) then \s+ : a whitespace run, leaving its last char to the next
 * word when a non-space follows. */
static size_t space_run(const cps *c, size_t i) {
    size_t j = i;
    while (is_s(c, j)) j++;
    if (j < c->n && j - i > 1) return j - i - 1;
    return j - i;
}

static size_t match_gpt2(const cps *c, size_t i) {
    size_t m = contraction(c, i, false);
    if (m) return m;
    size_t j = i + (c->cp[i] == ' ');
    if (is_l(c, j)) { while (is_l(c, j)) j++; return j - i; }
    j = i + (c->cp[i] == ' ');
    if (is_n(c, j)) { while (is_n(c, j)) j++; return j - i; }
    j = i + (c->cp[i] == ' ');
    if (is_other(c, j)) { while (is_other(c, j)) j++; return j - i; }
    if (is_s(c, i)) return space_run(c, i);
    return 1;
}

static size_t match_llama3(const cps *c, size_t i, int max_digits) {
    size_t m = contraction(c, i, true);
    if (m) return m;
    size_t j = i;
    if (!is_nl(c, j) && !is_l(c, j) && !is_n(c, j) && j < c->n && is_l(c, j + 1)) j++;
    if (is_l(c, j)) { while (is_l(c, j)) j++; return j - i; }
    if (is_n(c, i)) {
        j = i;
        while (is_n(c, j) && (int)(j - i) < max_digits) j++;
        return j - i;
    }
    j = i + (c->cp[i] == ' ');
    if (is_other(c, j)) {
        while (is_other(c, j)) j++;
        while (is_nl(c, j)) j++;
        return j - i;
    }
    if (is_s(c, i)) {
        size_t e = i, last_nl = 0;
        bool nl = false;
        while (is_s(c, e)) {
            if (is_nl(c, e)) { nl = true; last_nl = e; }
            e++;
        }
        if (nl) return last_nl + 1 - i;
        return space_run(c, i);
    }
    return 1;
}

void kvq_pretokenize(kvq_pretok kind, const char *text, size_t len,
                     void (*fn)(void *user, size_t start, size_t len), void *user) {
    if (kind == KVQ_PRETOK_NONE) {
        if (len) fn(user, 0, len);
        return;
    }
    cps c = {malloc((len + 1) * sizeof(uint32_t)), malloc((len + 1) * sizeof(size_t)), 0};
    if (!c.cp || !c.off) { /* degrade to one word rather than fail */
        free(c.cp); free(c.off);
        if (len) fn(user, 0, len);
        return;
    }
    for (size_t p = 0; p < len;) {
        int l;
        c.off[c.n] = p;
        c.cp[c.n++] = kvq_utf8_decode(text + p, len - p, &l);
        p += (size_t)l;
    }
    c.off[c.n] = len;
    for (size_t i = 0; i < c.n;) {
        size_t m = kind == KVQ_PRETOK_GPT2 ? match_gpt2(&c, i)
                                            : match_llama3(&c, i, kind == KVQ_PRETOK_LLAMA3 ? 3 : 1);
        if (m == 0) m = 1;
        fn(user, c.off[i], c.off[i + m] - c.off[i]);
        i += m;
    }
    free(c.cp);
    free(c.off);
}
