#!/usr/bin/env bash
# Plots the training loss curve (and passkey accuracy at the curriculum length) to PNG.
#   tools/train/plot_loss.sh LOSS.csv OUT.png
set -euo pipefail
csv=$1; png=$2
# A 7th column (phase) marks where a fine-tuning phase starts, as in models/kvq-recall/loss.csv.
mark=$(awk -F, 'NR>2 && NF>=7 && $7!=p {print $2/1e6; exit} NR>1 {p=$7}' "$csv")
gnuplot <<GP
set terminal png size 960,540 font ',11'
set output '$png'
set datafile separator ','
set title 'kvq-recall training (weighted loss; passkey exact match at the curriculum length)'
set xlabel 'training tokens (millions)'
set ylabel 'loss'
set y2label 'passkey accuracy'
set y2range [0:1.05]
set ytics nomirror
set y2tics
set key outside below horizontal
maxlen = 0
if ('$mark' ne '') set arrow from $mark, graph 0 to $mark, graph 1 nohead dt 2 lc rgb '#666666'; \\
  set label 'phase 2' at $mark, graph 0.5 offset 0.5,0
plot '$csv' every ::1 using (\$2/1e6):5 with lines lw 1 lc rgb '#9ecae1' title 'loss (per step)', \
     '' every ::1 using (\$2/1e6):5 smooth bezier lw 2 lc rgb '#08519c' title 'loss (smoothed)', \
     '' every ::1 using (\$2/1e6):(valid(6) ? \$6 : 1/0) axes x1y2 with points pt 7 ps 0.6 lc rgb '#d94801' title 'passkey acc', \
     '' every ::1 using (\$2/1e6):(maxlen = (\$4 > maxlen ? \$4 : maxlen), maxlen/4096.0) axes x1y2 with steps lc rgb '#31a354' title 'curriculum length / 4096'
GP
