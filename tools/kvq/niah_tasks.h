/* Deterministic RULER-style retrieval inputs for kvq niah. */
#ifndef KVQ_TOOLS_NIAH_TASKS_H
#define KVQ_TOOLS_NIAH_TASKS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { NIAH_PASSKEY, NIAH_NEEDLE, NIAH_MULTIKEY, NIAH_KV };
#define NIAH_MAX_NEEDLES 8

typedef struct niah_needle { char text[160]; double depth; } niah_needle;
typedef struct niah_case {
    niah_needle needles[NIAH_MAX_NEEDLES];
    int n_needles;
    char query[200];
    char answer[16];     /* the digits the model must produce */
} niah_case;

extern const char *const NIAH_GRASS;

uint64_t niah_rng(uint64_t *s);
int  niah_task_from_name(const char *s);
void niah_make(int task, double depth, uint64_t *rng, niah_case *c);
/* The prompt text (caller frees): filler with the needles placed, then the query. */
char *niah_prompt(const niah_case *c, const char *hay, size_t hay_len, size_t chars, uint64_t *rng);

#endif
