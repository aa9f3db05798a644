/* Logging through the caller's callback; library code never prints. */
#ifndef KVQ_CORE_LOG_H
#define KVQ_CORE_LOG_H
#include "kvq.h"

typedef struct kvq_logger {
    kvq_log_fn fn;
    void      *user;
} kvq_logger;

#if defined(__GNUC__)
#define KVQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KVQ_PRINTF(a, b)
/* Writes a message into a caller's error buffer (err may be NULL). */
void kvq_seterr(char *err, size_t cap, const char *fmt, ...) KVQ_PRINTF(3, 4);

#endif

void kvq_logf(const kvq_logger *lg, kvq_log_level lvl, const char *fmt, ...) KVQ_PRINTF(3, 4);
/* Logs an error and returns st, so call sites read `return kvq_err(lg, KVQ_ERR_FORMAT, ...)`. */
kvq_status kvq_err(const kvq_logger *lg, kvq_status st, const char *fmt, ...) KVQ_PRINTF(3, 4);

/* Writes a message into a caller's error buffer (err may be NULL). */
void kvq_seterr(char *err, size_t cap, const char *fmt, ...) KVQ_PRINTF(3, 4);

#endif
