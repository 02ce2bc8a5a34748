"""Diagnostics latency for an edit to a 200-line spec (target < 50 ms).

Two figures: the analysis alone (cnnspec.editor.analysis.diagnostics, in process) and the round trip
through `cnnspec lsp` as a subprocess: a didChange sent over stdio until its
publishDiagnostics arrives. Edits alternate a fix and a typo, so both a clean check and an
error report are timed.

    python bench/lsp_speed.py [--edits 40]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

from machine import cpu_line  # bench/machine.py: beside this script

from cnnspec.editor.analysis import diagnostics


def spec_200() -> str:
    lines = [
        "# a 200-line spec: residual stages written out line by line",
        "input 32x32x3",
        "classes 10",
        "train optimizer=sgd lr=.01 batch=32 epochs=10 seed=1",
        "let unit(f, s=1) = conv{f}(s={s}) l2(.0001) bn relu",
        "let block(f) = add(unit({f}) conv{f} l2(.0001) bn) relu",
        "conv32 bn relu  # 32x32x32",
    ]
    while len(lines) < 198:
        n = len(lines)
        if n % 3 == 0:
            lines.append(f"block(32)  # line {n + 1}")
        elif n % 3 == 1:
            lines.append("conv32 relu bn drop.1")
        else:
            lines.append("add(conv32 bn relu conv32 bn) relu")
    lines += ["pool2 conv64 relu gap", "| dense128 relu drop.5"]
    return "\n".join(lines) + "\n"


def _frame(message: dict) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", **message}).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read(out) -> dict:
    length = 0
    while True:
        line = out.readline().strip()
        if not line:
            break
        key, _, value = line.decode().partition(":")
        if key.lower() == "content-length":
            length = int(value)
    return json.loads(out.read(length))


def server_round_trips(text: str, edits: int) -> list[float]:
    proc = subprocess.Popen([sys.executable, "-m", "cnnspec", "lsp"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    send = lambda m: (proc.stdin.write(_frame(m)), proc.stdin.flush())  # noqa: E731

    def wait(pred):
        while True:
            m = _read(proc.stdout)
            if pred(m):
                return m

    uri = "file:///bench/spec200.cnn"
    send({"id": 1, "method": "initialize",
          "params": {"processId": None, "rootUri": None, "capabilities": {}}})
    wait(lambda m: m.get("id") == 1)
    send({"method": "initialized", "params": {}})
    send({"method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": uri, "languageId": "cnnspec", "version": 1, "text": text}}})
    wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")
    times = []
    line = 100
    for i in range(edits):
        word = "cnov32" if i % 2 == 0 else "conv32"
        start = time.perf_counter()
        send({"method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri, "version": i + 2},
            "contentChanges": [{"range": {"start": {"line": line, "character": 0},
                                          "end": {"line": line, "character": 6}},
                                "text": word}]}})
        msg = wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")
        times.append(time.perf_counter() - start)
        assert bool(msg["params"]["diagnostics"]) == (i % 2 == 0), msg
    send({"id": 2, "method": "shutdown", "params": None})
    wait(lambda m: m.get("id") == 2)
    send({"method": "exit", "params": None})
    proc.wait(timeout=10)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edits", type=int, default=40, help="edits timed each way (default 40)")
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    text = spec_200()
    assert len(text.splitlines()) == 200 and diagnostics(text) == [], diagnostics(text)
    src = text.split("\n")
    assert src[100].startswith("conv32"), src[100]

    local = []
    for i in range(args.edits):
        edited = list(src)
        if i % 2 == 0:
            edited[100] = "cnov32" + src[100][6:]
        start = time.perf_counter()
        diagnostics("\n".join(edited))
        local.append(time.perf_counter() - start)
    trips = server_round_trips(text, args.edits)

    for label, ts in (("analysis.diagnostics", local), ("lsp didChange->publish", trips)):
        ms = sorted(t * 1000 for t in ts)
        print(f"{label}: median {statistics.median(ms):.1f} ms, "
              f"p90 {ms[math.ceil(len(ms) * .9) - 1]:.1f} ms, max {ms[-1]:.1f} ms "
              f"({len(ms)} edits to a 200-line spec; target < 50 ms)")


if __name__ == "__main__":
    main()
