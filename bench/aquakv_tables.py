#!/usr/bin/env python3
"""Markdown tables for docs/aquakv.md from bench/results/aquakv:
   python3 bench/aquakv_tables.py [DIR] calib|quality|niah|cold|hot"""
import glob, json, re, subprocess, sys
from pathlib import Path

D = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/aquakv")
what = sys.argv[2] if len(sys.argv) > 2 else "calib"


def load(p):
    try:
        return json.loads(Path(p).read_text())
    except Exception:
        return None


def stored(j, ctx):
    """(bytes/token, bits/value) the codec stores: for mode=cached, those of the same spec in stream
    mode (cached adds f32 reconstructions, and a kvq before 2026-11-30 did not count them), from
    `kvq info` at the evaluation context."""
    if "mode=cached" not in j["kv"]:
        return j["kv_bytes_per_token"], j["kv_bits_per_value"]
    spec = j["kv"].replace(",mode=cached", "")
    out = subprocess.run(["build/kvq", "info", j["model"], "--kv", spec, "--ctx", str(ctx)],
                         capture_output=True, text=True).stdout
    m = re.search(r"([0-9.]+) bytes/token, ([0-9.]+) bits/value", out)
    return float(m[1]), float(m[2])


def calib():
    for name, label in [("260k", "stories260K"), ("656k", "TinyStories-656K"), ("recall", "kvq-recall")]:
        rows = {}
        for b in ("2", "3", "4", "2u"):
            f = D / f"calib-{name}-{b}.txt"
            if not f.exists():
                continue
            for line in f.read_text().splitlines():
                m = re.match(r"\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)", line)
                if m:
                    rows.setdefault(int(m.group(1)), {})[b] = m.groups()[1:]
        if not rows:
            continue
        print(f"\n**{label}**: held-out tokens. EV = 1 - prediction error / variance (centred); relMSE = prediction "
              f"error / signal energy. The predictors' inputs are the layer below's reconstructions at the residual "
              f"bits the file is fitted for (EV columns: 2-bit HIGGS), so the bits act only through those inputs.\n")
        print("| layer | EV keys from k(l-1) | EV values from k(l) | EV values from [k(l), v(l-1)] | relMSE k / v, fitted for 2 bits | 3 bits | 4 bits | 2-bit uniform |")
        print("|---|---|---|---|---|---|---|---|")
        for l in sorted(rows):
            r = rows[l]
            two = r.get("2")
            ev = f"{two[2]} | {two[3]} | {two[4]}" if two else "- | - | -"
            rel = [f"{r[b][0]} / {r[b][1]}" if b in r else "-" for b in ("2", "3", "4", "2u")]
            print(f"| {l} | {ev if l else '(4-bit, no predictor) | | '} | " + " | ".join(rel) + " |")


def quality():
    for name, label in [("656k", "TinyStories-656K, TinyStories, ctx 512"), ("recall", "kvq-recall, held-out KJV, ctx 4096")]:
        base = load(D / f"ppl-{name}-f16.json")
        if not base:
            continue
        print(f"\n**{label}**: first half of each window a prompt, second half decoded and scored "
              f"({base['tokens']} tokens scored); KL against f16 run the same way (f16: ppl {base['ppl']:.3f}).\n")
        print("| KV spec | bits/value (all included) | bytes/token | ppl | ppl vs f16 | KL | top-1 agreement |")
        print("|---|---|---|---|---|---|---|")
        rows = []
        for f in sorted(glob.glob(str(D / f"ppl-{name}-*.json"))):
            j = load(f)
            if not j or f.endswith("-f16.json"):
                continue
            j["stored"] = stored(j, j["ctx"])
            rows.append(j)
        rows.sort(key=lambda j: j["stored"][1])
        for j in rows:
            spec = re.sub(r"pred=bench/results/aquakv/pred-", "pred=", j["kv"])
            print(f"| `{spec}` | {j['stored'][1]:.2f} | {j['stored'][0]:.0f} | {j['ppl']:.3f} | "
                  f"{100 * (j['ppl'] / base['ppl'] - 1):+.1f}% | {j.get('kl_mean', 0):.4f} | {100 * j.get('top1_agree', 0):.1f}% |")


