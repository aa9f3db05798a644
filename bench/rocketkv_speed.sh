#!/usr/bin/env bash
# RocketKV speed at depth on synthetic Llama-3.2-1B (Q4_0 weights, random: speed only), and the
# same-run comparison with llama.cpp's KV caches at the same depth:
#   bench/rocketkv_speed.sh [LLAMA_BIN_DIR]
# kvq: decode tok/s, attention ms/token and its selection part, KV held after the prompt, at
# 8K / 32K / 128K cached tokens (random K/V, then one token that ends the prompt so eviction runs).
# llama.cpp (when LLAMA_BIN_DIR is given): llama-batched-bench prefills DEPTH real tokens, then
# decodes; its f16, q8_0 and q4_0 caches (flash attention for the quantized ones) at 8K, and the
# best of them at 32K. Run on a quiet machine (uptime), nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA=${1:-}
M=${M:-/work/synth/llama3.2-1b-q4_0.gguf}
[ -f "$M" ] || build/kvq synth --preset llama3.2-1b --type q4_0 --ctx 131072 -o "$M"
OUT=bench/results/rocketkv
mkdir -p $OUT
echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) ; $(nproc) cores; uptime: $(uptime)" | tee $OUT/speed.log
KVS=(--kv f16 --kv f16+rocket:budget=256 --kv f16+rocket:budget=1024 --kv f16+hsa:budget=1024 --kv kivi:k4v2 --kv kivi:k4v2+rocket:budget=1024)
for d in 8192 32768; do
    build/kvq bench -m "$M" "${KVS[@]}" -p 0 -n 16 --depth $d -r 3 --json > $OUT/speed-kvq-$d.json
    tail -c 300 $OUT/speed-kvq-$d.json | tee -a $OUT/speed.log
done
# 128K: 4 GiB of f16 cache per token read densely; fewer runs
build/kvq bench -m "$M" --kv f16 --kv f16+rocket:budget=256 --kv f16+rocket:budget=1024 --kv kivi:k4v2+rocket:budget=1024 \
    -p 0 -n 4 --depth 131072 -r 2 --json > $OUT/speed-kvq-131072.json
if [ -n "$LLAMA" ]; then
    for d in 8192; do
        for cfg in "f16:" "f16:-fa" "q8_0:-fa -ctk q8_0 -ctv q8_0" "q4_0:-fa -ctk q4_0 -ctv q4_0"; do
            name=${cfg%%:*}${cfg#*:}; name=${name// /}
            "$LLAMA/llama-batched-bench" -m "$M" -c $((d + 64)) -b 2048 -ub 512 -npp $d -ntg 16 -npl 1 -t 2 ${cfg#*:} \
                > "$OUT/speed-llamacpp-$d-${name}.txt" 2>&1 || true
            grep -E "^\|" "$OUT/speed-llamacpp-$d-${name}.txt" | tail -1 | tee -a $OUT/speed.log
        done
    done
    d=32768
    cfg=${BEST_LLAMA:-"-fa -ctk q8_0 -ctv q8_0"}
    "$LLAMA/llama-batched-bench" -m "$M" -c $((d + 64)) -b 2048 -ub 512 -npp $d -ntg 16 -npl 1 -t 2 $cfg \
        > "$OUT/speed-llamacpp-$d.txt" 2>&1 || true
    grep -E "^\|" "$OUT/speed-llamacpp-$d.txt" | tail -1 | tee -a $OUT/speed.log
    # kvq again right after, in the same minute, for the ratio
    build/kvq bench -m "$M" --kv f16 --kv f16+rocket:budget=1024 --kv kivi:k4v2+rocket:budget=1024 -p 0 -n 16 \
        --depth $d -r 3 --json > $OUT/speed-kvq-$d-after-llamacpp.json
fi
