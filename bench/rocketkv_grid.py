#!/usr/bin/env python3
"""Writes a gnuplot script: a grid of passkey heatmaps (rows: policies, columns: budgets; each
cell: context length x needle depth) from bench/rocketkv.sh's JSON. Usage: rocketkv_grid.py DIR TURNS"""
import json, os, sys

d, turns = sys.argv[1], sys.argv[2]
pols = ["window", "snapkv", "hsa", "rocket", "rocket-mt"]
budgets = [64, 128, 256, 512, 1024]
full = json.load(open(f"{d}/niah-t{turns}-full.json"))
out = f"docs/img/rocketkv-niah-turns{turns}.png"
print(f"set terminal png size {260 * len(budgets) + 120},{200 * len(pols) + 80} font ',9'")
print(f"set output '{out}'")
what = "one prompt" if turns == "1" else "haystack, then the question as a second prompt"
print(f"set multiplot layout {len(pols)},{len(budgets)} title 'kvq-recall passkey, {what}: exact match % (full cache {100 * full['mean']:.0f}%)'")
print("set cbrange [0:100]; unset colorbox; set palette defined (0 '#b2182b', 50 '#f7f7f7', 100 '#2166ac')")
for p in pols:
    for b in budgets:
        j = json.load(open(f"{d}/niah-t{turns}-{p}-{b}.json"))
        L, D, A = j["lengths"], j["depths"], j["accuracy"]
        dat = f"/tmp/grid-{turns}-{p}-{b}.dat"
        with open(dat, "w") as f:
            for i in range(len(L)):
                for k in range(len(D)):
                    f.write(f"{k} {i} {100 * A[i][k]:.0f}\n")
        print(f"set title '{p} @ {b}: {100 * j['mean']:.0f}%'")
        print(f"set xrange [-0.5:{len(D) - 0.5}]; set yrange [-0.5:{len(L) - 0.5}]")
        print("set xtics (" + ", ".join(f"'{x:g}' {k}" for k, x in enumerate(D)) + ")")
        print("set ytics (" + ", ".join(f"'{x}' {i}" for i, x in enumerate(L)) + ")")
        print(f"plot '{dat}' using 1:2:3 with image notitle, '' using 1:2:(sprintf('%d',$3)) with labels notitle")
print("unset multiplot")
