#!/usr/bin/env bash
# Installs kvq's build and test dependencies from Debian 12 packages.
set -euo pipefail
PKGS=(
  build-essential   # gcc (C11, OpenMP), make
  clang             # libFuzzer targets
  libclang-rt-14-dev # libFuzzer / sanitizer runtimes for clang
  libcmocka-dev     # unit-test framework
  libcjson-dev      # JSON: HF config.json / tokenizer.json / safetensors headers
  libyaml-dev       # KVTuner per-layer presets (YAML)
  libutf8proc-dev   # tokenizers: Unicode categories and NFC/NFKC normalization
  libopenblas-dev   # sgemm for batched prefill
  liblapacke-dev    # LAPACK's C interface: Cholesky solves in calibration (AQUA-KV predictors)
  gnuplot-nox       # kvq niah heatmaps
  python3           # test scripts read the CLI's JSON output
  libmicrohttpd-dev # kvq serve: the HTTP server library
  nginx             # kvq serve's scale-out test: a proxy in front of replicas (docs/serving.md)
  curl              # server tests: waiting for /health
)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
# the official openai client, for the server test: node and npm from Debian
# unless a node with npm is already there (another packaging of node would
# conflict with Debian's npm)
if ! command -v npm >/dev/null; then
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
npm ci --prefix "$(dirname "$0")/../tests/server" --no-audit --no-fund --loglevel=error >/dev/null
echo "kvq: dependencies installed"
