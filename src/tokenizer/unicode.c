/* Categories are coarse ranges covering the scripts LLM vocabularies are
 * trained on; exotic codepoints may fall in the wrong class, which only
 * changes how a rare word is split, never the round trip. */
#include "unicode.h"

#include <stdlib.h>

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

bool kvq_cp_is_space(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
           cp == 0x3000;
}

bool kvq_cp_is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return cp == 0xb2 || cp == 0xb3 || cp == 0xb9 || (cp >= 0xbc && cp <= 0xbe) || (cp >= 0x660 && cp <= 0x669) ||
           (cp >= 0x6f0 && cp <= 0x6f9) || (cp >= 0x966 && cp <= 0x96f) || (cp >= 0x2070 && cp <= 0x2079) ||
           (cp >= 0x2080 && cp <= 0x2089) || (cp >= 0x2150 && cp <= 0x2189) || (cp >= 0x2460 && cp <= 0x249b) ||
           (cp >= 0xff10 && cp <= 0xff19);
}

bool kvq_cp_is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 32) >= 'a' && (cp | 32) <= 'z';
    static const uint32_t R[][2] = {
        {0xaa, 0xaa},       {0xb5, 0xb5},       {0xba, 0xba},       {0xc0, 0xd6},       {0xd8, 0xf6},
        {0xf8, 0x2c1},      {0x2c6, 0x2d1},     {0x2e0, 0x2e4},     {0x370, 0x374},     {0x376, 0x37d},
        {0x386, 0x386},     {0x388, 0x3ff},     {0x400, 0x481},     {0x48a, 0x52f},     {0x531, 0x556},
        {0x561, 0x587},     {0x5d0, 0x5ea},     {0x620, 0x64a},     {0x671, 0x6d3},     {0x904, 0x939},
        {0x93d, 0x93d},     {0x950, 0x950},     {0x958, 0x961},     {0x980, 0x9ff},     {0xa00, 0xdff},
        {0xe01, 0xe30},     {0xe40, 0xe46},     {0xe81, 0xeb0},     {0x10a0, 0x10ff},   {0x1100, 0x11ff},
        {0x1780, 0x17b3},   {0x1e00, 0x1fbc},   {0x1fc2, 0x1ffc},   {0x2c00, 0x2ce4},   {0x3041, 0x3096},
        {0x30a1, 0x30fa},   {0x3105, 0x312f},   {0x3131, 0x318e},   {0x3400, 0x4dbf},   {0x4e00, 0x9fff},
        {0xa000, 0xa48c},   {0xac00, 0xd7a3},   {0xf900, 0xfaff},   {0xff21, 0xff3a},   {0xff41, 0xff5a},
        {0xff66, 0xffdc},   {0x10000, 0x1007f}, {0x20000, 0x2fa1f},
    };
    size_t lo = 0, hi = sizeof R / sizeof R[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < R[mid][0]) hi = mid;
        else if (cp > R[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
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
