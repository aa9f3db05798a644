/* Generated text with stop strings, shared by `kvq run --stop` and the
 * server: text is held back while it could still be the start of a stop
 * string or of an unfinished UTF-8 character, so a stop string is never
 * printed or streamed, not even in part. */
#ifndef KVQ_TOOLS_STOPTEXT_H
#define KVQ_TOOLS_STOPTEXT_H
#include <stdbool.h>
#include <stddef.h>

typedef struct cli_text {
    char *p;                  /* the text, NUL-terminated */
    size_t len, cap;
    size_t safe;              /* p[0..safe) can be shown: no partial stop string or character */
} cli_text;

/* Appends n bytes; false when out of memory. */
bool cli_text_add(cli_text *t, const char *p, size_t n);
/* After an add: true when a stop string appeared (the text is cut before
 * it); else safe moves up as far as it can. */
bool cli_text_scan(cli_text *t, char *const *stop, int n_stop);
/* The end: everything held back goes, but a trailing partial character. */
void cli_text_finish(cli_text *t);
void cli_text_free(cli_text *t);

#endif
