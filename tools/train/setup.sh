#!/usr/bin/env bash
# Installs what tools/train/train.py needs on Debian 12: Debian's CPU torch and numpy, plus
# OpenBLAS, without which torch falls back to the reference BLAS and trains about 12x slower
# (../shared/guide/training-notes.md). Run train.py with /usr/bin/python3, which sees these packages.
set -euo pipefail
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update
$SUDO apt-get install -y python3-torch python3-numpy libopenblas0-pthread gnuplot-nox
update-alternatives --display libblas.so.3-x86_64-linux-gnu | grep -q openblas \
    || echo "warning: libblas.so.3 does not point at OpenBLAS; training will be slow" >&2
