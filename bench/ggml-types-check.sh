#!/usr/bin/env bash
# kvq's weight types against ggml's own quantizers, dequantizers and dot products:
#   bench/ggml-types-check.sh LLAMA_CPP_DIR      (a llama.cpp checkout built with cmake into build/)
# Compiles bench/ggml_types_check.c against that build's libggml and kvq's build/libkvq.a.
# Never run by CI (CI never builds llama.cpp); DEVELOPERS.md says how to build it.
set -euo pipefail
cd "$(dirname "$0")/.."
L=${1:?usage: bench/ggml-types-check.sh LLAMA_CPP_DIR}
make -s build/libkvq.a
out=build/ggml-types-check
cc -O2 -std=c11 -march=native -Isrc -I"$L/ggml/include" bench/ggml_types_check.c build/libkvq.a \
    -L"$L/build/bin" -Wl,-rpath,"$L/build/bin" -lggml-cpu -lggml-base -llapacke -lopenblas -lm -fopenmp -lpthread -o "$out"
"$out"
