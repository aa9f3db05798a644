#!/usr/bin/env python3
"""Markdown tables from bench/results/quantspec (docs/quantspec.md)."""
import json, re, sys
from pathlib import Path

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/quantspec")


def accept():
    rows = {}
    for line in (OUT / "accept.txt").read_text().splitlines():
        m = re.match(r"(\S+) (\S+): .*decode (\d+) tokens in [\d.]+ s \(([\d.]+) tok/s\)", line)
        if not m:
            continue
        name, g, tps = m.group(1), m.group(2), float(m.group(4))
        a = re.search(r"acceptance ([\d.]+)%.*?([\d.]+) tokens per round", line)
        rows.setdefault(name, {})[g] = (tps, a.group(1) if a else None, a.group(2) if a else None)
    gs = ["2", "4", "6", "8", "adaptive"]
    print("| model, prompt | plain f16 tok/s | plain hier tok/s | " + " | ".join(f"gamma {g}: accept / tokens per round / tok/s" for g in gs) + " |")
    print("|---" * (3 + len(gs)) + "|")
    for name, r in rows.items():
        cells = [f"{r[g][1]}% / {r[g][2]} / {r[g][0]:.0f}" if g in r else "-" for g in gs]
        print(f"| {name} | {r['plain-f16'][0]:.0f} | {r['plain-hier'][0]:.0f} | " + " | ".join(cells) + " |")


def quality():
    print("| model (ctx) | f16 ppl | " + " | ".join(f"{k}: ppl / KL / top-1" for k in ["kivi k8v8", "hier (8-bit view)", "kivi k4v4", "hier draft (4-bit view)"]) + " | bits/value: k8v8, hier, k4v4 |")
    print("|---" * 7 + "|")
    for name, ctx in [("stories260K", 256), ("656k", 512), ("recall", 2048)]:
        f = OUT / f"ppl-{name}-f16.json"
        if not f.exists():
            continue
        base = json.loads(f.read_text())
        cells, bits = [], []
        for tag in ["kivi_k8v8", "hier", "kivi_k4v4", "hier_draft"]:
            p = OUT / f"ppl-{name}-{tag}.json"
            if not p.exists():
                cells.append("-")
                continue
            j = json.loads(p.read_text())
            cells.append(f"{j['ppl']:.4f} / {j.get('kl_mean', 0):.5f} / {100 * j.get('top1_agree', 0):.1f}%")
            if tag != "hier_draft":
                bits.append(f"{j.get('kv_bits_per_value', float('nan')):.2f}")
        print(f"| {name} ({ctx}) | {base['ppl']:.4f} | " + " | ".join(cells) + f" | {', '.join(bits)} |")


def speed():
    print("| weights | depth | plain f16 step ms | plain hier step ms | draft step ms | verify pass (7 tokens) ms | draft / plain hier | verify / plain hier |")
    print("|---" * 8 + "|")
    for w, pre in [("Q4_0", ""), ("Q8_0", "q8_0-")]:
        for d in (0, 4096, 32768):
            p = OUT / f"speed-{pre}{d}.json"
            if not p.exists():
                continue
            r = json.loads(p.read_text())["results"]
            f16 = next(x for x in r if x["kv"] == "f16" and "tok_s" in x)
            qs = next(x for x in r if "draft_ms" in x)
            print(f"| {w} | {d} | {1000 / f16['tok_s']:.0f} | {qs['plain_ms']:.0f} | {qs['draft_ms']:.0f} | {qs['verify_ms']:.0f} | "
                  f"{qs['draft_ms'] / qs['plain_ms']:.2f} | {qs['verify_ms'] / qs['plain_ms']:.2f} |")


{"accept": accept, "quality": quality, "speed": speed}[sys.argv[2] if len(sys.argv) > 2 else "accept"]()
