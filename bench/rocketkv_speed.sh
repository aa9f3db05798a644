#!/usr/bin/env bash
# RocketKV speed at depth on synthetic Llama-3.2-1B (Q4_0 weights, random: speed only):
#   bench/rocketkv_speed.sh
# kvq: decode tok/s, attention ms/token and its selection part, KV held after the prompt, at
# 8K / 32K / 128K cached tokens (random K/V, then one token that ends the prompt so eviction runs).
# The same-run comparison with llama.cpp at 8K and 32K is bench/llamacpp_depth.sh (llama.cpp's
# own prefill of 32K tokens takes over an hour here, so it decodes from a tiled session instead).
# Run on a quiet machine (uptime), nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
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
