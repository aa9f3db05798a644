/* kvq bench: prefill and decode speed at cache depths, with achieved GB/s
 * against this machine's streaming read bandwidth measured in the same run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"

#define MAX_KV 8
#define MAX_DEPTH 16

typedef struct stats { double med, lo, hi; } stats;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static stats summarize(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return (stats){v[n / 2], v[0], v[n - 1]};
}

static bool parse_list(const char *flag, const char *v, long *out, int *n, int cap, long lo, long hi) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (*n == cap) return cli_fail("%s: at most %d values", flag, cap), false;
        if (!cli_int(flag, tok, lo, hi, &out[(*n)++])) return false;
    }
    return true;
}

/* QuantSpec's costs at a depth: gamma draft steps (draft weights, draft view),
 * one verify pass of gamma + 1 tokens, and a plain decode step, each the
 * median over reps rounds. Returns non-zero on failure. */
/* Every timed decode step computes its logits (the output head is a large
 * product: for Llama-3.2-1B a fifth of the weights); lg has room for gamma+1 rows. */
static int spec_costs(kvq_ctx *c, int32_t draft_set, int gamma, long depth, int reps, float *lg, double *draft_ms,
                      double *verify_ms, double *plain_ms) {
    double *d = malloc((size_t)reps * 3 * sizeof *d), *v = d + reps, *p = v + reps;
    kvq_token toks[33] = {0};
    for (int i = 0; i <= gamma; i++) toks[i] = (kvq_token)(3 + i);
    int rc = 0;
    for (int r = 0; r < reps && !rc; r++) {
        kvq_ctx_truncate(c, (int32_t)depth);
        kvq_eval_opts od = kvq_eval_default_opts();
        od.view = KVQ_VIEW_DRAFT;
        od.weight_set = draft_set;
        od.speculative = true;
        double t0 = cli_now();
        for (int i = 0; i < gamma && !rc; i++) rc = kvq_eval_ex(c, &toks[i], 1, &od, lg) != KVQ_OK;
        double t1 = cli_now();
        kvq_ctx_truncate(c, (int32_t)depth);
        kvq_eval_opts ov = kvq_eval_default_opts();
        ov.speculative = true;
        ov.all_logits = true; /* verification judges every drafted position */
        double t2 = cli_now();
        rc = rc || kvq_eval_ex(c, toks, gamma + 1, &ov, lg) != KVQ_OK;
        double t3 = cli_now();
        rc = rc || kvq_ctx_accept(c, 0) != KVQ_OK;
        double t4 = cli_now();
        rc = rc || kvq_eval(c, toks, 1, false, lg) != KVQ_OK;
        double t5 = cli_now();
        d[r] = (t1 - t0) * 1e3 / gamma;
        v[r] = (t3 - t2) * 1e3;
        p[r] = (t5 - t4) * 1e3;
    }
    if (!rc) {
        *draft_ms = summarize(d, reps).med;
        *verify_ms = summarize(v, reps).med;
        *plain_ms = summarize(p, reps).med;
    }
    free(d);
    return rc;
}

/* Continuous batching: S sequences at the given depth decode together
 * (kvq_batch_eval), n_gen steps per rep; the median aggregate tok/s. */
