#!/usr/bin/env bash
# Quality of every KV configuration against the f32 cache on the real tiny
# models (docs/kv-quantization.md). Decode mode (--batch 1): each token
# attends to the cache as stored, which is what generation sees.
#   bench/kv_quality.sh [CHARS]   (default 300000 characters of TinyStories valid)
set -euo pipefail
cd "$(dirname "$0")/.."
KVQ=build/kvq
S=../shared
CHARS=${1:-300000}
TEXT=$S/corpora/tinystories-valid-head.txt
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
# calibration text for kvq tune: the last 90,000 characters, disjoint from the evaluated head
tail -c 90000 $TEXT > $TMP/calib.txt
for model in stories260K tinystories-656k; do
  if [ $model = stories260K ]; then M="-m $S/models/stories260K/stories260K.bin --tokenizer $S/models/stories260K/tok512.bin"
  else M="-m $S/models/tinystories-656k"; fi
  for b in 3 4; do
    $KVQ tune $M -f $TMP/calib.txt --budget $b -o "$OUT/kvtuner-$model-$b.txt" > "$OUT/kvtuner-$model-$b.log" 2>&1
  done
  $KVQ ppl $M -f $TEXT --chars $CHARS --ctx 512 --batch 1 --kv f32 --save-logits $TMP/base.logits --json > $TMP/f32.json
  base=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ppl"])' $TMP/f32.json)
  echo "### $model (f32 cache: ppl $base)"
  echo
  echo "| KV | true bits/value | bytes/token | ppl | Δppl % | mean KL | top-1 agree |"
  echo "|---|---|---|---|---|---|---|"
  for kv in f16 q8_0 q4_0 kivi:k8v8 kivi:k4v4 kivi:k4v2 kivi:k2v4 kivi:k2v2 \
            "kivi:layers=$OUT/kvtuner-$model-4.txt" "kivi:layers=$OUT/kvtuner-$model-3.txt"; do
    j=$($KVQ ppl $M -f $TEXT --chars $CHARS --ctx 512 --batch 1 --kv "$kv" --kl-base $TMP/base.logits --json)
    python3 - "$j" "$base" "$kv" "$OUT" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); base = float(sys.argv[2]); kv = sys.argv[3]; out = sys.argv[4]
name = kv
if "layers=" in kv:
    f = kv.split("layers=")[1]
    layers = [l.strip() for l in open(f) if l.strip() and not l.startswith("#")]
    bits = sum((int(x[1:].split("v")[0]) + int(x.split("v")[1])) / 2 for x in layers) / len(layers)
    name = f"KVTuner {bits:.2f} nominal bits ({' '.join(layers)})"
print(f"| {name} | {d['kv_bits_per_value']:.2f} | {d['kv_bytes_per_token']:.0f} | {d['ppl']:.4f} | "
      f"{100*(d['ppl']/base-1):+.2f} | {d['kl_mean']:.3g} | {d['top1_agree']:.4f} |")
PY
  done
  echo
done
