#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static void vlog(const kvq_logger *lg, kvq_log_level lvl, const char *fmt, va_list ap) {
    if (!lg || !lg->fn) return;
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    lg->fn(lg->user, lvl, buf);
}

void kvq_logf(const kvq_logger *lg, kvq_log_level lvl, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(lg, lvl, fmt, ap);
    va_end(ap);
}

kvq_status kvq_err(const kvq_logger *lg, kvq_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(lg, KVQ_LOG_ERROR, fmt, ap);
    va_end(ap);
    return st;
}

void kvq_seterr(char *err, size_t cap, const char *fmt, ...) {
    if (!err || !cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

const char *kvq_status_str(kvq_status s) {
    switch (s) {
    case KVQ_OK: return "ok";
    case KVQ_ERR_IO: return "I/O error";
    case KVQ_ERR_FORMAT: return "malformed file";
    case KVQ_ERR_UNSUPPORTED: return "unsupported";
    case KVQ_ERR_ARG: return "invalid argument";
    case KVQ_ERR_NOMEM: return "out of memory";
    case KVQ_ERR_CONTEXT_FULL: return "context full";
    case KVQ_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}
