#!/usr/bin/env bash
# Speed of kvq on synthetic models (random weights: speed and memory only).
# Writes bench/results/speed-*.json and prints a markdown table.
#   bench/speed.sh [MODEL_DIR]      (default /tmp/kvq-synth; files are 0.1-2.5 GB each)
source "$(dirname "$0")/synth_env.sh" "$@"
REPS=${REPS:-3}
for preset in stories110m llama3.2-1b; do
  for type in f16 q8_0 q4_0 q4_K; do
    f=$(synth_model $preset $type)
    depths=0,4096,32768
    $KVQ bench -m "$f" --kv f16 -p 512 -n 16 --depth $depths -r $REPS --json > "$OUT/speed-$preset-$type.json"
  done
done
python3 - "$OUT" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
print("| model | weights | prefill 512 tok/s | decode @0 tok/s (GB/s, % of ref) | ref GB/s @0 | decode @4096 | decode @32768 (KV GB/s) |")
print("|---|---|---|---|---|---|---|")
for preset in ["stories110m", "llama3.2-1b"]:
    for t in ["f16", "q8_0", "q4_0", "q4_K"]:
        p = f"{out}/speed-{preset}-{t}.json"
        if not os.path.exists(p): continue
        d = json.load(open(p))
        r = {x["test"]: x for x in d["results"]}
        pp = r.get("pp512", {}).get("tok_s", 0)
        def dec(depth):
            x = next((v for v in d["results"] if v.get("depth") == depth), None)
            if not x: return "-"
            return f"{x['tok_s']:.1f} ({x['gbs']:.1f} GB/s, {100*x['bw_fraction']:.0f}%)"
        x32 = next((v for v in d["results"] if v.get("depth") == 32768), None)
        last = dec(32768) + (f"; KV {x32['kv_gbs']:.1f} GB/s" if x32 else "")
        x0 = next((v for v in d["results"] if v.get("depth") == 0), {})
        print(f"| {preset} | {t} ({d['weight_bytes']/2**20:.0f} MiB) | {pp:.0f} | {dec(0)} | {x0.get('ref_gbs', 0):.1f} | {dec(4096)} | {last} |")
    d0 = json.load(open(glob.glob(f"{out}/speed-{preset}-*.json")[0]))
print(f"\nfresh-buffer probe in the last run: {d0['dram_gbs']:.1f} GB/s (1 GiB), {d0['l3_gbs']:.1f} GB/s (16 MiB)")
PY