def niah():
    print("| KV spec | passkey, mean over 2048/4096 tokens x 5 depths x 2 samples | KV bytes held per prompt token |")
    print("|---|---|---|")
    for f in sorted(glob.glob(str(D / "niah-*.json"))):
        j = load(f)
        if j:
            spec = re.sub(r"pred=bench/results/aquakv/pred-", "pred=", j["kv"])
            held = f"{j.get('kv_bytes_held_per_token', 0):.0f}"
            if "mode=cached" in j["kv"] and j.get("kv_bytes_held_per_token", 0) > 1000:
                held += f" (with the f32 reconstructions; the codec stores {stored(j, 4096)[0]:.0f} at 4096 tokens)"
            print(f"| `{spec}` | {100 * j['mean']:.0f}% | {held} |")


def cold():
    t = (D / "cold.txt").read_text() if (D / "cold.txt").exists() else ""
    print("| kvq-recall prompt | session format | file size | prefill (what a restore replaces) | save | restore into f16 | restore into kivi:k4v2 |")
    print("|---|---|---|---|---|---|---|")
    for chars in ("2600", "10400"):
        for fmt in ("f16", "aqua"):
            line = next((l for l in t.splitlines() if re.match(rf"recall {chars} chars save {fmt}", l)), "")
            pre = re.search(r"prefill (\d+) tokens in ([\d.]+) s", line)
            sv = re.search(r"saved \d+ tokens .*? in ([\d.]+) s", line)
            size = re.search(r"size (\d+)", line)
            save = (pre.group(1), pre.group(2), sv.group(1), size.group(1)) if pre and sv and size else None
            r16 = re.search(rf"recall {chars} chars restore {fmt}[^ ]* into f16: .*?restored (\d+) tokens .*? in ([\d.]+) s", t)
            rk = re.search(rf"recall {chars} chars restore {fmt}[^ ]* into kivi:k4v2: .*?restored (\d+) tokens .*? in ([\d.]+) s", t)
            if not save:
                continue
            print(f"| {save[0]} tokens | {fmt} | {int(save[3]) / 1024:.1f} KiB | {save[1]} s | {save[2]} s | "
                  f"{r16.group(2) + ' s' if r16 else '-'} | {rk.group(2) + ' s' if rk else '-'} |")
    a, f = load(D / "cold-synth-32768-aqua.json"), load(D / "cold-synth-32768-f16.json")
    if a and f:
        pp = next((x for x in a["results"] if x["test"].startswith("pp")), None)
        for j, fmt in ((f, "f16"), (a, "aqua 2-bit")):
            s = next(x for x in j["results"] if x["test"].startswith("session@"))
            pre = f">= {32768 / pp['tok_s']:.0f} s (32768 / the pp512 rate {pp['tok_s']:.1f} tok/s; attention only adds)" if pp else "-"
            print(f"| synthetic Llama-3.2-1B, 32768 tokens | {fmt} | {s['file_bytes'] / 2**20:.1f} MiB | {pre} | {s['save_s']:.2f} s | {s['load_s']:.2f} s | - |")


def hot():
    print("| depth | KV spec | decode tok/s [min-max] | attention ms/token | KV B/token |")
    print("|---|---|---|---|---|")
    for f in sorted(glob.glob(str(D / "hot-*.json")), key=lambda p: int(re.search(r"hot-(\d+)", p).group(1))):
        j = load(f)
        for r in j["results"]:
            if "tok_s" in r:
                spec = re.sub(r"pred=bench/results/aquakv/pred-", "pred=", r["kv"])
                print(f"| {r['depth']} | `{spec}` | {r['tok_s']:.1f} [{r['min']:.1f}-{r['max']:.1f}] | {r['attn_ms']:.2f} | {r['kv_bytes_per_token']:.0f} |")


{"calib": calib, "quality": quality, "niah": niah, "cold": cold, "hot": hot}[what]()
