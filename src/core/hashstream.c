/* Hashing stdio streams (fopencookie). */
#include "hashstream.h"

#include <stdlib.h>
#include <string.h>

struct kvq_hashstream {
    FILE *under, *f;
    uint64_t left; /* reading: bytes of `under` it may still take */
    uint64_t h;
    uint8_t tail[8];
    int nt;
};

static void absorb(kvq_hashstream *s, const uint8_t *p, size_t n) {
    while (n) {
        if (s->nt == 0 && n >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            s->h = (s->h ^ w) * 0x9e3779b97f4a7c15ull;
            s->h ^= s->h >> 29;
            p += 8;
            n -= 8;
            continue;
        }
        s->tail[s->nt++] = *p++;
        n--;
        if (s->nt == 8) {
            s->nt = 0;
            absorb(s, s->tail, 8);
        }
    }
}

static ssize_t hs_write(void *cookie, const char *buf, size_t n) {
    kvq_hashstream *s = cookie;
    size_t w = fwrite(buf, 1, n, s->under);
    absorb(s, (const uint8_t *)buf, w);
    return w == n ? (ssize_t)n : (w ? (ssize_t)w : -1);
}

static ssize_t hs_read(void *cookie, char *buf, size_t n) {
    kvq_hashstream *s = cookie;
    if (n > s->left) n = (size_t)s->left;
    size_t r = fread(buf, 1, n, s->under);
    s->left -= r;
    absorb(s, (const uint8_t *)buf, r);
    return (ssize_t)r;
}

static kvq_hashstream *open_stream(FILE *under, bool write, uint64_t limit) {
    kvq_hashstream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->under = under;
    s->left = limit;
    s->h = 0x243f6a8885a308d3ull;
    cookie_io_functions_t io = {.read = write ? NULL : hs_read, .write = write ? hs_write : NULL};
    s->f = fopencookie(s, write ? "w" : "r", io);
    if (!s->f) {
        free(s);
        return NULL;
    }
    return s;
}

kvq_hashstream *kvq_hashstream_open_writer(FILE *under) { return open_stream(under, true, 0); }

kvq_hashstream *kvq_hashstream_open_reader(FILE *under, uint64_t limit) { return open_stream(under, false, limit); }

FILE *kvq_hashstream_file(kvq_hashstream *h) { return h->f; }

uint64_t kvq_hashstream_digest(kvq_hashstream *h) {
    fflush(h->f);
    uint64_t d = h->h;
    for (int i = 0; i < h->nt; i++) d = (d ^ h->tail[i]) * 0x100000001b3ull;
    return d ^ (uint64_t)h->nt;
}

void kvq_hashstream_close(kvq_hashstream *h) {
    if (!h) return;
    fclose(h->f);
    free(h);
}
