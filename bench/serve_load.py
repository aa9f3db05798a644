#!/usr/bin/env python3
"""A bounded load test of a running `kvq serve` on loopback: for each level
of concurrency, that many clients each stream REQS completions one after
another; reports aggregate generated tok/s, time to first token and p50/p99
inter-token latency (the gaps between streamed events), as JSON lines.

usage: serve_load.py --port P [--streams 1,4,16] [--reqs 2] [--max-tokens 64]
                     [--prompt-tokens 32] [--kv SPEC]

The client is Python threads reading server-sent events; its CPU time is
reported beside the figures (it shares the host with the server)."""
import argparse
import http.client
import json
import os
import statistics
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--streams", default="1,4,16")
ap.add_argument("--reqs", type=int, default=2)
ap.add_argument("--max-tokens", type=int, default=64)
ap.add_argument("--prompt-words", type=int, default=24)
ap.add_argument("--kv", default=None)
ap.add_argument("--label", default="")
a = ap.parse_args()

WORDS = "once upon a time there was a little girl who lived in a house near the woods with her mother and a dog".split()


def one(i, r, out):
    prompt = " ".join(WORDS[(i * 7 + r * 3 + k) % len(WORDS)] for k in range(a.prompt_words))
    body = {"prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0.8, "seed": i * 1000 + r, "stream": True,
            "stream_options": {"include_usage": True}}
    if a.kv:
        body["kv"] = a.kv
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=3600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = c.getresponse()
    times, toks, ptok, buf = [], 0, 0, b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
                continue
            d = json.loads(ev[6:])
            if d.get("usage"):
                toks = d["usage"]["completion_tokens"]
                ptok = d["usage"]["prompt_tokens"]
            if any(ch.get("text") for ch in d.get("choices", [])):
                times.append(time.perf_counter())
    c.close()
    out.append({"status": resp.status, "t0": t0, "times": times, "tokens": toks, "prompt_tokens": ptok,
                "end": time.perf_counter()})


def level(n):
    res = []

    def client(i):
        for r in range(a.reqs):
            one(i, r, res)

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    th = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    [t.start() for t in th]
    [t.join() for t in th]
    wall = time.perf_counter() - t0
    ok = [x for x in res if x["status"] == 200 and x["times"]]
    ttft = [x["times"][0] - x["t0"] for x in ok]
    itl = [b - a_ for x in ok for a_, b in zip(x["times"], x["times"][1:])]
    tokens = sum(x["tokens"] for x in ok)
    ptoks = [x["prompt_tokens"] for x in ok if x.get("prompt_tokens")]
    q = lambda v, p: sorted(v)[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
    return {"label": a.label, "streams": n, "requests": len(res), "ok": len(ok), "tokens": tokens,
            "prompt_tokens_mean": round(sum(ptoks) / len(ptoks), 1) if ptoks else None,
            "wall_s": round(wall, 2), "tok_s": round(tokens / wall, 2),
            "ttft_p50_ms": round(q(ttft, 0.5) * 1e3, 1), "ttft_p99_ms": round(q(ttft, 0.99) * 1e3, 1),
            "itl_p50_ms": round(q(itl, 0.5) * 1e3, 1), "itl_p99_ms": round(q(itl, 0.99) * 1e3, 1),
            "client_cpu_s": round(time.process_time() - cpu0, 2)}


for n in [int(x) for x in a.streams.split(",")]:
    print(json.dumps(level(n)), flush=True)
