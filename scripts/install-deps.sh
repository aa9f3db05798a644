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
  libopenblas-dev   # sgemm for batched prefill
  liblapacke-dev    # LAPACK's C interface: Cholesky solves in calibration (AQUA-KV predictors)
  gnuplot-nox       # kvq niah heatmaps
  python3           # test scripts read the CLI's JSON output
)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
echo "kvq: dependencies installed"