static int batch_costs(kvq_model *m, const kvq_ctx_params *cp, long S, long depth, long n_gen, int reps, int nth,
                       double *tok_s) {
    kvq_ctx **cs = calloc((size_t)S, sizeof *cs);
    kvq_batch_item *it = calloc((size_t)S, sizeof *it);
    kvq_token *tk = calloc((size_t)S, sizeof *tk);
    double *v = calloc((size_t)reps, sizeof *v);
    float *lg = malloc((size_t)S * (size_t)kvq_vocab_size(m) * sizeof *lg);
    kvq_batch *b = NULL;
    kvq_batch_params bp = kvq_batch_default_params();
    bp.n_tokens = (int32_t)S;
    bp.n_seqs = (int32_t)S;
    bp.n_threads = nth;
    int rc = !cs || !it || !tk || !v || !lg || kvq_batch_new(m, &bp, &b);
    kvq_eval_opts po = kvq_eval_default_opts();
    po.prompt_end = true;
    for (long i = 0; i < S && !rc; i++) {
        tk[i] = (kvq_token)(3 + i);
        rc = kvq_ctx_new(m, cp, &cs[i]) || (depth > 1 && kvq_ctx_fill_random(cs[i], (int32_t)depth - 1, 7 + (uint64_t)i)) ||
             (depth > 0 && kvq_eval_ex(cs[i], &tk[i], 1, &po, NULL));
    }
    for (int r = 0; r < reps && !rc; r++) {
        for (long i = 0; i < S && !rc; i++) rc = kvq_ctx_truncate(cs[i], (int32_t)depth) != KVQ_OK;
        double t0 = cli_now();
        for (long j = 0; j < n_gen && !rc; j++) {
            for (long i = 0; i < S; i++)
                it[i] = (kvq_batch_item){.ctx = cs[i], .tokens = &tk[i], .n = 1,
                                         .logits = lg + (size_t)i * (size_t)kvq_vocab_size(m)};
            rc = kvq_batch_eval(b, it, (int32_t)S) != KVQ_OK;
        }
        v[r] = (double)(S * n_gen) / (cli_now() - t0);
    }
    if (!rc) *tok_s = summarize(v, reps).med;
    for (long i = 0; cs && i < S; i++) kvq_ctx_free(cs[i]);
    kvq_batch_free(b);
    free(cs);
    free(it);
    free(tk);
    free(v);
    free(lg);
    return rc;
}

/* The cold tier at a depth: the context saved through spec (or its own codec),
 * then restored into a fresh context like it; each the median over reps. */
