/* Retrieval tasks for kvq niah. The needle, query and answer templates are
 * the ones tools/train/train.py trains kvq-recall on; keep them identical. */
#include "niah_tasks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const WORDS[] = {
    "apple", "river", "garden", "castle", "rabbit", "lantern", "forest", "mirror", "pencil", "candle",
    "window", "basket", "dragon", "rocket", "violin", "island", "bridge", "ladder", "carpet", "wallet",
    "button", "pepper", "orange", "monkey", "planet", "silver", "hammer", "bucket", "cookie", "jacket",
    "kitten", "meadow", "pirate", "saddle", "tunnel", "turtle", "wizard", "anchor", "bottle", "cherry"};
#define N_WORDS (int)(sizeof WORDS / sizeof WORDS[0])

const char *const NIAH_GRASS = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

uint64_t niah_rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int range(uint64_t *s, int lo, int hi) { return lo + (int)(niah_rng(s) % (uint64_t)(hi - lo + 1)); }
static double unit(uint64_t *s) { return (double)(niah_rng(s) >> 11) / 9007199254740992.0; }

int niah_task_from_name(const char *s) {
    if (!strcmp(s, "passkey")) return NIAH_PASSKEY;
    if (!strcmp(s, "needle")) return NIAH_NEEDLE;
    if (!strcmp(s, "multikey")) return NIAH_MULTIKEY;
    if (!strcmp(s, "kv")) return NIAH_KV;
    return -1;
}

void niah_make(int task, double depth, uint64_t *rng, niah_case *c) {
    memset(c, 0, sizeof *c);
    int words[8];
    int nw = task == NIAH_MULTIKEY ? 4 : task == NIAH_KV ? 6 : 1;
    for (int i = 0; i < nw; i++) { /* distinct words */
        int w;
        bool dup;
        do {
            w = range(rng, 0, N_WORDS - 1);
            dup = false;
            for (int j = 0; j < i; j++) dup |= words[j] == w;
        } while (dup);
        words[i] = w;
    }
    int target = task == NIAH_MULTIKEY || task == NIAH_KV ? range(rng, 0, nw - 1) : 0;
    for (int i = 0; i < nw; i++) {
        niah_needle *n = &c->needles[c->n_needles++];
        n->depth = i == target ? depth : unit(rng);
        long num;
        switch (task) {
        case NIAH_PASSKEY:
            num = range(rng, 10000, 99999);
            snprintf(n->text, sizeof n->text, " The pass key is %ld. Remember it. %ld is the pass key.", num, num);
            snprintf(c->query, sizeof c->query, " What is the pass key? The pass key is");
            break;
        case NIAH_NEEDLE:
        case NIAH_MULTIKEY:
            num = range(rng, 100000, 9999999);
            snprintf(n->text, sizeof n->text, " The special magic number for %s is %ld.", WORDS[words[i]], num);
            if (i == target)
                snprintf(c->query, sizeof c->query, " What is the special magic number for %s? The special magic number for %s is",
                         WORDS[words[i]], WORDS[words[i]]);
            break;
        default:
            num = range(rng, 10000, 99999);
            snprintf(n->text, sizeof n->text, " %s maps to %ld.", WORDS[words[i]], num);
            if (i == target)
                snprintf(c->query, sizeof c->query, " What does %s map to? %s maps to", WORDS[words[i]], WORDS[words[i]]);
        }
        if (i == target) snprintf(c->answer, sizeof c->answer, "%ld", num);
    }
}

/* Filler of about `chars` characters from the haystack, cut at sentence ends,
 * with the needles inserted after the sentence nearest their depth. */
char *niah_prompt(const niah_case *c, const char *hay, size_t hay_len, size_t chars, uint64_t *rng) {
    size_t start = hay_len > chars ? (size_t)(niah_rng(rng) % (hay_len - chars)) : 0;
    /* begin after a sentence end so the filler reads naturally */
    while (start > 0 && start < hay_len && !(hay[start - 1] == '.' && hay[start] == ' ')) start++;
    size_t extra = 0;
    for (int i = 0; i < c->n_needles; i++) extra += strlen(c->needles[i].text);
    char *out = malloc(chars + extra + strlen(c->query) + 8);
    if (!out) return NULL;
    size_t o = 0, taken = 0, p = start % (hay_len ? hay_len : 1);
    bool placed[NIAH_MAX_NEEDLES] = {false};
    while (taken < chars) {
        char ch = hay_len ? hay[p] : ' ';
        out[o++] = ch;
        taken++;
        p = hay_len ? (p + 1) % hay_len : 0;
        if (ch == '.' && taken < chars)
            for (int i = 0; i < c->n_needles; i++)
                if (!placed[i] && (double)taken >= c->needles[i].depth * (double)chars) {
                    size_t l = strlen(c->needles[i].text);
                    memcpy(out + o, c->needles[i].text, l);
                    o += l;
                    placed[i] = true;
                }
    }
    /* needles at depth 1 (or past the last sentence end) go after the filler */
    if (o && out[o - 1] != '.') out[o++] = '.';
    for (int i = 0; i < c->n_needles; i++)
        if (!placed[i]) {
            size_t l = strlen(c->needles[i].text);
            memcpy(out + o, c->needles[i].text, l);
            o += l;
        }
    size_t ql = strlen(c->query);
    memcpy(out + o, c->query, ql);
    o += ql;
    out[o] = 0;
    return out;
}
