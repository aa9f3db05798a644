#!/usr/bin/env python3
"""Markdown table from bench/llamacpp_depth.sh's log: per depth and engine/KV spec, the median decode
tok/s over the rounds, and the median over rounds of the ratio to the best llama.cpp configuration
of the same round (a same-run ratio).

usage: llamacpp_depth_table.py [run.log]   (default bench/results/llamacpp-depth/run.log; the last run of each depth)
"""
import re
import statistics
import sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "bench/results/llamacpp-depth/run.log"
row = re.compile(r"^depth (\d+) round (\d+) (llama\.cpp|kvq) (\S+) ([0-9.]+) tok/s")
runs = defaultdict(lambda: defaultdict(dict))  # depth -> round -> (engine, spec) -> tok/s
order = defaultdict(list)
fresh = set()  # the depths the current run has measured
for line in open(path, encoding="utf-8"):
    if line.startswith("# "):  # a new run: it replaces what an earlier run measured at the same depths
        fresh = set()
        continue
    m = row.match(line)
    if not m:
        continue
    d, r, eng, spec, tps = int(m[1]), int(m[2]), m[3], m[4], float(m[5])
    if d not in fresh:
        runs[d].clear()
        order[d].clear()
        fresh.add(d)
    key = (eng, spec)
    runs[d][r][key] = tps
    if key not in order[d]:
        order[d].append(key)

print("| depth | engine | KV | decode tok/s, median [min-max] | vs best llama.cpp (same round), median |")
print("|---|---|---|---|---|")
for d in sorted(runs):
    rounds = runs[d]
    best = {r: max(v for (e, _), v in rs.items() if e == "llama.cpp") for r, rs in rounds.items()}
    best_key = max(((e, s) for (e, s) in order[d] if e == "llama.cpp"),
                   key=lambda k: statistics.median(rs[k] for rs in rounds.values() if k in rs))
    for key in order[d]:
        vals = [rs[key] for rs in rounds.values() if key in rs]
        ratios = [rs[key] / best[r] for r, rs in rounds.items() if key in rs]
        label = {"f16": "f16 (no flash attention)", "fa-f16": "f16, flash attention",
                 "fa-q8_0": "q8_0, flash attention", "fa-q4_0": "q4_0, flash attention"}.get(key[1]) \
            if key[0] == "llama.cpp" else "`" + key[1] + "`"
        mark = " (best)" if key == best_key else ""
        print(f"| {d // 1024}K | {key[0]} | {label}{mark} | {statistics.median(vals):.2f} [{min(vals):.2f}-{max(vals):.2f}] "
              f"| {statistics.median(ratios):.2f}x |")
