#!/usr/bin/env bash
# Installs dependencies, builds kvq and generates text with the default
# model: the first model found under ../shared/models, else the committed
# models/kvq-recall.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
make -j"$(nproc)"
MODELS=${KVQ_MODELS:-../shared/models}
model=""; tok=""
if [ -d "$MODELS" ]; then
  for d in $(ls -d "$MODELS"/*/ 2>/dev/null | sort); do
    if [ -f "$d/config.json" ]; then model="$d"; break; fi
    g=$(ls "$d"/*.gguf 2>/dev/null | head -n1 || true)
    if [ -n "$g" ]; then model="$g"; break; fi
    t=$(ls "$d"/tok*.bin 2>/dev/null | head -n1 || true)
    b=$(ls "$d"/*.bin 2>/dev/null | grep -v "/tok[^/]*\.bin$" | head -n1 || true)
    if [ -n "$b" ] && [ -n "$t" ]; then model="$b"; tok="$t"; break; fi
  done
fi
if [ -z "$model" ] && [ -f models/kvq-recall/model.safetensors ]; then
  model=models/kvq-recall   # the model kvq trains itself, committed in this repository
fi
if [ -z "$model" ]; then
  echo "kvq: no model found under $MODELS." >&2
  echo "kvq: pass one yourself: build/kvq run -m MODEL.gguf (or a llama2.c .bin with --tokenizer FILE, or a HF folder)" >&2
  exit 1
fi
echo "kvq: running $model" >&2
exec build/kvq run -m "$model" ${tok:+--tokenizer "$tok"} -p "Once upon a time" -n 100 "$@"
