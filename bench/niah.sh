#!/usr/bin/env bash
# Long-context retrieval of the committed kvq-recall model (docs/long-context.md).
#   bench/niah.sh            writes bench/results/niah-*.json and docs/img/niah-*.png
set -euo pipefail
cd "$(dirname "$0")/.."
KVQ=build/kvq
R=models/kvq-recall
OUT=bench/results
IMG=docs/img
mkdir -p "$OUT" "$IMG"
D=0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1
# up to the training length, full f32 cache
$KVQ niah -m $R --kv f32 --lengths 512,1024,2048,4096 --depths $D -n 10 --seed 1 --json --plot $IMG/niah-passkey-f32.png > $OUT/niah-passkey-f32.json
# beyond it: 2x and 4x the training length
$KVQ niah -m $R --kv f32 --lengths 8192,16384 --depths 0,0.25,0.5,0.75,1 -n 4 --seed 1 --json > $OUT/niah-passkey-f32-extrapolation.json
# the window baseline: sinks + the last 512 tokens
$KVQ niah -m $R --kv f32+window:sink=4,win=512 --lengths 1024,2048,4096 --depths $D -n 10 --seed 1 --json \
    --plot $IMG/niah-passkey-window512.png > $OUT/niah-passkey-window512.json
# the other tasks at the training length
for task in needle multikey kv; do
  $KVQ niah -m $R --kv f32 --task $task --lengths 1024,4096 --depths 0,0.25,0.5,0.75,1 -n 10 --seed 1 --json > $OUT/niah-$task-f32.json
done
# quantized caches on the same grid
for kv in kivi:k4v4 kivi:k4v2 kivi:k2v2; do
  $KVQ niah -m $R --kv $kv --lengths 1024,4096 --depths 0,0.25,0.5,0.75,1 -n 10 --seed 1 --json > "$OUT/niah-passkey-${kv//:/_}.json"
done
# natural filler instead of the classic repetitive one
$KVQ niah -m $R --kv f32 --haystack ../shared/corpora/tinystories-valid-head.txt --lengths 1024,4096 \
    --depths 0,0.25,0.5,0.75,1 -n 10 --seed 1 --json > $OUT/niah-passkey-f32-tinystories.json
