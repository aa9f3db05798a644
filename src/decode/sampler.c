/* Token sampling: greedy, or temperature with optional top-k and top-p. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kvq.h"

struct kvq_sampler {
    kvq_sampler_params p;
    int n_vocab;
    uint64_t rng;
    float *prob;
    int32_t *idx;
};

kvq_sampler_params kvq_sampler_default_params(void) {
    kvq_sampler_params p = {0.8f, 40, 0.95f, 42};
    return p;
}

kvq_status kvq_sampler_new(const kvq_sampler_params *p, int n_vocab, kvq_sampler **out) {
    *out = NULL;
    if (!(p->temp >= 0) || p->temp > 100 || p->top_k < 0 || !(p->top_p > 0 && p->top_p <= 1) || n_vocab < 1)
        return KVQ_ERR_ARG;
    kvq_sampler *s = calloc(1, sizeof *s);
    if (!s) return KVQ_ERR_NOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed ? p->seed : 0x9E3779B97F4A7C15ull;
    s->prob = malloc((size_t)n_vocab * sizeof(float));
    s->idx = malloc((size_t)n_vocab * sizeof(int32_t));
    if (!s->prob || !s->idx) {
        kvq_sampler_free(s);
        return KVQ_ERR_NOMEM;
    }
    *out = s;
    return KVQ_OK;
}

void kvq_sampler_free(kvq_sampler *s) {
    if (!s) return;
    free(s->prob);
    free(s->idx);
    free(s);
}

static float next_uniform(kvq_sampler *s) { /* xorshift64*, 24 bits of mantissa */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int by_prob_desc(const void *a, const void *b, void *ctx) {
    const float *p = ctx;
    const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    return p[i] > p[j] ? -1 : p[i] < p[j] ? 1 : (i > j) - (i < j); /* ties by id: deterministic */
}

/* The top-k / top-p cut of s->prob (sum: its total): puts the kept ids
 * first in s->idx, in descending order, and returns their count (n when
 * neither applies). Few candidates are selected in O(n*k); many (a large
 * top_k, or top-p without top-k, where a flat distribution needs most of
 * the vocabulary to reach the mass) are sorted, O(n log n): a request's
 * top_p must not cost O(n^2). */
static int cut(kvq_sampler *s, int n, double sum) {
    const int k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    if (k == n && s->p.top_p >= 1) return n;
    double cum = 0;
    if (k <= 64) {
        for (int i = 0; i < k; i++) {
            int bi = i;
            for (int j = i + 1; j < n; j++)
                if (s->prob[s->idx[j]] > s->prob[s->idx[bi]]) bi = j;
            int tmp = s->idx[i]; s->idx[i] = s->idx[bi]; s->idx[bi] = tmp;
            cum += s->prob[s->idx[i]];
            if (s->p.top_p < 1 && cum / sum >= s->p.top_p) return i + 1;
        }
        return k;
    }
    qsort_r(s->idx, (size_t)n, sizeof *s->idx, by_prob_desc, s->prob);
    for (int i = 0; i < k; i++) {
        cum += s->prob[s->idx[i]];
        if (s->p.top_p < 1 && cum / sum >= s->p.top_p) return i + 1;
    }
    return k;
}

/* exp((x - mx) / temp). Below -104 expf's result rounds to 0 anyway, but
 * libm reaches it through its underflow path (errno, a slow call), which on a
 * 128K vocabulary at temperature 0.8 was a third of sampling's time. */
static inline float tempered(float x, float mx, float temp) {
    const float z = (x - mx) / temp;
    return z < -104.0f ? 0.0f : expf(z);
}

kvq_token kvq_sample(kvq_sampler *s, const float *logits) {
    const int n = s->n_vocab;
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->p.temp == 0) return best;
    float mx = logits[best], sum = 0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = tempered(logits[i], mx, s->p.temp);
        sum += s->prob[i];
    }
    for (int i = 0; i < n; i++) s->idx[i] = i;
    const int m = cut(s, n, sum);
    float tot = 0;
    for (int i = 0; i < m; i++) tot += s->prob[s->idx[i]];
    float r = next_uniform(s) * tot, acc = 0;
    for (int i = 0; i < m; i++) {
        acc += s->prob[s->idx[i]];
        if (r < acc) return s->idx[i];
    }
    return s->idx[m - 1];
}

/* The distribution kvq_sample draws from, over the whole vocabulary:
 * one-hot at the argmax when greedy, otherwise the tempered softmax cut to
 * top-k / top-p and renormalized. Speculative sampling compares these. */
void kvq_sampler_dist(kvq_sampler *s, const float *logits, float *probs) {
    const int n = s->n_vocab;
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    memset(probs, 0, (size_t)n * sizeof(float));
    if (s->p.temp == 0) {
        probs[best] = 1;
        return;
    }
    float mx = logits[best];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = tempered(logits[i], mx, s->p.temp);
        sum += s->prob[i];
        s->idx[i] = i;
    }
    const int m = cut(s, n, sum);
    double tot = 0;
    for (int i = 0; i < m; i++) tot += s->prob[s->idx[i]];
    for (int i = 0; i < m; i++) probs[s->idx[i]] = (float)(s->prob[s->idx[i]] / tot);
}

kvq_token kvq_sampler_draw(kvq_sampler *s, const float *probs) {
    const int n = s->n_vocab;
    double tot = 0;
    for (int i = 0; i < n; i++) tot += probs[i];
    const double r = next_uniform(s) * tot;
    double acc = 0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (probs[i] <= 0) continue;
        acc += probs[i];
        last = i;
        if (r < acc) return i;
    }
    return last;
}

float kvq_sampler_uniform(kvq_sampler *s) { return next_uniform(s); }

void kvq_repeat_penalty(float *logits, int n_vocab, const kvq_token *recent, int n, float penalty) {
    if (penalty == 1.0f || !(penalty > 0)) return;
    for (int i = 0; i < n; i++) {
        const kvq_token t = recent[i];
        if (t < 0 || t >= n_vocab) continue;
        bool seen = false; /* once per distinct token: n is a few dozen, so a scan is cheapest */
        for (int j = 0; j < i && !seen; j++) seen = recent[j] == t;
        if (seen) continue;
        logits[t] = logits[t] > 0 ? logits[t] / penalty : logits[t] * penalty;
    }
}
