/* kvq run's chat mode (-i / --chat). */
#ifndef KVQ_TOOLS_RUN_CHAT_H
#define KVQ_TOOLS_RUN_CHAT_H
#include "gen.h"
#include "serve/serve.h"

/* Turns from standard input until an empty line or its end; 0, or 1 with
 * the reason printed. */
int cli_chat(cli_gen *g, srv_tpl tpl, const char *system, int n_gen);

#endif
