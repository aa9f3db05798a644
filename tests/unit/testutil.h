/* Helpers shared by the cmocka unit tests. */
#ifndef KVQ_TESTUTIL_H
#define KVQ_TESTUTIL_H
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "kvq.h"

/* Path of a file under ../shared, or NULL (and the test is skipped, or
 * failed under CI=true) when it is absent. */
const char *tu_shared(const char *rel);
#define TU_SHARED(var, rel)                      \
    const char *var = tu_shared(rel);            \
    if (!var) { skip(); return; }

/* Captures library log messages so tests can assert on the error text. */
typedef struct tu_log { char last[1024]; int n_err; } tu_log;
void tu_log_cb(void *user, kvq_log_level lvl, const char *msg);

/* Loads a model (all weights), failing the test when it cannot. */
kvq_model *tu_load(const char *path);

uint64_t tu_rng(uint64_t *s);
float    tu_randn(uint64_t *s);
double   tu_nmse(const float *ref, const float *x, size_t n);

/* Growable byte buffer for building files in memory. */
typedef struct tu_buf { uint8_t *p; size_t n, cap; } tu_buf;
void tu_put(tu_buf *b, const void *p, size_t n);
void tu_u32(tu_buf *b, uint32_t v);
void tu_u64(tu_buf *b, uint64_t v);
void tu_str(tu_buf *b, const char *s);
int  tu_write_file(const char *path, const void *p, size_t n);

#endif
