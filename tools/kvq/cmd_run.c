/* kvq run: prompt + continuation on stdout, statistics on stderr. Sessions
 * (--save-session / --load-session) let a later run continue where this one
 * stopped without prefilling again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"
#include "run_chat.h"

typedef struct emitter {
    const kvq_model *m;
    kvq_token prev, bos;
    int n;
} emitter;

/* Prints a generated token; stops at an end-of-generation token. */
static bool emit(void *user, kvq_token t) {
    emitter *e = user;
    if (kvq_token_is_eog(e->m, t) || t == e->bos) return false;
    char piece[512];
    int pl = kvq_token_to_piece(e->m, e->prev, t, piece, sizeof piece);
    if (pl > 0) fwrite(piece, 1, (size_t)(pl < (int)sizeof piece ? pl : (int)sizeof piece), stdout);
    fflush(stdout);
    e->prev = t;
    e->n++;
    return true;
}

/* "quantspec[:gamma=G][,adaptive]" */
static bool parse_speculate(const char *v, kvq_spec_params *sp) {
    if (strncmp(v, "quantspec", 9) || (v[9] && v[9] != ':'))
        return cli_fail("--speculate: only 'quantspec[:gamma=G][,adaptive]' is known, got '%s'", v), false;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", v[9] ? v + 10 : "");
    for (char *o = strtok(buf, ","); o; o = strtok(NULL, ",")) {
        long g;
        if (!strcmp(o, "adaptive")) sp->adaptive = true;
        else if (!strncmp(o, "gamma=", 6)) {
            if (!cli_int("--speculate gamma", o + 6, 1, 16, &g)) return false;
            sp->gamma = (int32_t)g;
        } else return cli_fail("--speculate: unknown option '%s' (gamma=G, adaptive)", o), false;
    }
    return true;
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *prompt = NULL, *kv = "f16", *weights = NULL, *save = NULL, *load = NULL;
    const char *speculate = NULL, *draft_w = "q4_0", *session_kv = NULL;
    long gamma = 0;
    long n_gen = 128, top_k = 40, threads = 0, n_ctx = 0, seed = -1, verbose = 0;
    const char *prompt_file = NULL, *tpl_name = NULL, *system = NULL;
    double temp = 0.8, top_p = 0.95, penalty = 1.0;
    long last_n = 64;
    uint64_t kv_mem = 0;
    bool chat = false;
    cli_gen g = {.repeat_penalty = 1.0f};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!strcmp(a, "-i") || !strcmp(a, "--chat")) { chat = true; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) prompt_file = v;
        else if (!strcmp(a, "--kv")) kv = v;
        else if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--save-session")) save = v;
        else if (!strcmp(a, "--load-session")) load = v;
        else if (!strcmp(a, "--session-kv")) session_kv = v;
        else if (!strcmp(a, "--speculate")) speculate = v;
        else if (!strcmp(a, "--draft-weights")) draft_w = v;
        else if (!strcmp(a, "--gamma")) { if (!cli_int(a, v, 1, 16, &gamma)) return 2; }
        else if (!strcmp(a, "--kv-memory")) { if (!cli_bytes(a, v, &kv_mem)) return 2; }
        else if (!strcmp(a, "-n")) { if (!cli_int(a, v, 0, 1 << 24, &n_gen)) return 2; }
        else if (!strcmp(a, "--top-k")) { if (!cli_int(a, v, 0, 1 << 24, &top_k)) return 2; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else if (!strcmp(a, "--ctx")) { if (!cli_int(a, v, 0, 1 << 24, &n_ctx)) return 2; }
        else if (!strcmp(a, "--seed")) { if (!cli_int(a, v, 0, 0x7fffffffL, &seed)) return 2; }
        else if (!strcmp(a, "--temp")) { if (!cli_float(a, v, 0, 100, &temp)) return 2; }
        else if (!strcmp(a, "--top-p")) { if (!cli_float(a, v, 1e-6, 1, &top_p)) return 2; }
        else if (!strcmp(a, "--repeat-penalty")) { if (!cli_float(a, v, 0.01, 100, &penalty)) return 2; }
        else if (!strcmp(a, "--repeat-last-n")) { if (!cli_int(a, v, 0, 1 << 20, &last_n)) return 2; }
        else if (!strcmp(a, "--chat-template")) tpl_name = v;
        else if (!strcmp(a, "--system")) system = v;
        else if (!strcmp(a, "--stop")) {
            if (!*v) return cli_fail("run: --stop needs a non-empty string"), 2;
            if (g.n_stop == CLI_MAX_STOP) return cli_fail("run: at most %d --stop strings", CLI_MAX_STOP), 2;
            g.stop[g.n_stop++] = (char *)v;
        } else return cli_fail("run: unknown option '%s'", a), 2;
    }
    g.repeat_penalty = (float)penalty;
    g.repeat_last_n = (int)last_n;
    if (chat && (prompt || prompt_file || load || save || speculate))
        return cli_fail("run: -i (chat) reads the conversation from standard input; it takes no -p, -f, sessions or "
                        "--speculate"), 2;
    if ((tpl_name || system) && !chat) return cli_fail("run: --chat-template and --system are for -i (chat)"), 2;
    if (!model) return cli_fail("run: no model given (-m MODEL)"), 2;
    if (prompt && prompt_file) return cli_fail("run: give the prompt with -p TEXT or -f FILE, not both"), 2;
    if (session_kv && !save) return cli_fail("run: --session-kv SPEC is the format of --save-session FILE"), 2;
    kvq_spec_params spp = {0};
    if (speculate && !parse_speculate(speculate, &spp)) return 2;
    if (gamma && !speculate) return cli_fail("run: --gamma needs --speculate quantspec"), 2;
    if (gamma) spp.gamma = (int32_t)gamma;
    cli_log lg = {(int)verbose};
    kvq_model *m = cli_load_model(model, tok, false, &lg);
    if (!m) return 1;

    kvq_model_info info;
    kvq_model_get_info(m, &info);
    int rc = 1;
    kvq_ctx *c = NULL;
    kvq_sampler *s = NULL;
    kvq_token *toks = NULL;
    float *logits = NULL;
    kvq_eval_opts eo = kvq_eval_default_opts();
    char *prompt_buf = NULL;
    /* -f FILE, or -p - for standard input */
    if (prompt_file || (prompt && !strcmp(prompt, "-"))) {
        FILE *pf = prompt_file ? cli_fopen_text(prompt_file, "prompt file") : stdin;
        if (!pf) goto out;
        size_t len;
        bool too_long;
        prompt_buf = cli_read_all(pf, (size_t)64 << 20, &len, &too_long);
        if (prompt_file) fclose(pf);
        if (too_long) { cli_fail("run: the prompt is over 64 MiB"); goto out; }
        if (!prompt_buf) { cli_fail("run: out of memory reading the prompt"); goto out; }
        prompt = prompt_buf;
    }
    /* a random seed unless one is given, printed so the run can be repeated */
    if (seed < 0) seed = (long)((uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid()) & 0x7fffffffL;
    if (temp > 0) fprintf(stderr, "kvq: seed %ld\n", seed);
    if (n_ctx > info.n_ctx_train && info.n_ctx_train > 0)
        fprintf(stderr, "kvq: warning: --ctx %ld is past the model's training context (%d tokens); what it does beyond "
                        "that was never trained\n", n_ctx, info.n_ctx_train);
    if (weights && kvq_model_add_weight_set(m, weights, (int32_t)threads, &eo.weight_set)) {
        cli_fail("cannot make a weight set from '%s' (a type such as q4_0, or a file of the same model)", weights);
        goto out;
    }
    if (speculate && kvq_model_add_weight_set(m, draft_w, (int32_t)threads, &spp.draft_set)) {
        cli_fail("cannot make the draft weights from '%s' (a type such as q4_0, or a file of the same model)", draft_w);
        goto out;
    }
    if (!prompt) prompt = "";
    size_t plen = strlen(prompt);
    int n_tok = 0;
    /* BOS when the model's tokenizer adds one; an empty prompt is BOS alone.
     * A prompt that continues a session gets no BOS. */
    const bool bos = !load && (info.add_bos || plen == 0);
    kvq_tokenize_ex(m, prompt, plen, bos, true, NULL, 0, &n_tok);
    toks = malloc(((size_t)n_tok + 1) * sizeof *toks);
    if (!toks || kvq_tokenize_ex(m, prompt, plen, bos, true, toks, n_tok, &n_tok)) {
        cli_fail("cannot tokenize the prompt");
        goto out;
    }
    if (info.n_ctx_train > 0 && n_tok > info.n_ctx_train)
        fprintf(stderr, "kvq: warning: the prompt has %d tokens, past the model's training context (%d tokens); what "
                        "it does beyond that was never trained\n", n_tok, info.n_ctx_train);
    if (n_tok == 0 && !load && !chat) {
        cli_fail("the prompt is empty and this model has no BOS token to start from: pass -p TEXT");
        goto out;
    }
    kvq_ctx_params cp = kvq_ctx_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    cp.n_threads = (int32_t)threads;
    cp.kv_spec = kv;
    cp.kv_mem_cap = kv_mem;
    cp.log = cli_log_cb;
    cp.log_user = &lg;
    if (kvq_ctx_new(m, &cp, &c)) goto out;
    if (speculate) {
        kvq_kv_report kr;
        kvq_ctx_kv_report(c, &kr);
        if (strncmp(kr.spec, "hier", 4)) {
            cli_fail("--speculate quantspec drafts from the cache's 4-bit view: use --kv hier (got '%s')", kr.spec);
            goto out;
        }
    }
    double tl = cli_now();
    if (load) {
        if (kvq_ctx_load(c, load)) { cli_fail("cannot restore session '%s'", load); goto out; }
        if (!n_tok && !kvq_ctx_logits(c)) {
            cli_fail("session '%s' ends without the logits to continue from: pass -p TEXT", load);
            goto out;
        }
        fprintf(stderr, "kvq: restored %d tokens from '%s' in %.3f s\n", kvq_ctx_n_past(c), load, cli_now() - tl);
    }
    if (kvq_ctx_n_past(c) + n_tok > kvq_ctx_n_ctx(c)) {
        if (kvq_ctx_n_past(c))
            cli_fail("the prompt has %d tokens, more than the %d the session leaves in the context of %d (use --ctx)",
                     n_tok, kvq_ctx_n_ctx(c) - kvq_ctx_n_past(c), kvq_ctx_n_ctx(c));
        else
            cli_fail("the prompt has %d tokens, more than the context of %d (use --ctx)", n_tok, kvq_ctx_n_ctx(c));
        goto out;
    }
    kvq_sampler_params sp = {(float)temp, (int32_t)top_k, (float)top_p, (uint64_t)seed};
    if (kvq_sampler_new(&sp, info.n_vocab, &s)) { cli_fail("invalid sampling options"); goto out; }
    logits = malloc((size_t)info.n_vocab * sizeof(float));
    if (!logits) goto out;
    g.m = m;
    g.c = c;
    g.s = s;
    g.logits = logits;
    g.eo = &eo;
    g.eval_last = save != NULL;
    if (chat) {
        srv_tpl tpl = SRV_TPL_PLAIN;
        const char *tt;
        size_t tn;
        if (tpl_name) {
            if (!srv_tpl_from_name(tpl_name, &tpl)) {
                cli_fail("--chat-template '%s': one of plain, chatml, llama2, llama3, mistral, zephyr", tpl_name);
                goto out;
            }
        } else if (kvq_model_meta_str(m, "tokenizer.chat_template", &tt, &tn)) {
            cli_fail("run -i: the model has no chat template; name one with --chat-template "
                     "plain|chatml|llama2|llama3|mistral|zephyr");
            goto out;
        } else if (!srv_tpl_detect(tt, tn, &tpl)) {
            cli_fail("run -i: the model's chat template is of no family kvq knows; name one with --chat-template");
            goto out;
        }
        g.eval_last = true; /* the next turn continues from the reply */
        rc = cli_chat(&g, tpl, system, (int)n_gen);
        goto out;
    }

    fwrite(prompt, 1, plen, stdout);
    fflush(stdout);
    double t0 = cli_now();
    if (n_tok) {
        kvq_eval_opts po = eo;
        po.prompt_end = true; /* eviction policies run once the prompt is in */
        if (kvq_eval_ex(c, toks, n_tok, &po, logits)) goto out;
    } else {
        memcpy(logits, kvq_ctx_logits(c), (size_t)info.n_vocab * sizeof(float));
    }
    double t1 = cli_now();
    const kvq_token *hist;
    const int n_hist = kvq_ctx_tokens(c, &hist);
    kvq_token prev = n_hist ? hist[n_hist - 1] : -1;
    int gen = 0, decoded = 0;
    bool full = false;
    kvq_spec_stats sst = {0};
    if (speculate) {
        emitter em = {m, prev, info.bos, 0};
        if (kvq_generate_speculative(c, s, &spp, (int32_t)n_gen, emit, &em, &sst)) goto out;
        gen = em.n;
        decoded = (int)(kvq_ctx_n_past(c) - n_hist - n_tok);
        prev = em.prev;
        if (save && gen) { /* the last token joins the context, so a session continues from it */
            if (kvq_eval(c, &prev, 1, false, logits)) goto out;
        }
    } else {
        cli_gen_out go;
        if (cli_generate(&g, prev, (int)n_gen, stdout, NULL, &go)) goto out;
        gen = go.gen;
        decoded = go.decoded;
        full = go.full;
    }
    double t2 = cli_now();
    fputc('\n', stdout);
    fflush(stdout);
    if (full) fprintf(stderr, "kvq: context of %d tokens is full; generation stopped\n", kvq_ctx_n_ctx(c));
    if (save) {
        double ts = cli_now();
        if (kvq_ctx_save_as(c, save, session_kv)) { cli_fail("cannot save the session to '%s'", save); goto out; }
        fprintf(stderr, "kvq: saved %d tokens to '%s' in %.3f s\n", kvq_ctx_n_past(c), save, cli_now() - ts);
    }
    kvq_kv_report r;
    kvq_ctx_kv_report(c, &r);
    char used[32], res[32], alloc[32];
    cli_human_bytes((double)r.bytes_used, used, sizeof used);
    cli_human_bytes((double)r.bytes_reserved, res, sizeof res);
    cli_human_bytes((double)r.bytes_allocated, alloc, sizeof alloc);
    fprintf(stderr,
            "kvq: prefill %d tokens in %.3f s (%.1f tok/s); decode %d tokens in %.3f s (%.1f tok/s); isa %s\n"
            "kvq: kv %s: %s held for %d tokens (%s allocated), %s for a full context; %.1f bytes/token, "
            "%.2f bits/value\n",
            n_tok, t1 - t0, n_tok / (t1 - t0 > 0 ? t1 - t0 : 1e-9), speculate ? gen : decoded, t2 - t1,
            (speculate ? gen : decoded) / (t2 - t1 > 0 ? t2 - t1 : 1e-9), kvq_isa_name(), r.spec, used, r.n_tokens,
            alloc, res, r.bytes_per_token, r.bits_per_value);
    if (speculate && sst.rounds)
        fprintf(stderr,
                "kvq: quantspec: %lld rounds, acceptance %.1f%% (%lld of %lld drafts), %.2f tokens per round, "
                "%lld plain steps; draft %.3f s (%.2f ms per token), verify %.3f s (%.2f ms per round)\n",
                (long long)sst.rounds, 100.0 * sst.accepted / (sst.drafted ? sst.drafted : 1), (long long)sst.accepted,
                (long long)sst.drafted, (double)(sst.emitted - 1 - sst.plain_steps) / sst.rounds,
                (long long)sst.plain_steps, sst.draft_seconds,
                1e3 * sst.draft_seconds / (sst.drafted ? sst.drafted : 1), sst.verify_seconds,
                1e3 * sst.verify_seconds / sst.rounds);
    rc = 0;
out:
    free(prompt_buf);
    free(logits);
    free(toks);
    kvq_sampler_free(s);
    kvq_ctx_free(c);
    kvq_model_free(m);
    return rc;
}
