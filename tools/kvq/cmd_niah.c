/* kvq niah: passkey / needle-in-a-haystack retrieval over a length x depth
 * grid, scored by exact match of greedy generation, with a heatmap. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "cli.h"
#include "niah_tasks.h"

#define MAX_AXIS 32

static bool parse_doubles(const char *flag, const char *v, double *out, int *n) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        if (*n == MAX_AXIS) return cli_fail("%s: at most %d values", flag, MAX_AXIS), false;
        if (!cli_float(flag, t, 0, 1, &out[(*n)++])) return false;
    }
    return *n > 0;
}

static bool parse_ints(const char *flag, const char *v, long *out, int *n) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        if (*n == MAX_AXIS) return cli_fail("%s: at most %d values", flag, MAX_AXIS), false;
        if (!cli_int(flag, t, 32, 1 << 20, &out[(*n)++])) return false;
    }
    return *n > 0;
}

/* A heatmap over lengths x depths; with a single length or a single depth
 * (gnuplot's image needs a 2 x 2 grid, and drew nothing) a line of accuracy
 * over the other axis. 0 only when gnuplot succeeded and the PNG is there. */
static int plot(const char *png, const char *title, const long *len, int nl, const double *dep, int nd,
                double acc[MAX_AXIS][MAX_AXIS]) {
    char dat[] = "/tmp/kvq-niah-XXXXXX";
    int fd = mkstemp(dat);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    const bool grid = nl > 1 && nd > 1;
    for (int i = 0; i < nl; i++)
        for (int j = 0; j < nd; j++) fprintf(f, "%d %d %.1f\n", grid ? j : nd > 1 ? j : i, i, 100 * acc[i][j]);
    fclose(f);
    unlink(png); /* so that a PNG found afterwards is this run's */
    FILE *g = popen("gnuplot", "w");
    if (!g) { unlink(dat); return -1; }
    fprintf(g, "set terminal png size 960,%d font ',11'\nset output '%s'\n", grid ? 220 + 40 * nl : 480, png);
    if (grid || nd == 1) fprintf(g, "set title '%s'\n", title);
    else fprintf(g, "set title '%s, %ld tokens'\n", title, len[0]);
    if (grid) {
        fprintf(g, "set xlabel 'needle depth'\nset ylabel 'context length (tokens)'\n");
        fprintf(g, "set cbrange [0:100]\nset cblabel 'exact match %%'\nset palette defined (0 '#b2182b', 50 '#f7f7f7', 100 '#2166ac')\n");
        fprintf(g, "set xrange [-0.5:%d.5]\nset yrange [-0.5:%d.5]\nset xtics (", nd - 1, nl - 1);
        for (int j = 0; j < nd; j++) fprintf(g, "%s'%.2g' %d", j ? ", " : "", dep[j], j);
        fprintf(g, ")\nset ytics (");
        for (int i = 0; i < nl; i++) fprintf(g, "%s'%ld' %d", i ? ", " : "", len[i], i);
        fprintf(g, ")\nplot '%s' using 1:2:3 with image notitle, '' using 1:2:(sprintf('%%.0f',$3)) with labels notitle\n", dat);
    } else {
        const int n = nd > 1 ? nd : nl;
        fprintf(g, "set xlabel '%s'\nset ylabel 'exact match %%'\nset yrange [0:105]\nset xrange [-0.5:%d.5]\nset xtics (",
                nd > 1 ? "needle depth" : "context length (tokens)", n - 1);
        for (int k = 0; k < n; k++) {
            if (nd > 1) fprintf(g, "%s'%.2g' %d", k ? ", " : "", dep[k], k);
            else fprintf(g, "%s'%ld' %d", k ? ", " : "", len[k], k);
        }
        fprintf(g, ")\nset key off\nplot '%s' using 1:3 with linespoints lw 2 pt 7, '' using 1:3:(sprintf('%%.0f',$3)) "
                   "with labels offset 0,1\n", dat);
    }
    int rc = pclose(g);
    unlink(dat);
    struct stat st;
    if (rc == 0 && (stat(png, &st) != 0 || st.st_size == 0)) rc = -1;
    return rc;
}

