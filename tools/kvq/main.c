/* kvq: command-line entry point; one subcommand per file. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

#ifndef KVQ_VERSION
#define KVQ_VERSION "unknown"
#endif

static const char USAGE[] =
            "usage: kvq COMMAND [options]     (kvq COMMAND --help: that command; kvq --version)\n"
            "\n"
            "commands:\n"
            "  run   -m MODEL [--tokenizer FILE] [-p TEXT|-p -|-f FILE] [-n N] [--temp T] [--top-k K] [--top-p P]\n"
            "        [--seed S] [--kv SPEC] [-t THREADS] [--ctx N] [--kv-memory BYTES] [--weights TYPE|FILE]\n"
            "        [--save-session FILE] [--session-kv SPEC] [--load-session FILE]\n"
            "        [--speculate quantspec[:gamma=G][,adaptive]] [--gamma G] [--draft-weights TYPE|FILE]\n"
            "        [--stop STRING]... [--repeat-penalty F] [--repeat-last-n N]\n"
            "        [-i|--chat [--chat-template NAME] [--system TEXT]] [-v]\n"
            "        generate text (--session-kv: the cache format of the saved session, e.g. aqua); -i: a chat on\n"
            "        standard input with the model's chat template, one line a turn\n"
            "  ppl   -m MODEL -f TEXT [--ctx N] [--chars N] [--kv SPEC] [--weights TYPE|FILE] [--score half|all]\n"
            "        [--split] [--view draft|full] [--save-logits FILE] [--kl-base FILE] [--batch N] [-t T] [--json]\n"
            "        perplexity and KL divergence (--split: prompt then token-by-token decode)\n"
            "  info  [-m] MODEL [--tokenizer FILE] [--kv SPEC]... [--ctx N] [--tensors] [--json]\n"
            "  tokenize -m MODEL -p TEXT|-f FILE [--bos] [--special] [--pieces]     token ids of a text\n"
            "  synth --preset NAME --type TYPE -o OUT.gguf [--ctx N] [--tokenizer-from GGUF] [--layers N] [--seed S]\n"
            "        [-t T]    random-weight model in a real shape (speed/memory only)\n"
            "  bench -m MODEL [--kv SPEC]... [-p N] [-n N] [--depth D,...] [-t T] [-r REPS] [--json]\n"
            "        [--speculate quantspec[:gamma=G]] [--draft-weights TYPE|FILE] [--session same|SPEC] [--no-bw]\n"
            "        [--seqs S,...]    (--seqs: S sequences decoding together, continuous batching)\n"
            "        prefill/decode tok/s, GB/s vs measured bandwidth, peak RSS, KV bytes\n"
            "  tune  -m MODEL -f CALIB.txt --budget BITS [--mode kivi|pertoken] [--tokens N] [--ctx N] [--evals N]\n"
            "        [-t T] [-o FILE]\n"
            "        KVTuner search for per-layer K/V bits (writes FILE and FILE.json)\n"
            "  quantize -m MODEL.gguf --type TYPE -o OUT.gguf [--method rtn] [-t T]\n"
            "        requantize the large matrices (round-to-nearest)\n"
            "  quantize -m MODEL -f CALIB.txt --bits 2|3|4 [--method slim|gptq|rtn] [--group G] [--tokens N]\n"
            "        [--ctx N] -o OUT.gguf    SliM-LLM mixed-precision weights (rtn needs no -f)\n"
            "  quantize -m MODEL.gguf -f CALIB.txt --method gptq --type q4_0|q4_1|q2_K|q3_K|q4_K|q5_K -o OUT.gguf\n"
            "        GPTQ into standard blocks\n"
            "  calibrate aqua -m MODEL -f CALIB.txt -o PRED.gguf [--tokens N] [--ctx N] [--bits 2|3|4]\n"
            "        [--quantizer higgs|uniform]    fit AQUA-KV's cross-layer predictors\n"
            "  niah  -m MODEL [--kv SPEC] --lengths 512,1024 --depths 0,0.5,1 [--task passkey|needle|multikey|kv]\n"
            "        [-n SAMPLES] [--turns 1|2] [--seed S] [--haystack FILE] [-t T] [--json] [--plot FILE.png]\n"
            "        retrieval grid\n"
            "  serve -m MODEL [--host 127.0.0.1] [--port 8080] [--kv SPEC] [--ctx N] [--kv-memory BYTES]\n"
            "        [--parallel N] [--chunk N] [-t T] [--api-key KEY] [--session-dir DIR] [--chat-template NAME]\n"
            "        [--max-tokens N] [--max-body BYTES] [--timeout SEC] [--queue N] [--idle-sessions N]\n"
            "        [--model-id NAME]    OpenAI-compatible HTTP server (docs/serving.md)\n"
            "\n"
            "Every command takes -v (more log lines).\n"
            "MODEL is a .gguf file, a llama2.c .bin (with --tokenizer), or a Hugging Face folder.\n"
            "KV SPEC: CODEC[:opts][+POLICY[:opts]]; codecs: f32, f16, q8_0, q4_0, kivi, pertoken, hier,\n"
            "         aqua; policies: full, window, snapkv, hsa, rocket, rocket-mt. See README.md.\n";

static void usage(FILE *f) { fputs(USAGE, f); }

/* The usage lines of one command: its entry ("  CMD ...") and the
 * continuation lines under it, then the notes on MODEL and KV SPEC. */
