/* The "full" policy: every cached slot is read by every query. */
#include "kv.h"

const kvq_policy kvq_policy_full = {.name = "full"};
