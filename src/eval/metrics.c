/* Quality metrics shared by perplexity, KL evaluation and the tuners. */
#include <math.h>
#include "kvq.h"

void kvq_log_softmax(const float *x, int n, float *out) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)(x[i] - mx));
    float lse = mx + (float)log(sum);
    for (int i = 0; i < n; i++) out[i] = x[i] - lse;
}

double kvq_kl_div(const float *base, const float *cur, int n, bool *same_top1) {
    double kl = 0;
    int ab = 0, an = 0;
    for (int i = 0; i < n; i++) {
        /* terms with p_base < e^-80 are below double precision of the sum */
        if (base[i] > -80) kl += exp((double)base[i]) * ((double)base[i] - cur[i]);
        if (base[i] > base[ab]) ab = i;
        if (cur[i] > cur[an]) an = i;
    }
    if (same_top1) *same_top1 = ab == an;
    return kl > 0 ? kl : 0;
}
