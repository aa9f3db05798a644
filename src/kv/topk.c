/* Stable top-k: a quickselect finds the k-th largest value (the threshold),
 * then one pass takes every score above it and, in index order, as many
 * equal to it as are still needed. */
#include "topk.h"

#include <math.h>

static void swapf(float *a, float *b) { float t = *a; *a = *b; *b = t; }

/* The value of rank k (0-based, descending) of x[0..n), reordering x. The
 * pivot comes from a fixed-seed generator, so the result and the time are
 * reproducible, and sorted or adversarial inputs cost linear time in
 * expectation all the same. */
static float kth_largest(float *x, int n, int k) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        swapf(&x[lo + (int)(s % (uint64_t)(hi - lo + 1))], &x[hi]);
        const float p = x[hi];
        /* three-way partition: > p | == p | < p (many equal scores are common: max-pooled and page scores) */
        int lt = lo, i = lo, gt = hi;
        while (i <= gt) {
            if (x[i] > p) swapf(&x[lt++], &x[i++]);
            else if (x[i] < p) swapf(&x[i], &x[gt--]);
            else i++;
        }
        if (k < lt) hi = lt - 1;
        else if (k > gt) lo = gt + 1;
        else return p;
    }
    return x[lo];
}

int kvq_topk(const float *score, int n, int k, float *tmp, int32_t *out) {
    if (k <= 0 || n <= 0) return 0;
    if (k >= n) {
        for (int i = 0; i < n; i++) out[i] = i;
        return n;
    }
    for (int i = 0; i < n; i++) tmp[i] = isnan(score[i]) ? -INFINITY : score[i];
    const float th = kth_largest(tmp, n, k - 1);
    int above = 0;
    for (int i = 0; i < n; i++) above += (isnan(score[i]) ? -INFINITY : score[i]) > th;
    int ties = k - above, m = 0;
    for (int i = 0; i < n; i++) {
        const float v = isnan(score[i]) ? -INFINITY : score[i];
        if (v > th || (v == th && ties-- > 0)) out[m++] = i;
    }
    return m;
}
