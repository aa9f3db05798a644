/* Shared helpers for the kvq subcommands. */
#ifndef KVQ_TOOLS_CLI_H
#define KVQ_TOOLS_CLI_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "kvq.h"

typedef struct cli_log { int verbosity; } cli_log;
void cli_log_cb(void *user, kvq_log_level lvl, const char *msg);

/* Fatal usage / runtime message to stderr; returns the exit code to use. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Option value parsers: print a clear error and return false on bad input. */
bool cli_int(const char *flag, const char *v, long lo, long hi, long *out);
bool cli_float(const char *flag, const char *v, double lo, double hi, double *out);
/* A byte count with an optional K/M/G/T suffix (powers of 1024). */
bool cli_bytes(const char *flag, const char *v, uint64_t *out);
/* argv[*i] is a flag taking a value: returns the value and advances, or NULL (error printed). */
const char *cli_val(int argc, char **argv, int *i);
/* Whether the usage text of command cmd lists flag (main.c holds the text). */
bool cli_cmd_has_flag(const char *cmd, const char *flag);

/* The tokens of the first max_bytes of a calibration text (BOS first when
 * the model adds one) into *out (freed by the caller); 0, or the exit code
 * with the reason printed. */
int cli_read_tokens(kvq_model *m, const char *path, size_t max_bytes, kvq_token **out, int *n);

/* fopen(path, "rb") for a regular file only: a FIFO or device given as a
 * text would block or never end. NULL with the reason printed ("cannot open
 * WHAT 'path': ..."). */
FILE *cli_fopen_text(const char *path, const char *what);

/* All of a stream, up to max bytes, into a NUL-terminated heap buffer
 * (*len bytes). NULL when out of memory, or (*too_long set) when the stream
 * holds more than max. */
char *cli_read_all(FILE *f, size_t max, size_t *len, bool *too_long);

/* Loads a model with the CLI logger; prints the reason and returns NULL on failure. */
kvq_model *cli_load_model(const char *path, const char *tok, bool vocab_only, cli_log *lg);


double cli_now(void);
/* Peak resident set size in bytes, since the start or the last reset
 * (Linux: /proc/self/clear_refs; false when it cannot be reset). */
uint64_t cli_peak_rss(void);
bool cli_reset_peak_rss(void);
void cli_human_bytes(double b, char *buf, size_t cap);

int cmd_run(int argc, char **argv);
int cmd_ppl(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_niah(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* Median streaming read bandwidth in GB/s over a buffer of `bytes`. */
double cli_read_bandwidth(size_t bytes, int threads, int reps);
/* The same over a mapping of the model file: the page-cache pages decode
 * itself reads, so it is the roofline for decode. On a VM whose bandwidth
 * drifts from minute to minute, bench reads it beside every decode run.
 * open returns NULL unless path is a regular file of at least min_bytes. */
typedef struct cli_file_bw cli_file_bw;
cli_file_bw *cli_file_bw_open(const char *path, size_t min_bytes);
double cli_file_bw_read(cli_file_bw *f, int threads, int reps);
void cli_file_bw_close(cli_file_bw *f);
int sysconf_cores(void);

#endif
