#!/usr/bin/env python3
"""kvq serve, end to end on loopback: the API's replies and errors, greedy
output equal to `kvq run`, concurrent streams that never see each other's
tokens, admission (429), the API key, prefix reuse, sessions restored by a
second replica from a shared directory, and a graceful SIGTERM.

usage: test_server.py KVQ MODEL_GGUF MODEL_F32_DIR SLOW_MODEL_GGUF
Prints "ok"/"FAIL" lines; exits 1 on any failure."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

KVQ, MODEL, MODEL_F32, SLOW = (sys.argv + [""] * 5)[1:5]
FAILS = 0


def check(name, cond, detail=""):
    global FAILS
    print(("ok   " if cond else "FAIL ") + name + ("" if cond or not detail else "  [" + str(detail)[:400] + "]"))
    if not cond:
        FAILS += 1


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, model, *args):
        self.port = free_port()
        self.err = tempfile.TemporaryFile()
        self.p = subprocess.Popen([KVQ, "serve", "-m", model, "--port", str(self.port), "-t", "1", *args],
                                  stdout=subprocess.DEVNULL, stderr=self.err)
        for _ in range(600):
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("kvq serve did not start: " + self.log())

    def log(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def request(self, method, path, body=None, headers=None, timeout=300):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers=headers or {})
        r = c.getresponse()
        out = (r.status, dict(r.getheaders()), r.read())
        c.close()
        return out

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)

    def post(self, path, body, headers=None):
        try:
            st, h, b = self.request("POST", path, body, headers)
        except (OSError, http.client.HTTPException) as e:  # the server closed the connection (crashed?): a failed check, not a traceback
            return 0, {}, {"error": {"message": "connection: %s" % e}}
        try:
            return st, h, json.loads(b)
        except ValueError:
            return st, h, b

    def stream(self, path, body, headers=None):
        """The events of a streamed reply, and whether it ended with [DONE]."""
        body = dict(body, stream=True)
        try:
            st, h, raw = self.request("POST", path, body, headers)
        except (OSError, http.client.HTTPException):
            return 0, {}, [], False
        events, done = [], False
        for block in raw.decode().split("\n\n"):
            if not block.startswith("data: "):
                continue
            d = block[6:]
            if d == "[DONE]":
                done = True
            else:
                events.append(json.loads(d))
        return st, h, events, done

    def stop(self, sig=signal.SIGTERM, timeout=120):
        self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return None


def text_of(events, chat):
    out = ""
    for e in events:
        for c in e.get("choices", []):
            out += (c.get("delta", {}).get("content") or "") if chat else c.get("text", "")
    return out


def finish_of(events):
    f = [c["finish_reason"] for e in events for c in e.get("choices", []) if c.get("finish_reason")]
    return f[-1] if f else None


def kvq_run(model, prompt, n):
    r = subprocess.run([KVQ, "run", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "-t", "1"],
                       capture_output=True, text=True, timeout=300)
    return r.stdout


def metric(srv, name, headers=None):
    st, _, b = srv.get("/metrics", headers)
    for line in b.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


PROMPTS = ["Once upon a time", "The little dog ran to the park", "Tom had a big red ball", "Sara and her mom baked a cake"]


def main():
    global FAILS

    # ---- the API on the real model ----
    s = Server(MODEL, "--api-key", "sekrit", "--max-body", "64K")
    AUTH = {"Authorization": "Bearer sekrit"}
    st, _, b = s.get("/health")
    check("GET /health needs no key", st == 200 and json.loads(b)["status"] == "ok", b)
    st, _, b = s.get("/v1/models")
    check("a missing API key gets 401", st == 401 and json.loads(b)["error"]["code"] == "invalid_api_key", b)
    st, _, b = s.get("/v1/models", {"Authorization": "Bearer wrong"})
    check("a wrong API key gets 401", st == 401, b)
    st, _, b = s.get("/v1/models", AUTH)
    check("GET /v1/models lists the model", st == 200 and json.loads(b)["data"][0]["id"] == os.path.basename(MODEL), b)

    st, h, r = s.post("/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0}, AUTH)
    ref = kvq_run(MODEL, PROMPTS[0], 24)
    check("greedy completion = kvq run --temp 0", st == 200 and PROMPTS[0] + r["choices"][0]["text"] + "\n" == ref,
          (r, ref))
    check("usage and finish_reason", st == 200 and r["usage"]["completion_tokens"] == 24 and
          r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + 24 and r["choices"][0]["finish_reason"] == "length", r)
    check("X-Session-Id names a random session", len(h.get("X-Session-Id", "")) == 32, h)
    st, _, ev, done = s.stream("/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0}, AUTH)
    check("streamed completion = the same text, then [DONE]",
          st == 200 and done and text_of(ev, False) == r["choices"][0]["text"] and finish_of(ev) == "length", ev[-2:])
    st, _, ev, done = s.stream("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me a story"}],
                                                        "max_tokens": 16, "stream_options": {"include_usage": True}}, AUTH)
    check("streamed chat: role first, content, finish, usage",
          st == 200 and done and ev[0]["choices"][0]["delta"].get("role") == "assistant" and finish_of(ev) and
          ev[-1].get("usage", {}).get("completion_tokens", 0) >= 1, ev[-1:])
    st, _, r = s.post("/v1/chat/completions", {"messages": [{"role": "system", "content": "Be kind."},
                                                            {"role": "user", "content": "Hello"}], "max_tokens": 8,
                                               "seed": 7, "temperature": 0.9}, AUTH)
    st2, _, r2 = s.post("/v1/chat/completions", {"messages": [{"role": "system", "content": "Be kind."},
                                                              {"role": "user", "content": "Hello"}], "max_tokens": 8,
                                                 "seed": 7, "temperature": 0.9}, AUTH)
    check("chat completion with a seed repeats", st == 200 and r["choices"][0]["message"]["role"] == "assistant" and
          r["choices"][0]["message"]["content"] == r2["choices"][0]["message"]["content"], (r, r2))
    st, _, r = s.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "stop": [" Lily"]}, AUTH)
    full = kvq_run(MODEL, "Once upon a time", 40)[len("Once upon a time"):]
    check("stop: the text ends before the stop string", st == 200 and r["choices"][0]["finish_reason"] == "stop" and
          " Lily" not in r["choices"][0]["text"] and full.startswith(r["choices"][0]["text"] + " Lily"), r)
    st, _, r = s.post("/v1/completions", {"prompt": PROMPTS[1], "max_tokens": 8, "temperature": 0,
                                          "kv": "kivi:k2v2+rocket:budget=64"}, AUTH)
    check("a per-request KV spec", st == 200 and r["kvq"]["kv"] == "kivi:k2v2+rocket:budget=64", r)

    BAD = [
        ("/v1/completions", b"{not json", 400, ""),
        ("/v1/completions", b"[1,2]", 400, ""),
        ("/v1/completions", {"max_tokens": 4}, 400, "prompt"),
        ("/v1/completions", {"prompt": 5}, 400, "prompt"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 10**12}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": "9"}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "temperature": -1}, 400, "temperature"),
        ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
        ("/v1/completions", {"prompt": "x", "n": 2}, 400, "n"),
        ("/v1/completions", {"prompt": "x", "stream": "yes"}, 400, "stream"),
        ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ("/v1/completions", {"prompt": "x", "kv": "nonsense"}, 400, "kv"),
        ("/v1/completions", {"prompt": "x", "kv": "aqua:pred=/etc/passwd"}, 400, "kv"),
        ("/v1/completions", {"prompt": [1, -4]}, 400, "prompt"),
        ("/v1/completions", {"prompt": [1, 99999999]}, 400, "prompt"),
        ("/v1/completions", {"prompt": "word " * 2000}, 400, "prompt"),
        ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 3}]}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages"),
        ("/v1/completions", b"{\"prompt\": \"" + b"a" * 70000 + b"\"}", 413, ""),
    ]
    for path, body, want, param in BAD:
        st, _, r = s.post(path, body, AUTH)
        ok = st == want and isinstance(r, dict) and "message" in r.get("error", {})
        if ok and param:
            ok = r["error"].get("param") == param
        check("%s %s -> %d" % (path, (body if isinstance(body, bytes) else json.dumps(body))[:60], want), ok, (st, r))
    st, _, r = s.post("/v1/nothing", {}, AUTH)
    check("an unknown route gets 404", st == 404, r)
    st, _, r = s.request("GET", "/v1/completions", None, AUTH)
    check("GET on a POST route gets 405", st == 405, r)
    for junk in [b"GARBAGE\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{",
                 b"\x00\xff" * 100]:
        c = socket.create_connection(("127.0.0.1", s.port))
        c.sendall(junk)
        c.settimeout(5)
        try:
            c.recv(4096)
        except OSError:
            pass
        c.close()
    check("malformed HTTP leaves the server up", s.get("/health")[0] == 200)
    check("/metrics in the Prometheus text format", metric(s, "kvq_requests_total", AUTH) is not None and
          metric(s, "kvq_kv_bytes_limit", AUTH) > 0 and metric(s, "kvq_sessions_fit", AUTH) is not None,
          s.get("/metrics", AUTH)[2][:300])

    # ---- prefix reuse: a conversation's second turn reuses the first's cache ----
    conv = [{"role": "user", "content": "Tell me about a cat."}]
    st, h, r = s.post("/v1/chat/completions", {"messages": conv, "max_tokens": 12, "temperature": 0}, AUTH)
    sid = h.get("X-Session-Id")
    conv2 = conv + [{"role": "assistant", "content": r["choices"][0]["message"]["content"]},
                    {"role": "user", "content": "What did the cat do next?"}]
    st, _, r2 = s.post("/v1/chat/completions", {"messages": conv2, "max_tokens": 12, "temperature": 0},
                       dict(AUTH, **{"X-Session-Id": sid}))
    st, _, r3 = s.post("/v1/chat/completions", {"messages": conv2, "max_tokens": 12, "temperature": 0}, AUTH)
    check("turn 2 reuses turn 1's cache", r2["kvq"]["prompt_tokens_reused"] > 0 and
          r2["usage"]["prompt_tokens_details"]["cached_tokens"] == r2["kvq"]["prompt_tokens_reused"], r2)
    check("a reused prefix gives the text a fresh session gives",
          r2["choices"][0]["message"]["content"] == r3["choices"][0]["message"]["content"] and
          r3["kvq"]["prompt_tokens_reused"] == 0, (r2, r3))
    st, h5, r5 = s.post("/v1/chat/completions", {"messages": conv2, "max_tokens": 4, "temperature": 0, "kv": "kivi:k4v2"},
                        dict(AUTH, **{"X-Session-Id": sid}))
    check("the same session with another KV spec starts afresh under its id",
          st == 200 and h5.get("X-Session-Id") == sid and r5["kvq"]["prompt_tokens_reused"] == 0 and
          r5["kvq"]["kv"] == "kivi:k4v2", (st, h5, r5))
    mine = os.urandom(16).hex()
    st, h4, r4 = s.post("/v1/completions", {"prompt": "x", "max_tokens": 2}, dict(AUTH, **{"X-Session-Id": mine}))
    check("a client-proposed session id names the new session", st == 200 and h4.get("X-Session-Id") == mine, h4)
    st, h4, r4 = s.post("/v1/completions", {"prompt": "x", "max_tokens": 2}, dict(AUTH, **{"X-Session-Id": "../../etc"}))
    check("a malformed session id is ignored (a new random id)", st == 200 and len(h4.get("X-Session-Id", "")) == 32, h4)
    rc = s.stop()
    check("SIGTERM: exits 0", rc == 0, s.log()[-500:])

    # ---- concurrent streams never see each other's tokens (f32 model: batched = alone to rounding) ----
    s = Server(MODEL_F32, "--parallel", "4")
    alone = [s.post("/v1/completions", {"prompt": p, "max_tokens": 32, "temperature": 0})[2]["choices"][0]["text"]
             for p in PROMPTS]
    got = [None] * 4


    def worker(i):
        st, _, ev, done = s.stream("/v1/completions", {"prompt": PROMPTS[i], "max_tokens": 32, "temperature": 0})
        got[i] = text_of(ev, False) if st == 200 and done else None


    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    check("4 concurrent streams = each alone", got == alone, list(zip(got, alone)))
    rows, passes = metric(s, "kvq_batch_rows_total"), metric(s, "kvq_batch_passes_total")
    check("streams shared passes (rows > passes)", rows > passes, (rows, passes))
    check("kvq serve exits 0 on SIGTERM (no leak under LSan)", s.stop() == 0, s.log()[-400:])

    # ---- admission: sequences and KV memory are bounded; the rest get 429, not a crash ----
    s = Server(SLOW, "--parallel", "2", "--queue", "0", "--ctx", "256")
    res = [None] * 4


    def slow(i):
        res[i] = s.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 100})


    ts = [threading.Thread(target=slow, args=(i,)) for i in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    codes = sorted(r[0] for r in res)
    fork = [None, None]
    same = os.urandom(16).hex()

    def on_same(i):
        fork[i] = s.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 60}, {"X-Session-Id": same})

    ts2 = [threading.Thread(target=on_same, args=(i,)) for i in range(2)]
    [t.start() for t in ts2]
    [t.join() for t in ts2]
    ids = sorted(f[1].get("X-Session-Id") for f in fork)
    check("two requests at once on one session: both served, the second forks under a new id",
          all(f[0] == 200 for f in fork) and ids[0] != ids[1] and same in ids, [(f[0], f[1].get("X-Session-Id")) for f in fork])
    check("2 sequences, no queue: 2 served, 2 refused with 429 + Retry-After",
          codes == [200, 200, 429, 429] and all(r[1].get("Retry-After") == "1" and r[2]["error"]["code"] == "server_busy"
                                                for r in res if r[0] == 429), codes)
    check("kvq serve exits 0 on SIGTERM (no leak under LSan)", s.stop() == 0, s.log()[-400:])
    # one context of 256 tokens with f16 on this model, and a budget for a little over one
    kv = subprocess.run([KVQ, "info", SLOW, "--kv", "f16", "--ctx", "256", "--json"], capture_output=True, text=True)
    need = json.loads(kv.stdout)["kv"][0]["bytes_alloc_max"]
    s = Server(SLOW, "--parallel", "4", "--ctx", "256", "--kv-memory", str(int(need * 1.5)), "--idle-sessions", "0")
    ts = [threading.Thread(target=slow, args=(i,)) for i in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    codes = sorted(r[0] for r in res[:3])
    check("KV memory for one sequence: the others get 429 (kv_memory_full)",
          codes[0] == 200 and codes[-1] == 429 and all(r[2]["error"]["code"] == "kv_memory_full" for r in res[:3] if r[0] == 429),
          [(r[0], r[2] if r[0] != 200 else "") for r in res[:3]])
    check("the server is up after refusals", s.get("/health")[0] == 200)

    # ---- SIGTERM mid-stream: the stream ends properly ----
    out = {}


    def long_stream():
        out["r"] = s.stream("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 150})


    t = threading.Thread(target=long_stream)
    t.start()
    time.sleep(1.0)
    rc = s.stop()
    t.join()
    st, _, ev, done = out["r"]
    check("SIGTERM mid-stream: the stream finishes with [DONE], exit 0", st == 200 and done and finish_of(ev) and rc == 0,
          (st, done, rc, s.log()[-300:]))

    # ---- sessions on a shared directory: a second replica resumes the conversation ----
    with tempfile.TemporaryDirectory() as d:
        a = Server(MODEL, "--session-dir", d)
        st, h, r = a.post("/v1/chat/completions", {"messages": conv, "max_tokens": 12, "temperature": 0})
        sid = h.get("X-Session-Id")
        check("kvq serve exits 0 on SIGTERM (no leak under LSan)", a.stop() == 0, a.log()[-400:])
        check("the session file is in the shared directory", os.path.exists(os.path.join(d, sid + ".kvqs")), os.listdir(d))
        b = Server(MODEL, "--session-dir", d, "--kv", "kivi:k8v8")
        conv2 = conv + [{"role": "assistant", "content": r["choices"][0]["message"]["content"]},
                        {"role": "user", "content": "What did the cat do next?"}]
        st, h, r2 = b.post("/v1/chat/completions", {"messages": conv2, "max_tokens": 12, "temperature": 0},
                           {"X-Session-Id": sid})
        check("replica B restores the session (converted to its own KV spec) and reuses it",
              st == 200 and r2["kvq"]["prompt_tokens_reused"] > 0 and h.get("X-Session-Id") == sid and
              metric(b, "kvq_sessions_restored_total") == 1, (r2, b.log()[-300:]))
        with open(os.path.join(d, "f" * 32 + ".kvqs"), "wb") as f:
            f.write(b"KVQS" + os.urandom(200))
        st, h, r = b.post("/v1/completions", {"prompt": "x", "max_tokens": 2}, {"X-Session-Id": "f" * 32})
        check("a corrupt session file is refused and the conversation starts afresh",
          st == 200 and r["kvq"]["prompt_tokens_reused"] == 0 and metric(b, "kvq_sessions_restored_total") == 1, r)
        check("kvq serve exits 0 on SIGTERM (no leak under LSan)", b.stop() == 0, b.log()[-400:])

    print("server: %s" % ("all passed" if FAILS == 0 else "%d FAILED" % FAILS))
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
