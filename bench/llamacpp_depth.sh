#!/usr/bin/env bash
# Decode speed at depth, kvq against llama.cpp, alternated in the same run:
#   bench/llamacpp_depth.sh LLAMA_BIN_DIR [DEPTH ...]        (default depths: 8192 32768)
# llama.cpp reaches a deep cache only by prefilling it (over an hour for 32K tokens of Llama-3.2-1B
# on 2 cores), while `kvq bench --depth` fills its cache without computing it. To compare decode at
# the same depth, llama.cpp prefills a short prompt once per KV configuration and saves its session;
# bench/llamacpp_session.py tiles that session's KV cells to DEPTH cells; llama-cli loads it and
# decodes 16 tokens (its "eval time"). Each round runs every llama.cpp configuration, then kvq's
# specs, so the ratios come from the same minutes. Medians of ROUNDS rounds. Quiet machine only.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA=${1:?usage: bench/llamacpp_depth.sh LLAMA_BIN_DIR [DEPTH ...]}
shift
DEPTHS=${*:-8192 32768}
M=${M:-/work/synth/llama3.2-1b-q4_0.gguf}
ROUNDS=${ROUNDS:-3}
N=${N:-16}
OUT=${OUT:-bench/results/llamacpp-depth}
TMP=${TMP:-/tmp/kvq-llamacpp-depth}
KVS=${KVS:-"--kv f16 --kv f16+rocket:budget=256 --kv f16+rocket:budget=1024 --kv kivi:k4v2+rocket:budget=1024"}
CFGS=("f16|" "fa-f16|-fa" "fa-q8_0|-fa -ctk q8_0 -ctv q8_0" "fa-q4_0|-fa -ctk q4_0 -ctv q4_0")
mkdir -p "$OUT" "$TMP"
log=$OUT/run.log
echo "# $(date -u '+%F %T') $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $(nproc) cores; uptime: $(uptime)" | tee -a "$log"
# a short prompt (about 250 tokens), prefilled once per configuration
python3 -c "print('the' + ' the' * 40, end='')" > "$TMP/prompt.txt"
for cfg in "${CFGS[@]}"; do
    IFS='|' read -r name flags <<< "$cfg"
    [ -s "$TMP/small-$name.bin" ] || "$LLAMA/llama-cli" -m "$M" -f "$TMP/prompt.txt" -n 1 --prompt-cache "$TMP/small-$name.bin" \
        -c 4096 -t 2 -no-cnv --temp 0 $flags > /dev/null 2> "$TMP/small-$name.err"
done
for d in $DEPTHS; do
    for cfg in "${CFGS[@]}"; do
        IFS='|' read -r name flags <<< "$cfg"
        python3 bench/llamacpp_session.py "$TMP/small-$name.bin" "$d" "$TMP/deep-$name.bin"
    done
    for r in $(seq "$ROUNDS"); do
        for cfg in "${CFGS[@]}"; do
            IFS='|' read -r name flags <<< "$cfg"
            "$LLAMA/llama-cli" -m "$M" -n "$N" --prompt-cache "$TMP/deep-$name.bin" --prompt-cache-ro -c $((d + 512)) -t 2 \
                -no-cnv --temp 0 --ignore-eos $flags > /dev/null 2> "$TMP/run.err"
            grep -q "loaded a session with prompt size of $d tokens" "$TMP/run.err" || { cat "$TMP/run.err" >&2; exit 1; }
            tps=$(grep -E "^llama_perf_context_print: +eval time" "$TMP/run.err" | sed -E 's/.*, +([0-9.]+) tokens per second.*/\1/')
            echo "depth $d round $r llama.cpp $name $tps tok/s" | tee -a "$log"
        done
        # shellcheck disable=SC2086
        build/kvq bench -m "$M" $KVS -p 0 -n "$N" --depth "$d" -r 1 --json > "$OUT/kvq-$d-r$r.json"
        python3 - "$OUT/kvq-$d-r$r.json" "$d" "$r" <<'EOF' | tee -a "$log"
import json, sys
d = json.load(open(sys.argv[1]))
for row in d["results"]:
    print(f"depth {sys.argv[2]} round {sys.argv[3]} kvq {row['kv']} {row['tok_s']:.2f} tok/s (attention {row['attn_ms']:.1f} ms, read bandwidth {d['dram_gbs']} GB/s)")
EOF
    done
    rm -f "$TMP"/deep-*.bin
done
