#!/usr/bin/env bash
# kvq against llama.cpp on the same GGUF files, alternated in the same run:
#   bench/vs-llamacpp.sh LLAMA_BIN_DIR [MODEL.gguf ...]
# Per model and round: llama-bench (prefill P tokens, decode N at an empty cache), then kvq bench
# (the same), and at each depth in DEPTHS above 0, llama-batched-bench (a real prefill of DEPTH
# tokens, then N decoded; its S_TG) against kvq bench --depth (which fills the cache without
# computing it: decode reads the same bytes either way). Prints the medians, the per-round ratios
# kvq / llama.cpp (median and min-max), the CPU model and flags. 2 threads, f16 KV on both sides.
# Never run by CI; quiet machine only (check uptime). DEVELOPERS.md says how to build llama.cpp.
#   env: ROUNDS (3), P (512), N (32), DEPTHS ("0 4096"), OUT (bench/results/vs-llamacpp)
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA=${1:?usage: bench/vs-llamacpp.sh LLAMA_BIN_DIR [MODEL.gguf ...]}
shift
MODELS=${*:-/work/synth/stories110m-q8_0.gguf /work/synth/llama3.2-1b-q4_0.gguf /work/synth/llama3.2-1b-q8_0.gguf /work/synth/llama3.2-1b-q4_K.gguf}
ROUNDS=${ROUNDS:-3}
P=${P:-512}
N=${N:-32}
DEPTHS=${DEPTHS:-0 4096}
OUT=${OUT:-bench/results/vs-llamacpp}
mkdir -p "$OUT"
log=$OUT/run-$(date -u +%Y%m%dT%H%M%S).log
{
    echo "# $(date -u '+%F %T') kvq $(git describe --always --dirty)"
    echo "# cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $(nproc) cores; $(grep -m1 MHz /proc/cpuinfo | tr -s ' \t' ' ')"
    echo "# flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512[a-z_0-9]*|amx[a-z_0-9]*)$' | tr '\n' ' ')"
    echo "# uptime:$(uptime)"
} | tee "$log"
for M in $MODELS; do
    for r in $(seq "$ROUNDS"); do
        j=$("$LLAMA/llama-bench" -m "$M" -t 2 -p "$P" -n "$N" -r 1 -o json 2>/dev/null)
        echo "$j" | python3 -c '
import json, sys
for row in json.load(sys.stdin):
    test = ("pp%d" % row["n_prompt"]) if row["n_prompt"] else ("tg%d@0" % row["n_gen"])
    print("%s round %s llama.cpp %s %.2f" % (sys.argv[1], sys.argv[2], test, row["avg_ts"]))' "$M" "$r" | tee -a "$log"
        for d in $DEPTHS; do
            [ "$d" = 0 ] && continue
            "$LLAMA/llama-batched-bench" -m "$M" -t 2 -c $((d + N + 16)) -b 2048 -ub 512 -npp "$d" -ntg "$N" -npl 1 \
                --output-format jsonl 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        row = json.loads(line)
        print("%s round %s llama.cpp tg%s@%s %.2f" % (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], row["speed_tg"]))' \
                "$M" "$r" "$N" "$d" | tee -a "$log"
        done
        build/kvq bench -m "$M" --kv f16 -p "$P" -n "$N" --depth "$(echo $DEPTHS | tr ' ' ',')" -r 1 --json 2>/dev/null |
            python3 -c '
import json, sys
d = json.load(sys.stdin)
for row in d["results"]:
    print("%s round %s kvq %s %.2f" % (sys.argv[1], sys.argv[2], row["test"], row["tok_s"]))' "$M" "$r" | tee -a "$log"
    done
done
python3 - "$log" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(dict)  # (model, test) -> {(engine, round): tok/s}
for line in open(sys.argv[1]):
    if line.startswith("#"):
        print(line.rstrip())
        continue
    model, _, rnd, engine, test, tps = line.split()
    rows[(model, test)][(engine, int(rnd))] = float(tps)
print("| model | test | llama.cpp tok/s (median) | kvq tok/s (median) | kvq / llama.cpp, median of rounds [min-max] |")
print("|---|---|---|---|---|")
for (model, test), v in rows.items():
    rounds = sorted({r for _, r in v})
    ratios = [v[("kvq", r)] / v[("llama.cpp", r)] for r in rounds if ("kvq", r) in v and ("llama.cpp", r) in v]
    med = lambda e: statistics.median([x for (en, _), x in v.items() if en == e] or [float("nan")])
    name = model.rsplit("/", 1)[-1]
    spread = f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]" if ratios else "-"
    print(f"| {name} | {test} | {med('llama.cpp'):.2f} | {med('kvq'):.2f} | {spread} |")
EOF
