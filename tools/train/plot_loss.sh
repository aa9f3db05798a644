#!/usr/bin/env bash
# Plots the training loss curve (and passkey accuracy at the curriculum length) to PNG.
#   tools/train/plot_loss.sh LOSS.csv OUT.png
set -euo pipefail
csv=$1; png=$2
gnuplot <<GP
set terminal png size 960,480 font ',11'
set output '$png'
set datafile separator ','
set title 'kvq-recall training (weighted loss; passkey exact match at the curriculum length)'
set xlabel 'training tokens (millions)'
set ylabel 'loss'
set y2label 'passkey accuracy'
set y2range [0:1.05]
set ytics nomirror
set y2tics
set key top right
plot '$csv' every ::1 using (\$2/1e6):5 with lines lw 1 lc rgb '#9ecae1' title 'loss (per step)', \
     '' every ::1 using (\$2/1e6):5 smooth bezier lw 2 lc rgb '#08519c' title 'loss (smoothed)', \
     '' every ::1 using (\$2/1e6):(valid(6) ? \$6 : 1/0) axes x1y2 with points pt 7 ps 0.6 lc rgb '#d94801' title 'passkey acc', \
     '' every ::1 using (\$2/1e6):(\$4/4096.0) axes x1y2 with steps lc rgb '#31a354' title 'sequence length / 4096'
GP
