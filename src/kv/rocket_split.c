/* RocketKV's budget split, as the digest writes it:
 *   c = max(1, S/t); alpha = min(0.2 + 0.06 log2 c, 0.8)
 *   cap = max(int(S / c^alpha), min(2 max_new, S)); prompt_keep = cap - max_new
 *   c2 = max(1, cap/t); page = min(floor c2, ceil sqrt c2); r = clamp(round(D page / c2), 1, D); k = t/2 */
#include "rocket_split.h"

#include <math.h>

void kvq_rocket_split_for(int64_t prompt_len, int64_t max_new, int budget, int head_dim, kvq_rocket_split *o) {
    const double t = budget > 0 ? budget : 1;
    o->S = prompt_len + max_new;
    o->c = fmax(1.0, (double)o->S / t);
    o->alpha = fmin(0.2 + 0.06 * log2(o->c), 0.8);
    const int64_t a = (int64_t)((double)o->S / pow(o->c, o->alpha)), b = 2 * max_new < o->S ? 2 * max_new : o->S;
    o->cap = a > b ? a : b;
    o->prompt_keep = o->cap - max_new;
    if (o->prompt_keep < 0) o->prompt_keep = 0;
    const double c2 = fmax(1.0, (double)o->cap / t);
    const int p1 = (int)floor(c2), p2 = (int)ceil(sqrt(c2));
    o->page = p1 < p2 ? p1 : p2;
    if (o->page < 1) o->page = 1;
    long r = lround(head_dim * o->page / c2);
    o->r = (int)(r < 1 ? 1 : r > head_dim ? head_dim : r);
    o->k = budget / 2 > 0 ? budget / 2 : 1;
}