static bool command_usage(const char *cmd) {
    const char *p = strstr(USAGE, "commands:\n"), *notes = strstr(USAGE, "\nMODEL is");
    const size_t n = strlen(cmd);
    bool found = false, in = false;
    while (p && (p = strchr(p, '\n')) && ++p < notes) {
        const char *e = strchr(p, '\n');
        const bool entry = p[0] == ' ' && p[1] == ' ' && p[2] != ' ';
        if (entry) in = !strncmp(p + 2, cmd, n) && (p[2 + n] == ' ' || p[2 + n] == '\n');
        if (in) {
            if (entry) fputs(found ? "   or: kvq " : "usage: kvq ", stdout);
            fwrite(entry ? p + 2 : p, 1, (size_t)(e - p) + 1 - (entry ? 2 : 0), stdout);
            found = true;
        }
    }
    if (found) fputs(notes, stdout);
    return found;
}

bool cli_cmd_has_flag(const char *cmd, const char *flag) {
    /* long spellings the usage text gives once, by their short form; and
     * --tokenizer, which MODEL's note gives for every command */
    static const char *const alias[][2] = {{"--model", "-m"}, {"--file", "-f"}, {"--prompt", "-p"},
                                           {"--threads", "-t"}, {"--out", "-o"}};
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
        if (!strcmp(flag, alias[i][0])) flag = alias[i][1];
    if (!strcmp(flag, "--tokenizer")) return true;
    const char *p = strstr(USAGE, "commands:\n"), *notes = strstr(USAGE, "\nMODEL is");
    const size_t n = strlen(cmd), fl = strlen(flag);
    bool in = false;
    while (p && (p = strchr(p, '\n')) && ++p < notes) {
        const char *e = strchr(p, '\n');
        const bool entry = p[0] == ' ' && p[1] == ' ' && p[2] != ' ';
        if (entry) in = !strncmp(p + 2, cmd, n) && (p[2 + n] == ' ' || p[2 + n] == '\n');
        if (!in) continue;
        /* the flag as a whole word of the line: "-t" must not match "--top-k" */
        for (const char *q = p; (q = memmem(q, (size_t)(e - q), flag, fl)) != NULL; q += fl) {
            const char before = q > p ? q[-1] : ' ', after = q[fl];
            if ((before == ' ' || before == '[' || before == '|') &&
                !(after == '-' || (after >= 'a' && after <= 'z') || (after >= '0' && after <= '9')))
                return true;
        }
    }
    return false;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("kvq %s (kernels: %s)\n", KVQ_VERSION, kvq_isa_name());
        return 0;
    }
    /* `kvq CMD --help` or `-h` anywhere after the command: that command's usage */
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (command_usage(cmd)) return 0;
            break;
        }
    if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "ppl")) return cmd_ppl(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "synth")) return cmd_synth(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "tune")) return cmd_tune(argc - 1, argv + 1);
    if (!strcmp(cmd, "niah")) return cmd_niah(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 1, argv + 1);
    if (!strcmp(cmd, "calibrate")) return cmd_calibrate(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "kvq: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