int cmd_niah(int argc, char **argv) {
    const char *model = NULL, *kv = "f32", *task_s = "passkey", *png = NULL, *hay_path = NULL;
    long lens[MAX_AXIS], n_samples = 5, seed = 1, threads = 0, verbose = 0, turns = 1;
    double deps[MAX_AXIS];
    int nl = 0, nd = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--kv")) kv = v;
        else if (!strcmp(a, "--task")) task_s = v;
        else if (!strcmp(a, "--plot")) png = v;
        else if (!strcmp(a, "--haystack")) hay_path = v;
        else if (!strcmp(a, "--lengths")) { if (!parse_ints(a, v, lens, &nl)) return 2; }
        else if (!strcmp(a, "--depths")) { if (!parse_doubles(a, v, deps, &nd)) return 2; }
        else if (!strcmp(a, "-n")) { if (!cli_int(a, v, 1, 10000, &n_samples)) return 2; }
        else if (!strcmp(a, "--seed")) { if (!cli_int(a, v, 0, 0x7fffffffL, &seed)) return 2; }
        else if (!strcmp(a, "-t")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else if (!strcmp(a, "--turns")) { if (!cli_int(a, v, 1, 2, &turns)) return 2; }
        else return cli_fail("niah: unknown option '%s'", a), 2;
    }
    int task = niah_task_from_name(task_s);
    if (!model) return cli_fail("niah: no model given (-m MODEL)"), 2;
    if (task < 0) return cli_fail("niah: --task must be passkey, needle, multikey or kv"), 2;
    if (!nl) { lens[0] = 512; lens[1] = 1024; nl = 2; }
    if (!nd) for (nd = 0; nd < 11; nd++) deps[nd] = nd / 10.0;
    char *hay = NULL;
    size_t hay_len;
    if (hay_path) {
        FILE *f = cli_fopen_text(hay_path, "haystack");
        if (!f) return 1;
        hay = malloc(8 << 20);
        hay_len = hay ? fread(hay, 1, 8 << 20, f) : 0;
        fclose(f);
        if (hay_len < 1000) { free(hay); return cli_fail("haystack '%s' is too short", hay_path); }
    } else {
        hay = strdup(NIAH_GRASS);
        hay_len = strlen(hay);
    }
    cli_log lg = {(int)verbose};
    kvq_model *m = cli_load_model(model, NULL, false, &lg);
    if (!m) { free(hay); return 1; }
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    long max_len = 0;
    for (int i = 0; i < nl; i++) max_len = lens[i] > max_len ? lens[i] : max_len;
    if (info.n_ctx_train > 0 && max_len > info.n_ctx_train)
        fprintf(stderr, "kvq: warning: --lengths up to %ld are past the model's training context (%d tokens); "
                        "retrieval there measures extrapolation\n", max_len, info.n_ctx_train);
    kvq_ctx_params cp = kvq_ctx_default_params();
    cp.n_ctx = (int32_t)(max_len + 32);
    cp.n_batch = 512;
    cp.n_threads = (int32_t)threads;
    cp.kv_spec = kv;
    cp.log = cli_log_cb;
    cp.log_user = &lg;
    kvq_ctx *c;
    if (kvq_ctx_new(m, &cp, &c)) { kvq_model_free(m); free(hay); return cli_fail("niah: cannot create the context"); }
    kvq_kv_report rep;
    kvq_ctx_kv_report(c, &rep);
    /* characters per token of this haystack under this tokenizer */
    size_t probe = hay_len < 4000 ? hay_len : 4000;
    char *pt = malloc(probe * 3 + 1);
    size_t po = 0;
    while (po < probe * 3) { size_t k = probe < probe * 3 - po ? probe : probe * 3 - po; memcpy(pt + po, hay, k); po += k; }
    int ptok = 0;
    kvq_tokenize(m, pt, po, false, NULL, 0, &ptok);
    free(pt);
    double cpt = ptok > 0 ? (double)po / ptok : 3.0;
    kvq_token *toks = malloc((size_t)(max_len * 2 + 64) * sizeof *toks);
    kvq_token *q2 = malloc(256 * sizeof *q2); /* the question of a second turn */
    double held_per_token = 0; /* KV bytes held after the prompt, per prompt token, summed over cases */
    float *logits = malloc((size_t)info.n_vocab * sizeof(float));
    static double acc[MAX_AXIS][MAX_AXIS];
    const bool tty = isatty(fileno(stderr));
    int done = 0, total = nl * nd * (int)n_samples, rc = 0;
    double t0 = cli_now();
    for (int li = 0; li < nl && !rc; li++)
        for (int di = 0; di < nd && !rc; di++) {
            int ok = 0;
            for (long s = 0; s < n_samples && !rc; s++) {
                uint64_t r = (uint64_t)seed * 1000003u + (uint64_t)lens[li] * 7919u + (uint64_t)di * 104729u + (uint64_t)s;
                niah_case nc;
                niah_make(task, deps[di], &r, &nc);
                size_t extra = strlen(nc.query);
                for (int i = 0; i < nc.n_needles; i++) extra += strlen(nc.needles[i].text);
                double chars = (double)lens[li] * cpt - (double)extra;
                int n = 0;
                char *prompt = NULL;
                for (int tries = 0; tries < 6; tries++) { /* land within the target length */
                    uint64_t r2 = r;
                    free(prompt);
                    prompt = niah_prompt(&nc, hay, hay_len, chars > 16 ? (size_t)chars : 16, &r2);
                    if (kvq_tokenize(m, prompt, strlen(prompt), info.add_bos, toks, (int)(max_len * 2 + 64), &n)) n = (int)max_len * 3;
                    if (n <= lens[li] && n >= lens[li] - 8) break;
                    chars *= (double)(lens[li] - 4) / n;
                }
                if (n > lens[li]) n = (int)lens[li]; /* a few tokens of filler lost at worst */
                int nq = 0;
                if (turns == 2) {
                    /* the haystack is one prompt, which ends (an eviction policy runs without knowing the
                     * question), and the question a second one */
                    const size_t hl = strlen(prompt) - strlen(nc.query);
                    if (kvq_tokenize(m, prompt, hl, info.add_bos, toks, (int)(max_len * 2 + 64), &n) ||
                        kvq_tokenize(m, prompt + hl, strlen(nc.query), false, q2, 256, &nq)) { rc = 1; free(prompt); break; }
                    if (n + nq > lens[li]) n = (int)lens[li] - nq;
                }
                kvq_ctx_truncate(c, 0);
                char gen[64] = "";
                int gl = 0;
                kvq_eval_opts po = kvq_eval_default_opts();
                po.prompt_end = true;
                if (kvq_eval_ex(c, toks, n, &po, logits) || (nq && kvq_eval_ex(c, q2, nq, &po, logits))) {
                    rc = 1;
                    free(prompt);
                    break;
                }
                kvq_kv_report held;
                kvq_ctx_kv_report(c, &held);
                held_per_token += (double)held.bytes_used / (n + nq);
                if (nq) n += nq, toks[n - 1] = q2[nq - 1];
                kvq_token prev = toks[n - 1];
                for (int k = 0; k < (int)strlen(nc.answer) + 3; k++) {
                    kvq_token t = 0;
                    for (int v = 1; v < info.n_vocab; v++) if (logits[v] > logits[t]) t = v;
                    char piece[64];
                    int pl = kvq_token_to_piece(m, prev, t, piece, sizeof piece);
                    for (int q = 0; q < pl && gl < 60; q++) gen[gl++] = piece[q];
                    gen[gl] = 0;
                    prev = t;
                    /* stop once digits began and a non-digit followed */
                    const char *g = gen;
                    while (*g == ' ') g++;
                    size_t nd_ = strspn(g, "0123456789");
                    if ((nd_ && g[nd_]) || kvq_token_is_eog(m, t)) break;
                    if (kvq_eval(c, &t, 1, false, logits)) { rc = 1; break; }
                }
                const char *g = gen;
                while (*g == ' ') g++;
                size_t dl = strspn(g, "0123456789");
                bool hit = dl == strlen(nc.answer) && !strncmp(g, nc.answer, dl);
                ok += hit;
                if (verbose) fprintf(stderr, "len %ld depth %.2f: answer %s, got '%s' %s\n", lens[li], deps[di], nc.answer, gen, hit ? "ok" : "MISS");
                free(prompt);
                done++;
                if (tty)
                    fprintf(stderr, "\rkvq niah: %d/%d cases (%.0f s)", done, total, cli_now() - t0);
            }
            acc[li][di] = (double)ok / n_samples;
        }
    if (tty) fputc('\n', stderr);
    double mean = 0;
    for (int i = 0; i < nl; i++) for (int j = 0; j < nd; j++) mean += acc[i][j];
    mean /= nl * nd;
    if (json) {
        printf("{\"model\": \"%s\", \"kv\": \"%s\", \"task\": \"%s\", \"samples\": %ld, \"seed\": %ld, \"lengths\": [", model,
               rep.spec, task_s, n_samples, seed);
        for (int i = 0; i < nl; i++) printf("%s%ld", i ? ", " : "", lens[i]);
        printf("], \"depths\": [");
        for (int j = 0; j < nd; j++) printf("%s%g", j ? ", " : "", deps[j]);
        printf("], \"accuracy\": [");
        for (int i = 0; i < nl; i++) {
            printf("%s[", i ? ", " : "");
            for (int j = 0; j < nd; j++) printf("%s%.4f", j ? ", " : "", acc[i][j]);
            printf("]");
        }
        printf("], \"mean\": %.4f, \"turns\": %ld, \"kv_bytes_per_token\": %.2f, \"kv_bytes_held_per_token\": %.2f}\n",
               mean, turns, rep.bytes_per_token, done ? held_per_token / done : 0);
    } else {
        printf("%s on %s, kv %s, %ld samples per cell (exact match %%)\n", task_s, model, rep.spec, n_samples);
        printf("%8s", "length");
        for (int j = 0; j < nd; j++) printf(" %6.2f", deps[j]);
        printf("   mean\n");
        for (int i = 0; i < nl; i++) {
            double rm = 0;
            printf("%8ld", lens[i]);
            for (int j = 0; j < nd; j++) { printf(" %6.0f", 100 * acc[i][j]); rm += acc[i][j]; }
            printf(" %6.1f\n", 100 * rm / nd);
        }
        printf("mean %.1f%%\n", 100 * mean);
    }
    if (png && !rc) {
        char title[600];
        snprintf(title, sizeof title, "%s retrieval, kv %s (mean %.0f%%)", task_s, rep.spec, 100 * mean);
        for (char *p = title; *p; p++) if (*p == '\'') *p = ' ';
        if (plot(png, title, lens, nl, deps, nd, acc)) rc = cli_fail("niah: gnuplot failed to draw '%s' (is gnuplot installed, and the folder writable?)", png);
        else fprintf(stderr, "kvq niah: wrote %s\n", png);
    }
    free(toks);
    free(q2);
    free(logits);
    free(hay);
    kvq_ctx_free(c);
    kvq_model_free(m);
    return rc;
}
