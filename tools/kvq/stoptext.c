#include "stoptext.h"

#include <stdlib.h>
#include <string.h>

/* The longest prefix of t[0..n) that does not end inside a UTF-8
 * character. */
static size_t whole_chars(const char *t, size_t n) {
    size_t p = n;
    while (p > 0 && n - p < 4 && ((unsigned char)t[p - 1] & 0xC0) == 0x80) p--;
    if (p == 0) return n;
    const unsigned char c = (unsigned char)t[p - 1];
    const size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return p - 1 + want > n ? p - 1 : n;
}

bool cli_text_add(cli_text *t, const char *p, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *q = realloc(t->p, cap);
        if (!q) return false;
        t->p = q;
        t->cap = cap;
    }
    memcpy(t->p + t->len, p, n);
    t->len += n;
    t->p[t->len] = 0;
    return true;
}

bool cli_text_scan(cli_text *t, char *const *stop, int n_stop) {
    if (!t->p) return false;
    bool hit = false;
    for (int i = 0; i < n_stop; i++) {
        char *at = strstr(t->p + t->safe, stop[i]); /* held back, so a match starts past safe */
        if (at) {
            t->len = (size_t)(at - t->p);
            t->p[t->len] = 0;
            hit = true;
        }
    }
    if (hit) return true;
    size_t safe = t->len;
    for (int i = 0; i < n_stop; i++) {
        size_t k = strlen(stop[i]) - 1;
        if (k > t->len) k = t->len;
        for (; k > 0; k--)
            if (!memcmp(t->p + t->len - k, stop[i], k)) break;
        if (t->len - k < safe) safe = t->len - k;
    }
    safe = whole_chars(t->p, safe);
    if (safe > t->safe) t->safe = safe;
    return false;
}

void cli_text_finish(cli_text *t) {
    if (!t->p) return;
    t->len = whole_chars(t->p, t->len);
    t->p[t->len] = 0;
    if (t->safe < t->len) t->safe = t->len;
}

void cli_text_free(cli_text *t) {
    free(t->p);
    memset(t, 0, sizeof *t);
}
