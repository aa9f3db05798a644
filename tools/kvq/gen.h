/* The sampling loop of `kvq run` and its chat mode: a repetition penalty
 * over the context's last tokens, stop strings (never printed, not even in
 * part), an end-of-generation token, -n, and a full context. */
#ifndef KVQ_TOOLS_GEN_H
#define KVQ_TOOLS_GEN_H
#include <stdio.h>
#include "kvq.h"
#include "stoptext.h"

#define CLI_MAX_STOP 16

typedef struct cli_gen {
    kvq_model *m;
    kvq_ctx *c;
    kvq_sampler *s;
    float *logits;              /* the next token's logits, kept current */
    const kvq_eval_opts *eo;
    float repeat_penalty;       /* 1: off */
    int repeat_last_n;
    char *stop[CLI_MAX_STOP];
    int n_stop;
    bool eval_last;             /* evaluate the last token too (a session or a chat continues from it) */
} cli_gen;

typedef struct cli_gen_out {
    int gen, decoded;           /* tokens sampled, tokens evaluated */
    bool full, stopped;         /* the context filled up; a stop string or end-of-generation token came */
    kvq_token last;             /* the last token printed (for the next piece's spacing) */
} cli_gen_out;

/* Samples up to n_max tokens after prev, printing the text to out as it
 * becomes safe; the whole text stays in *text when text is given. 0, or 1
 * with the reason printed. */
int cli_generate(cli_gen *g, kvq_token prev, int n_max, FILE *out, cli_text *text, cli_gen_out *r);

#endif
