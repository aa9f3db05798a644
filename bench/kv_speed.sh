#!/usr/bin/env bash
# Decode speed of quantized KV caches against f16 at long contexts (docs/kv-quantization.md).
# Synthetic llama3.2-1b (random weights: speed and memory only), Q4_0 weights so that the KV cache
# is a large share of the bytes read per token.
#   bench/kv_speed.sh [MODEL_DIR]      (default /tmp/kvq-synth)
source "$(dirname "$0")/synth_env.sh" "$@"
f=$(synth_model llama3.2-1b q4_0)
$KVQ bench -m "$f" --kv f16 --kv kivi:k4v2 --kv kivi:k2v2 --kv q8_0 --kv q4_0 -p 0 -n 16 --depth 4096,32768 \
    -r ${REPS:-5} --json > $OUT/kv-speed-llama3.2-1b-q4_0.json
python3 - $OUT/kv-speed-llama3.2-1b-q4_0.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = [r for r in d["results"] if r.get("depth") is not None]
f16 = {r["depth"]: r["tok_s"] for r in rows if r["kv"] == "f16"}
print("| KV | depth | KV bytes/token | KV MiB | decode tok/s (min-max) | vs f16 | GB/s total | KV GB/s |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['kv']} | {r['depth']} | {r['kv_bytes_per_token']:.0f} | {r['kv_bytes_per_token']*r['depth']/2**20:.0f} | "
          f"{r['tok_s']:.1f} ({r['min']:.1f}-{r['max']:.1f}) | {r['tok_s']/f16[r['depth']]:.2f}x | "
          f"{r['gbs']:.1f} | {r['kv_gbs']:.1f} |")
print(f"\nweights {d['weight_bytes']/2**20:.0f} MiB; reading the model file at the start of this run: {d.get('file_read_gbs', 0):.1f} GB/s")
PY