static int session_costs(kvq_ctx *c, const kvq_ctx_params *cp, kvq_model *m, const char *spec, long depth, int reps,
                         double *save_s, double *load_s, uint64_t *file_bytes) {
    char path[] = "/tmp/kvq-bench-session-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return cli_fail("bench: cannot create a temporary session file"), 1;
    close(fd);
    double *sv = malloc((size_t)reps * 2 * sizeof *sv), *lv = sv ? sv + reps : NULL;
    int rc = !sv || kvq_ctx_truncate(c, (int32_t)depth) != KVQ_OK;
    kvq_ctx *b = NULL;
    rc = rc || kvq_ctx_new(m, cp, &b) != KVQ_OK;
    for (int r = 0; r < reps && !rc; r++) {
        double t0 = cli_now();
        rc = (spec ? kvq_ctx_save_as(c, path, spec) : kvq_ctx_save(c, path)) != KVQ_OK;
        double t1 = cli_now();
        rc = rc || kvq_ctx_truncate(b, 0) != KVQ_OK;
        double t2 = cli_now();
        rc = rc || kvq_ctx_load(b, path) != KVQ_OK || kvq_ctx_n_past(b) != (int32_t)depth;
        double t3 = cli_now();
        sv[r] = t1 - t0;
        lv[r] = t3 - t2;
    }
    struct stat st;
    if (!rc && stat(path, &st) == 0) {
        *file_bytes = (uint64_t)st.st_size;
        *save_s = summarize(sv, reps).med;
        *load_s = summarize(lv, reps).med;
    }
    unlink(path);
    kvq_ctx_free(b);
    free(sv);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *kvs[MAX_KV], *speculate = NULL, *draft_w = "q4_0", *session_kv = NULL;
    bool session = false;
    int n_kv = 0, n_depth = 0, n_seqs = 0;
    long seqs[MAX_DEPTH];
    long depths[MAX_DEPTH], n_prefill = 512, n_gen = 32, threads = 0, reps = 3, verbose = 0;
    bool json = false, no_bw = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-v")) { verbose++; continue; }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--no-bw")) { no_bw = true; continue; }
        if (!(v = cli_val(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--kv")) {
            if (n_kv == MAX_KV) return cli_fail("bench: at most %d --kv", MAX_KV), 2;
            kvs[n_kv++] = v;
        } else if (!strcmp(a, "--depth")) { if (!parse_list(a, v, depths, &n_depth, MAX_DEPTH, 0, 1 << 24)) return 2; }
        else if (!strcmp(a, "-p")) { if (!cli_int(a, v, 0, 65536, &n_prefill)) return 2; }
        else if (!strcmp(a, "-n")) { if (!cli_int(a, v, 1, 4096, &n_gen)) return 2; }
        else if (!strcmp(a, "-t")) { if (!cli_int(a, v, 0, 1024, &threads)) return 2; }
        else if (!strcmp(a, "-r")) { if (!cli_int(a, v, 1, 100, &reps)) return 2; }
        else if (!strcmp(a, "--speculate")) speculate = v;
        else if (!strcmp(a, "--draft-weights")) draft_w = v;
        else if (!strcmp(a, "--session")) { session = true; if (strcmp(v, "same")) session_kv = v; }
        else if (!strcmp(a, "--seqs")) { if (!parse_list(a, v, seqs, &n_seqs, MAX_DEPTH, 1, 256)) return 2; }
        else return cli_fail("bench: unknown option '%s'", a), 2;
    }
    if (!model) return cli_fail("bench: no model given (-m MODEL)"), 2;
    if (!n_kv) kvs[n_kv++] = "f16";
    if (!n_depth) depths[n_depth++] = 0;
    cli_log lg = {(int)verbose};
    kvq_model *m = cli_load_model(model, NULL, false, &lg);
    if (!m) return 1;
    kvq_model_info info;
    kvq_model_get_info(m, &info);
    int gamma = 6;
    int32_t draft_set = 0;
    if (speculate) {
        long g = 6;
        if (strncmp(speculate, "quantspec", 9) ||
            (speculate[9] && (strncmp(speculate + 9, ":gamma=", 7) || !cli_int("--speculate gamma", speculate + 16, 1, 16, &g)))) {
            kvq_model_free(m);
            return cli_fail("bench: --speculate expects quantspec[:gamma=G], got '%s'", speculate), 2;
        }
        gamma = (int)g;
        if (kvq_model_add_weight_set(m, draft_w, (int32_t)threads, &draft_set)) {
            kvq_model_free(m);
            return cli_fail("bench: cannot make the draft weights from '%s'", draft_w), 1;
        }
    }
    int nth = threads ? (int)threads : 0;
    int bw_threads = nth ? nth : (int)sysconf_cores();
    double dram = no_bw ? 0 : cli_read_bandwidth((size_t)1 << 30, bw_threads, 5);
    double l3 = no_bw ? 0 : cli_read_bandwidth((size_t)16 << 20, bw_threads, 5);
    /* the probe's 1 GiB buffer is freed: peak RSS counts what the runs hold from here */
    const bool rss_reset = no_bw || cli_reset_peak_rss();
    /* On a VM the rate of a fresh buffer depends on where its pages land,
     * and the host's bandwidth drifts (45-85 GB/s between minutes here). The
     * reference for decode is therefore the model file's own pages, read
     * right after every decode run: per-run ratios, then their median. */
    cli_file_bw *fbw = no_bw ? NULL : cli_file_bw_open(model, 24u << 20);
    double wread = cli_file_bw_read(fbw, bw_threads, 3);
    uint64_t wbytes = kvq_model_weight_bytes(m);
    char wb[32];
    cli_human_bytes((double)wbytes, wb, sizeof wb);
    if (!json) {
        printf("model    %s: %s, %d layers, dim %d, weights read per token %s\n", model, info.name, info.n_layer,
               info.n_embd, wb);
        printf("machine  read bandwidth %.1f GB/s (1 GiB buffer), %.1f GB/s (16 MiB, cache-resident); %d threads; isa %s\n",
               dram, l3, bw_threads, kvq_isa_name());
        if (fbw)
            printf("machine  reading the model file's pages: %.1f GB/s now; read again after every decode run. %% bw: "
                   "the median of the per-run ratios to the highest probe; '>probe' when decode beat every probe "
                   "(then none is an upper bound, and no fraction is claimed)\n", wread);
        printf("%-22s %-10s %10s %18s %8s %8s %12s %9s %9s %10s\n", "kv", "test", "tok/s", "[min - max]", "GB/s", "% bw",
               "KV B/token", "attn ms", "select ms", "KV held");
    } else {
        printf("{\"model\": \"%s\", \"weight_bytes\": %llu, \"threads\": %d, \"isa\": \"%s\", \"dram_gbs\": %.2f, "
               "\"l3_gbs\": %.2f, \"file_read_gbs\": %.2f, \"results\": [",
               model, (unsigned long long)wbytes, bw_threads, kvq_isa_name(), dram, l3, wread);
    }
    int rc = 0, first = 1;
    long max_depth = 0;
    for (int d = 0; d < n_depth; d++) max_depth = depths[d] > max_depth ? depths[d] : max_depth;
    kvq_token *toks = malloc((size_t)(n_prefill > 0 ? n_prefill : 1) * sizeof *toks);
    double *v = malloc((size_t)reps * sizeof *v), *refs = malloc((size_t)reps * sizeof *refs),
           *ratio = malloc((size_t)reps * sizeof *ratio);
    /* decode computes the logits it would sample from: the output head is part of every step */
    float *logit = malloc((size_t)(gamma + 2) * (size_t)info.n_vocab * sizeof *logit);
    if (!toks || !v || !refs || !ratio || !logit) { kvq_model_free(m); return cli_fail("bench: out of memory"); }
    uint64_t s = 88172645463325252ull;
    toks[0] = (kvq_token)(info.n_vocab > 3 ? 3 : 0); /* the decode token when there is no prefill (-p 0) */
    for (long i = 0; i < n_prefill; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        toks[i] = (kvq_token)(3 + s % (uint64_t)(info.n_vocab - 3));
    }
    for (int k = 0; k < n_kv && !rc; k++) {
        kvq_ctx_params cp = kvq_ctx_default_params();
        const long tail = (n_gen > gamma + 2 ? n_gen : gamma + 2) + 1; /* decode runs, or a verify pass */
        long need = max_depth + tail > n_prefill ? max_depth + tail : n_prefill;
        cp.n_ctx = (int32_t)need;
        cp.n_batch = (int32_t)(n_prefill > 0 && n_prefill < 512 ? n_prefill : 512);
        cp.n_threads = nth;
        /* a benchmark measures the count it is given: the governor's probes
         * would mix one-thread steps into the timings */
        cp.fixed_threads = true;
        cp.kv_spec = kvs[k];
        cp.log = cli_log_cb;
        cp.log_user = &lg;
        kvq_ctx *c;
        if (kvq_ctx_new(m, &cp, &c)) { rc = cli_fail("bench: cannot create a context for --kv %s", kvs[k]); break; }
        kvq_kv_report r;
        kvq_ctx_kv_report(c, &r);
        /* prefill */
        if (n_prefill > 0) {
            for (int i = 0; i < reps; i++) {
                kvq_ctx_truncate(c, 0);
                double t0 = cli_now();
                if (kvq_eval(c, toks, (int)n_prefill, false, NULL)) { rc = 1; break; }
                v[i] = n_prefill / (cli_now() - t0);
            }
            if (rc) { kvq_ctx_free(c); break; }
            stats st = summarize(v, (int)reps);
            double gbs = 0;
            if (json)
                printf("%s{\"kv\": \"%s\", \"test\": \"pp%ld\", \"tok_s\": %.2f, \"min\": %.2f, \"max\": %.2f}", first ? "" : ", ",
                       r.spec, n_prefill, st.med, st.lo, st.hi);
            else
                printf("%-22s pp%-8ld %10.1f %8.1f - %-7.1f %8s %8s %12.1f\n", r.spec, n_prefill, st.med, st.lo, st.hi, "",
                       "", r.bytes_per_token);
            first = 0;
            (void)gbs;
        }
        /* decode at each depth */
        for (int d = 0; d < n_depth && !rc; d++) {
            kvq_ctx_truncate(c, 0);
            kvq_token t = toks[0];
            /* random K/V up to the depth, and a last token that ends the prompt, so an
             * eviction policy runs (on random data: fine for speed, meaningless for quality) */
            kvq_eval_opts po = kvq_eval_default_opts();
            po.prompt_end = true;
            if ((depths[d] > 1 && kvq_ctx_fill_random(c, (int32_t)depths[d] - 1, 7)) ||
                (depths[d] > 0 && kvq_eval_ex(c, &t, 1, &po, NULL))) { rc = 1; break; }
            kvq_kv_report held;
            kvq_ctx_kv_report(c, &held);
            uint64_t kv_at = 0;
            kvq_kv_timing tm0, tm1;
            double attn_ms = 0, sel_ms = 0;
            for (int i = 0; i < reps; i++) {
                kvq_ctx_truncate(c, (int32_t)depths[d]);
                kvq_ctx_kv_timing(c, &tm0);
                double t0 = cli_now();
                for (long j = 0; j < n_gen && !rc; j++) rc = kvq_eval(c, &t, 1, false, logit) != KVQ_OK;
                v[i] = n_gen / (cli_now() - t0);
                kvq_ctx_kv_timing(c, &tm1);
                attn_ms += (tm1.attn_seconds - tm0.attn_seconds) * 1e3 / (double)n_gen / reps;
                sel_ms += (tm1.select_seconds - tm0.select_seconds) * 1e3 / (double)n_gen / reps;
                refs[i] = fbw ? cli_file_bw_read(fbw, bw_threads, 1) : 0;
                kvq_kv_report rr;
                kvq_ctx_kv_report(c, &rr);
                kv_at = rr.bytes_used;
            }
            if (rc) break;
            /* bytes read per decode step: every weight once plus the whole cache (average over the run) */
            double kv_read = (double)kv_at - r.bytes_per_token * n_gen / 2.0;
            double bytes = (double)wbytes + (kv_read > 0 ? kv_read : 0);
            /* per-run ratios first: summarize sorts v in place */
            /* the reference is the highest probe that applies: a plain read can
             * run below what decode streams (the file's pages once read at 8.45
             * GB/s on a host where decode streamed 16.7), and a fraction above
             * 100% then measures the probe, not the kernel */
            for (int i = 0; i < reps; i++) {
                const double top = refs[i] > dram ? refs[i] : dram;
                ratio[i] = top > 0 ? bytes * v[i] / 1e9 / top : 0;
            }
            stats st = summarize(v, (int)reps);
            double gbs = bytes * st.med / 1e9, ref = bytes < 24e6 ? l3 : dram, frac = 0;
            if (fbw && bytes >= 24e6) {
                frac = summarize(ratio, (int)reps).med;
                const double fref = summarize(refs, (int)reps).med;
                if (fref > ref) ref = fref;
            } else if (ref > 0) {
                frac = gbs / ref;
            }
            const bool over = frac > 1.0;
            double kv_gbs = (kv_read > 0 ? kv_read : 0) * st.med / 1e9;
            char test[32];
            snprintf(test, sizeof test, "tg%ld@%ld", n_gen, depths[d]);
            char jref[32] = "null", jfrac[32] = "null"; /* --no-bw: no reference was read */
            if (!no_bw) snprintf(jref, sizeof jref, "%.2f", ref);
            if (!no_bw && !over) snprintf(jfrac, sizeof jfrac, "%.3f", frac);
            if (json)
                printf("%s{\"kv\": \"%s\", \"test\": \"%s\", \"depth\": %ld, \"tok_s\": %.2f, \"min\": %.2f, \"max\": %.2f, "
                       "\"gbs\": %.2f, \"kv_gbs\": %.2f, \"ref_gbs\": %s, \"bw_fraction\": %s, \"above_probe\": %s, "
                       "\"kv_bytes_per_token\": %.2f, \"attn_ms\": %.3f, \"select_ms\": %.3f, \"kv_held\": %llu, "
                       "\"kv_allocated\": %llu}",
                       first ? "" : ", ", r.spec, test, depths[d], st.med, st.lo, st.hi, gbs, kv_gbs, jref, jfrac,
                       over ? "true" : "false",
                       r.bytes_per_token, attn_ms, sel_ms, (unsigned long long)held.bytes_used,
                       (unsigned long long)held.bytes_allocated);
            else {
                char hb[32];
                cli_human_bytes((double)held.bytes_allocated, hb, sizeof hb);
                char pct[16] = "n/a"; /* --no-bw: no reference was read */
                if (!no_bw) snprintf(pct, sizeof pct, over ? ">probe" : "%.0f%%", 100 * frac);
                printf("%-22s %-10s %10.1f %8.1f - %-7.1f %8.2f %8s %12.1f %9.3f %9.3f %10s   (KV traffic %.2f GB/s)\n",
                       r.spec, test, st.med, st.lo, st.hi, gbs, pct, r.bytes_per_token, attn_ms, sel_ms, hb, kv_gbs);
            }
            first = 0;
            if (session && depths[d] > 0) {
                double ss = 0, ls = 0;
                uint64_t fb = 0;
                if (session_costs(c, &cp, m, session_kv, depths[d], (int)reps, &ss, &ls, &fb)) {
                    rc = cli_fail("bench: the session round trip at depth %ld failed", depths[d]);
                    break;
                }
                if (json)
                    printf(", {\"kv\": \"%s\", \"test\": \"session@%ld\", \"depth\": %ld, \"session_kv\": \"%s\", "
                           "\"save_s\": %.4f, \"load_s\": %.4f, \"file_bytes\": %llu}",
                           r.spec, depths[d], depths[d], session_kv ? session_kv : r.spec, ss, ls,
                           (unsigned long long)fb);
                else {
                    char fbs[32];
                    cli_human_bytes((double)fb, fbs, sizeof fbs);
                    printf("%-22s session@%ld: saved as %s in %.3f s (%s, %.2f bits per cached value), restored in %.3f s\n",
                           r.spec, depths[d], session_kv ? session_kv : r.spec, ss, fbs,
                           (double)fb * 8 / ((double)depths[d] * 2 * info.n_layer * info.n_head_kv * info.head_dim), ls);
                }
            }
            for (int q = 0; q < n_seqs && !rc; q++) {
                double agg = 0;
                kvq_ctx_params bcp = cp;
                bcp.n_batch = 1;
                if (batch_costs(m, &bcp, seqs[q], depths[d], n_gen, (int)reps, nth, &agg)) {
                    rc = cli_fail("bench: %ld sequences in a batch at depth %ld failed", seqs[q], depths[d]);
                    break;
                }
                if (json)
                    printf(", {\"kv\": \"%s\", \"test\": \"tg%ldx%ld@%ld\", \"depth\": %ld, \"seqs\": %ld, "
                           "\"tok_s\": %.2f, \"vs_one\": %.3f}",
                           r.spec, n_gen, seqs[q], depths[d], depths[d], seqs[q], agg, agg / st.med);
                else
                    printf("%-22s tg%ldx%ld@%ld: %ld sequences in one batch: %.1f tok/s together, %.2fx one sequence's\n",
                           r.spec, n_gen, seqs[q], depths[d], seqs[q], agg, agg / st.med);
            }
            if (speculate && !strncmp(r.spec, "hier", 4)) {
                double dm, vm, pm;
                if (spec_costs(c, draft_set, gamma, depths[d], (int)reps, logit, &dm, &vm, &pm)) { rc = 1; break; }
                /* what acceptance rate a would give: (1 - a^(g+1)) / (1 - a) tokens per round of g drafts + 1 verify */
                const double a9 = (1 - pow(0.9, gamma + 1)) / 0.1, a7 = (1 - pow(0.7, gamma + 1)) / 0.3;
                const double round = gamma * dm + vm;
                if (json)
                    printf(", {\"kv\": \"%s\", \"test\": \"quantspec@%ld\", \"depth\": %ld, \"gamma\": %d, \"draft_ms\": %.3f, "
                           "\"verify_ms\": %.3f, \"plain_ms\": %.3f, \"implied_speedup_a0.9\": %.3f, \"implied_speedup_a0.7\": %.3f}",
                           r.spec, depths[d], depths[d], gamma, dm, vm, pm, a9 * pm / round, a7 * pm / round);
                else
                    printf("%-22s quantspec@%ld: gamma %d, draft step %.2f ms, verify pass %.2f ms, plain step %.2f ms; "
                           "implied speed-up %.2fx at 90%% acceptance, %.2fx at 70%% (implied, not end to end)\n",
                           r.spec, depths[d], gamma, dm, vm, pm, a9 * pm / round, a7 * pm / round);
            }
        }
        fflush(stdout);
        kvq_ctx_free(c);
    }
    char rss[32];
    cli_human_bytes((double)cli_peak_rss(), rss, sizeof rss);
    if (json) printf("], \"peak_rss\": %llu}\n", (unsigned long long)cli_peak_rss());
    else printf("peak RSS %s%s\n", rss, rss_reset ? "" : " (includes the bandwidth probe's 1 GiB buffer: the peak could not be reset)");
    free(toks);
    free(v);
    free(refs);
    free(ratio);
    free(logit);
    cli_file_bw_close(fbw);
    kvq_model_free(m);
    return rc;
}
