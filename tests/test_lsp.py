"""`cnnspec lsp` end to end: the server in a subprocess, JSON-RPC over its real stdio pipes."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("pygls")

TIMEOUT = 30.0
URI = "file:///tmp/bad.cnn"
BAD = "input 32x32x3\nconv8 cnov8 pool2 |\n"
GOOD = "input 32x32x3\nconv8 relu pool2 |\n"


class Client:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cnnspec", "lsp"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.messages: queue.Queue = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            headers = {}
            while True:
                line = out.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            body = out.read(int(headers["content-length"]))
            self.messages.put(json.loads(body))

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict) -> object:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        msg = self.wait(lambda m: m.get("id") == self.next_id and "method" not in m)
        assert "error" not in msg, msg
        return msg["result"]

    def wait(self, match) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no answer from the server in time")
            msg = self.messages.get(timeout=left)
            if match(msg):
                return msg

    def diagnostics(self) -> list[dict]:
        msg = self.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")
        assert msg["params"]["uri"] == URI
        return msg["params"]["diagnostics"]


@pytest.fixture()
def client():
    c = Client()
    try:
        result = c.request("initialize", {"processId": None, "rootUri": None,
                                          "capabilities": {}})
        caps = result["capabilities"]
        assert caps["hoverProvider"] and caps["definitionProvider"]
        assert caps["documentFormattingProvider"] and "completionProvider" in caps
        c.notify("initialized", {})
        yield c
        assert c.request("shutdown", None) is None
        c.notify("exit", None)
        assert c.proc.wait(timeout=TIMEOUT) == 0
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


def _pos(line: int, character: int) -> dict:
    return {"textDocument": {"uri": URI}, "position": {"line": line, "character": character}}


def test_session(client):
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": URI, "languageId": "cnnspec", "version": 1, "text": BAD}})
    (d,) = client.diagnostics()
    assert d["range"] == {"start": {"line": 1, "character": 6},
                          "end": {"line": 1, "character": 11}}
    assert d["severity"] == 1
    assert "unknown layer word `cnov8`" in d["message"]
    assert "did you mean `conv8`?" in d["message"]

    client.notify("textDocument/didChange", {
        "textDocument": {"uri": URI, "version": 2},
        "contentChanges": [{"range": {"start": {"line": 1, "character": 6},
                                      "end": {"line": 1, "character": 11}},
                            "text": "relu"}]})
    assert client.diagnostics() == []

    hover = client.request("textDocument/hover", _pos(1, 2))
    value = hover["contents"]["value"]
    params = 3 * 3 * 3 * 8 + 8
    assert "Conv2D" in value and "32×32×3 → 32×32×8" in value
    assert f"params {params:,}" in value

    completion = client.request("textDocument/completion", _pos(2, 0))
    labels = {item["label"] for item in completion["items"]}
    assert {"conv32", "bn", "relu", "pool2"} <= labels

    hints = client.request("textDocument/inlayHint", {
        "textDocument": {"uri": URI},
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 3, "character": 0}}})
    assert [(h["position"], h["label"]) for h in hints] == [
        ({"line": 1, "character": 18}, f"→ {16 * 16 * 8}")]  # pool2 halves, `|` flattens

    symbols = client.request("textDocument/documentSymbol", {"textDocument": {"uri": URI}})
    assert [s["name"] for s in symbols] == ["input 32x32x3"]


def test_formatting_and_blocks(client):
    text = "let u = conv8 relu\nu   u  drop0.25 |\n"
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": URI, "languageId": "cnnspec", "version": 1, "text": text}})
    assert client.diagnostics() == []
    edits = client.request("textDocument/formatting", {
        "textDocument": {"uri": URI}, "options": {"tabSize": 4, "insertSpaces": True}})
    assert edits[0]["newText"] == "let u = conv8 relu\nu u drop.25 |\n"
    loc = client.request("textDocument/definition", _pos(1, 4))
    assert loc["range"]["start"] == {"line": 0, "character": 4}
    refs = client.request("textDocument/references", {
        **_pos(1, 0), "context": {"includeDeclaration": True}})
    assert len(refs) == 3


def test_bad_input_never_kills_the_server(client):
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": URI, "languageId": "cnnspec", "version": 1, "text": "conv8("}})
    assert client.diagnostics()
    for text in ["(((", "let", "train lr=", "conv8 {", "\x00\ud7ff", "let u = u\nu |", ""]:
        client.notify("textDocument/didChange", {
            "textDocument": {"uri": URI, "version": 2},
            "contentChanges": [{"text": text}]})
        client.diagnostics()
        client.request("textDocument/hover", _pos(0, 3))
        client.request("textDocument/completion", _pos(0, 3))
    # a request for a document never opened gets an answer, not a dead server
    assert client.request("textDocument/hover", {
        "textDocument": {"uri": "file:///nowhere.cnn"},
        "position": {"line": 40, "character": 2}}) is None


def test_documents_not_open_are_never_read_from_disk(client, tmp_path):
    """pygls reads a URI it is asked about from disk when the editor has not opened it: a
    request on file:///dev/zero or a FIFO hung the server. Only open documents are answered."""
    fifo = tmp_path / "fifo.cnn"
    os.mkfifo(fifo)
    for uri in ("file:///dev/zero", fifo.as_uri(), tmp_path.as_uri()):
        for method in ("textDocument/hover", "textDocument/completion",
                       "textDocument/definition", "textDocument/documentSymbol",
                       "textDocument/formatting"):
            params = {**_pos(0, 0), "textDocument": {"uri": uri}}
            if method == "textDocument/formatting":
                params = {"textDocument": {"uri": uri},
                          "options": {"tabSize": 4, "insertSpaces": True}}
            elif method == "textDocument/documentSymbol":
                params = {"textDocument": {"uri": uri}}
            assert client.request(method, params) in (None, [])


def _offset_to_pos(text: str, offset: int) -> dict:
    """An offset into text as an LSP position, counting the line's UTF-16 code units."""
    before = text[:offset]
    line_start = before[before.rfind("\n") + 1:]
    return {"line": before.count("\n"),
            "character": len(line_start.encode("utf-16-le")) // 2}


def test_fuzz_random_edits_never_kill_the_server(client):
    import random
    from pathlib import Path

    rng = random.Random(15)
    text = (Path(__file__).resolve().parent.parent / "specs" / "exp7.cnn").read_text()
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": URI, "languageId": "cnnspec", "version": 1, "text": text}})
    client.diagnostics()
    alphabet = "conv64 relu bn pool2 drop.25 ()x2|{,}?=#\nlet u add( train lr=.5 é🙂\t"
    for version in range(2, 122):
        a = rng.randrange(len(text) + 1)
        b = min(len(text), a + rng.choice([0, 0, 1, 3, 10]))
        new = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, 5])))
        client.notify("textDocument/didChange", {
            "textDocument": {"uri": URI, "version": version},
            "contentChanges": [{"range": {"start": _offset_to_pos(text, a),
                                          "end": _offset_to_pos(text, b)},
                                "text": new}]})
        text = text[:a] + new + text[b:]
        last = client.diagnostics()
        if version % 10 == 0:
            pos = _offset_to_pos(text, rng.randrange(len(text) + 1))
            client.request("textDocument/hover", {"textDocument": {"uri": URI},
                                                  "position": pos})
            client.request("textDocument/completion", {"textDocument": {"uri": URI},
                                                       "position": pos})
            client.request("textDocument/formatting", {
                "textDocument": {"uri": URI}, "options": {"tabSize": 4, "insertSpaces": True}})
    assert client.proc.poll() is None
    # the server's copy of the document followed every edit (UTF-16 positions included)
    from cnnspec.editor.analysis import diagnostics

    assert [d["message"] for d in last] == [p.message for p in diagnostics(text)]


def test_lsp_help_imports_neither_pygls_nor_tensorflow():
    code = ("import contextlib, io, sys\n"
            "from cnnspec.cli.main import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            "    main(['lsp', '--help'])\n"
            "heavy = [m for m in sys.modules\n"
            "         if m.split('.')[0] in ('pygls', 'lsprotocol', 'tensorflow', 'keras')]\n"
            "print('language server' in out.getvalue(), heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.stdout.split() == ["True", "[]"], result.stderr[-2000:]


def test_a_stream_the_server_cannot_read_ends_it_in_one_line():
    """A Content-Length no buffer can hold made pygls's reader raise: a traceback, exit 1."""
    done = subprocess.run([sys.executable, "-m", "cnnspec", "lsp"],
                          input=b"Content-Length: 99999999999999999999\r\n\r\n{}",
                          capture_output=True, timeout=TIMEOUT)
    err = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert "cannot read the client's messages any more (OverflowError" in err


def _frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_messages_pygls_cannot_read_get_one_log_line_each_and_the_server_reads_on():
    """pygls logged two full tracebacks for every unreadable message (not JSON, not an object,
    params of the wrong shape); the editor's log now gets one line per message, naming what was
    wrong, and the messages after it are still answered."""
    def msg(obj: dict) -> bytes:
        return _frame(json.dumps({"jsonrpc": "2.0", **obj}).encode())

    stream = b"".join([
        msg({"id": 1, "method": "initialize",
             "params": {"processId": None, "rootUri": None, "capabilities": {}}}),
        msg({"method": "initialized", "params": {}}),
        _frame(b"{not json"),
        msg({"id": 2, "method": "textDocument/hover", "params": {"bad": 1}}),
        _frame(b'"a string"'),
        _frame(b"[1, 2]"),
        msg({"id": 3, "method": "shutdown"}),
        msg({"method": "exit"}),
    ])
    done = subprocess.run([sys.executable, "-m", "cnnspec", "lsp"], input=stream,
                          capture_output=True, timeout=TIMEOUT)
    err = done.stderr.decode()
    assert done.returncode == 0 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.endswith("the message is ignored") for line in lines)
    assert "JSONDecodeError: Expecting property name" in lines[0]
    assert "required field missing @ $.params.position" in lines[1]
    # a JSON value that is no object is not logged: it is answered (id null, Invalid Request)
    unknown = [m["error"]["code"] for m in _messages(done.stdout) if m.get("id", 0) is None]
    assert unknown == [-32700, -32600, -32600]
    assert b'{"id": 3, "jsonrpc": "2.0", "result": null}' in done.stdout  # shutdown answered
    # the request it could not read is answered with the protocol's error, not left waiting
    (answer,) = [m for m in _messages(done.stdout) if m.get("id") == 2]
    assert answer["error"]["code"] == -32602
    assert "required field missing @ $.params.position" in answer["error"]["message"]


def test_cnnspec_own_failures_keep_their_traceback_in_the_log():
    """Only pygls's records about unreadable messages are shortened: a failing cnnspec handler,
    or pygls failing to send an answer, is a bug, and its traceback is what a report needs."""
    import logging

    from cnnspec.editor.lsp import _OneLineBadMessages

    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    ours = logging.LogRecord("cnnspec.editor.lsp", logging.ERROR, __file__, 1,
                             "hover failed", (), exc_info)
    theirs = logging.LogRecord("pygls.server", logging.ERROR, __file__, 1,
                               "Unable to handle message", (), exc_info)
    sending = logging.LogRecord("pygls.protocol.json_rpc", logging.ERROR, __file__, 1,
                                "Error sending data", (), exc_info)
    keep = _OneLineBadMessages()
    assert keep.filter(ours) and ours.exc_info is exc_info
    assert keep.filter(sending) and sending.exc_info is exc_info  # not about client input
    assert keep.filter(theirs) and theirs.exc_info is None
    assert theirs.getMessage() == ("cnnspec lsp: Unable to handle message (ValueError: boom); "
                                   "the message is ignored")


def _messages(stdout: bytes) -> list[dict]:
    """The framed JSON messages of a server's whole output."""
    out, rest = [], stdout
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        size = int(headers["Content-Length"])
        out.append(json.loads(rest[:size]))
        rest = rest[size:]
    return out


def _run(*messages: dict, ending: tuple[str, ...] = ("shutdown", "exit")) -> tuple[
        list[dict], str, int]:
    """One whole session as a stream: initialize, the messages, then `ending`; returns the
    server's messages, its log and its exit code."""
    start = [{"id": 100, "method": "initialize",
              "params": {"processId": None, "rootUri": None, "capabilities": {}}},
             {"method": "initialized", "params": {}}]
    end = [{"id": 101, "method": "shutdown"} if m == "shutdown" else {"method": "exit"}
           for m in ending]
    stream = b"".join(_frame(json.dumps({"jsonrpc": "2.0", **m}).encode())
                      for m in start + list(messages) + end)
    done = subprocess.run([sys.executable, "-m", "cnnspec", "lsp"], input=stream,
                          capture_output=True, timeout=TIMEOUT)
    return _messages(done.stdout), done.stderr.decode(), done.returncode


def _open(uri: str, text: str) -> dict:
    return {"method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": uri, "languageId": "cnnspec", "version": 1, "text": text}}}


def _change(uri: str, version: int, *edits: tuple[int, int, int, int, str]) -> dict:
    return {"method": "textDocument/didChange", "params": {
        "textDocument": {"uri": uri, "version": version},
        "contentChanges": [{"range": {"start": {"line": a, "character": b},
                                      "end": {"line": c, "character": d}}, "text": t}
                           for a, b, c, d, t in edits]}}


def _published(messages: list[dict], uri: str) -> list[dict]:
    return [m["params"] for m in messages if m.get("method") == "textDocument/publishDiagnostics"
            and m["params"]["uri"] == uri]


def _range(a: int, b: int, c: int, d: int) -> dict:
    return {"start": {"line": a, "character": b}, "end": {"line": c, "character": d}}


@pytest.mark.parametrize("uri", ["file:///home/me/my%20specs/exp.cnn",
                                 "file:///c%3A/Users/me/exp.cnn",
                                 "file:///home/me/r%C3%A9sum%C3%A9/exp.cnn"])
def test_a_uri_with_escapes_is_answered_as_the_client_wrote_it(uri):
    """pygls keeps documents under the unescaped URI: every Windows path (`c%3A`) and any path
    with a space was never checked or answered."""
    messages, err, code = _run(
        _open(uri, "conv8 cnov8 |\n"),
        {"id": 1, "method": "textDocument/hover",
         "params": {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 1}}},
        _change(uri, 2, (0, 6, 0, 11, "relu")))
    assert code == 0 and "Traceback" not in err, err
    first, second = _published(messages, uri)
    assert [d["range"] for d in first["diagnostics"]] == [_range(0, 6, 0, 11)]
    assert second == {"uri": uri, "version": 2, "diagnostics": []}
    (hover,) = [m for m in messages if m.get("id") == 1]
    assert "Conv2D" in hover["result"]["contents"]["value"]


def test_characters_python_splits_lines_at_do_not_move_the_document():
    """`\u2028` (and `\v`, `\f`, `\x1c`, `\x85`, ...) ends a line for str.splitlines, not
    for the protocol: pygls's copy put the next edits in the wrong place, and formatting then
    answered with that text for the whole file. The edits here land where the client put
    them; the fix of `cnov8` clears the problem, and formatting gives the client's text."""
    uri = "file:///tmp/sep.cnn"
    text = "conv8 relu # a\u2028b\u000bc\nconv8 cnov8 |\n"
    messages, err, code = _run(
        _open(uri, text),
        _change(uri, 2, (1, 6, 1, 11, "relu"), (1, 0, 1, 0, "bn ")),
        {"id": 1, "method": "textDocument/formatting",
         "params": {"textDocument": {"uri": uri},
                    "options": {"tabSize": 4, "insertSpaces": True}}})
    assert code == 0 and "Traceback" not in err, err
    opened, changed = _published(messages, uri)
    assert [d["range"] for d in opened["diagnostics"]] == [_range(1, 6, 1, 11)]
    assert changed["diagnostics"] == []
    (formatted,) = [m["result"] for m in messages if m.get("id") == 1]
    assert [e["newText"] for e in formatted] == ["conv8 relu  # a\u2028b\u000bc\nbn conv8 relu |\n"]
    assert formatted[0]["range"] == _range(0, 0, 2, 0)


def test_a_position_past_the_line_is_its_end_and_a_lone_cr_ends_a_line():
    """The protocol clamps a character past the line's end to that end (pygls stopped one
    short: ` dense4` landed before the `|`); a lone `\r` ends a line for the client, so a
    problem after it is on the client's next line."""
    uri = "file:///tmp/eol.cnn"
    messages, err, _ = _run(
        _open(uri, "conv8 relu |"),
        _change(uri, 2, (0, 50, 0, 50, " dense4")),
        _open("file:///tmp/cr.cnn", "# a\rconv8 relu\nconv8 cnov8 |\n"))
    assert "Traceback" not in err, err
    assert [p["diagnostics"] for p in _published(messages, uri)] == [[], []]
    (cr,) = _published(messages, "file:///tmp/cr.cnn")
    assert [d["range"] for d in cr["diagnostics"]] == [_range(2, 6, 2, 11)]


def test_every_request_gets_its_answer_as_the_protocol_says():
    """Params it cannot read: -32602; before `initialize`: -32002; after `shutdown`: -32600.
    pygls answered none of them (the client waits forever) or answered null."""
    hover = {"textDocument": {"uri": "file:///x.cnn"}, "position": {"line": -1, "character": 0}}
    stream = b"".join(_frame(json.dumps({"jsonrpc": "2.0", **m}).encode()) for m in [
        {"id": 1, "method": "textDocument/hover",
         "params": {**hover, "position": {"line": 0, "character": 0}}},
        {"id": 2, "method": "initialize",
         "params": {"processId": None, "rootUri": None, "capabilities": {}}},
        {"method": "initialized", "params": {}},
        {"id": 3, "method": "textDocument/hover", "params": hover},
        {"id": 4, "method": "textDocument/formatting",
         "params": {"textDocument": {"uri": "file:///x.cnn"}}},
        {"id": 5, "method": "shutdown"},
        {"id": 6, "method": "textDocument/hover",
         "params": {**hover, "position": {"line": 0, "character": 0}}},
        {"method": "exit"},
    ])
    done = subprocess.run([sys.executable, "-m", "cnnspec", "lsp"], input=stream,
                          capture_output=True, timeout=TIMEOUT)
    answers = {m["id"]: m for m in _messages(done.stdout) if "id" in m}
    assert sorted(answers) == [1, 2, 3, 4, 5, 6]
    errors = {i: answers[i]["error"]["code"] for i in (1, 3, 4, 6)}
    assert errors == {1: -32002, 3: -32602, 4: -32602, 6: -32600}
    assert "required field missing @ $.params.options" in answers[4]["error"]["message"]
    assert done.returncode == 0


@pytest.mark.parametrize(("ending", "code"), [(("shutdown", "exit"), 0), (("exit",), 1), ((), 1)])
def test_the_exit_code_says_whether_shutdown_came_first(ending, code):
    _, err, returncode = _run(_open("file:///tmp/a.cnn", "conv8 |\n"), ending=ending)
    assert returncode == code and "Traceback" not in err, err


def test_fast_edits_to_a_slow_sweep_are_checked_once_they_pause():
    """A sweep of 256 variants takes long to check; each keystroke used to queue a check of
    all of them, so diagnostics and hovers fell seconds behind. Ten edits sent at once are
    checked once or twice, and the last diagnostics are those of the last version."""
    from pathlib import Path

    from cnnspec.editor.analysis import diagnostics

    resnet = (Path(__file__).resolve().parent.parent / "examples" / "resnet20.cnn").read_text()
    lines = resnet.split("\n")
    (train,) = [i for i, ln in enumerate(lines) if ln.startswith("train")]
    lines[train] = "train lr={.1,.2,.3,.4} batch={32,64,128,256} epochs={1,2,3,4} seed={1,2,3,4}"
    # deeper stages: a check of all 256 variants well over the server's 0.1 s, on any machine
    text = "\n".join(lines).replace(") x2", ") x9").replace(") x3", ") x9")
    lines = text.split("\n")
    c = Client()
    try:
        c.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        c.notify("initialized", {})
        c.notify("textDocument/didOpen", {"textDocument": {
            "uri": URI, "languageId": "cnnspec", "version": 1, "text": text}})
        assert c.diagnostics() == []
        body = b""
        for version in range(2, 12):  # `# x` typed at the end, a character at a time
            edit = _change(URI, version, (len(lines) - 1, 0, len(lines) - 1, 0, "x"))
            body += _frame(json.dumps({"jsonrpc": "2.0", **edit}).encode())
        c.proc.stdin.write(body)
        c.proc.stdin.flush()
        seen = []
        while not seen or seen[-1]["version"] != 11:
            seen.append(c.wait(lambda m: m.get("method") ==
                               "textDocument/publishDiagnostics")["params"])
        assert len(seen) <= 3
        final = text[:len(text) - len(lines[-1])] + "x" * 10 + lines[-1]
        assert [d["message"] for d in seen[-1]["diagnostics"]] == [
            p.message for p in diagnostics(final)]
    finally:
        c.proc.kill()
        c.proc.wait()


@pytest.mark.parametrize("header", [b"content-length: %d\r\n", b"CONTENT-LENGTH:%d\r\n",
                                    b"Content-Length: %d\n"])
def test_a_content_length_header_in_any_case_is_read(header):
    """Header names are HTTP's, case-insensitive: pygls skipped `content-length` silently."""
    def msg(obj: dict) -> bytes:
        body = json.dumps({"jsonrpc": "2.0", **obj}).encode()
        return header % len(body) + b"\r\n" + body

    stream = b"".join([
        msg({"id": 1, "method": "initialize",
             "params": {"processId": None, "rootUri": None, "capabilities": {}}}),
        msg({"id": 2, "method": "shutdown"}),
        msg({"method": "exit"})])
    done = subprocess.run([sys.executable, "-m", "cnnspec", "lsp"], input=stream,
                          capture_output=True, timeout=TIMEOUT)
    answers = [m for m in _messages(done.stdout) if "id" in m]
    assert [m["id"] for m in answers] == [1, 2]
    assert "capabilities" in answers[0]["result"]
    assert done.returncode == 0, done.stderr


def test_the_document_name_is_its_file_stem():
    from cnnspec.editor.lsp import spec_name

    assert spec_name("file:///work/specs/exp7.cnn") == "exp7"
    assert spec_name("file:///a/my%20net.cnn") == "my net"  # as `cnnspec check` names it
    assert spec_name("untitled:Untitled-1") == "Untitled-1"


def test_a_notification_sent_with_an_id_is_answered(client):
    """`textDocument/didOpen` with an id is a request the client waits on; it got no answer.
    It is refused (-32600) and not run: the document stays closed."""
    client.send({"id": 900, "method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": URI, "languageId": "cnnspec", "version": 1, "text": GOOD}}})
    answer = client.wait(lambda m: m.get("id") == 900)
    assert answer["error"]["code"] == -32600
    assert "is a notification" in answer["error"]["message"]
    client.send({"id": 901, "method": "textDocument/hover", "params": _pos(0, 0)})
    hover = client.wait(lambda m: m.get("id") == 901)
    assert hover.get("result") is None  # not open: nothing to say about it


def test_messages_it_cannot_take_get_json_rpcs_answers():
    """A client waits for an answer to what it sent: a body that is not JSON or not UTF-8
    (parse error), a batch, an id JSON-RPC has no use for (a bool, 1.5) all get the protocol's
    error to id null (they used to be logged and dropped); a position at line 1.5 is -32602
    (it was truncated to line 1 and answered about another place). The server goes on."""
    def frame(body: bytes) -> bytes:
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    def msg(obj: object) -> bytes:
        return frame(json.dumps(obj).encode())

    def hover(msg_id: object, line: object = 0) -> dict:
        return {"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/hover",
                "params": {"textDocument": {"uri": URI}, "position": {"line": line,
                                                                      "character": 1}}}

    stream = b"".join([
        msg({"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"processId": None, "rootUri": None, "capabilities": {}}}),
        msg({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": URI, "languageId": "cnnspec", "version": 1, "text": GOOD}}}),
        frame(b"{not json"),
        frame(json.dumps(hover(2)).encode().replace(b"bad.cnn", b"bad\xff.cnn")),
        msg([hover(3), hover(4)]),
        msg(hover(True)),
        msg(hover(1.5)),
        msg({**hover(None), "params": {}}),  # bad params too: the id is refused first
        msg({"jsonrpc": "2.0", "id": True, "method": "initialized", "params": {}}),
        msg(hover(5, line=1.5)),
        # a client's response (to a request of the server's) is never answered, id null or not
        msg({"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": "no"}}),
        msg({"jsonrpc": "2.0", "id": None, "result": None}),
        msg(hover(6, line=1)),
        msg({"jsonrpc": "2.0", "id": 7, "method": "shutdown"}),
        msg({"jsonrpc": "2.0", "method": "exit"})])
    done = subprocess.run([sys.executable, "-m", "cnnspec", "lsp"], input=stream,
                          capture_output=True, timeout=TIMEOUT)
    answers = [m for m in _messages(done.stdout) if "method" not in m]
    assert [(m["id"], m.get("error", {}).get("code")) for m in answers] == [
        (1, None), (None, -32700), (None, -32700), (None, -32600), (None, -32600),
        (None, -32600), (None, -32600), (None, -32600), (5, -32602), (6, None), (7, None)]
    assert "batches are not part of LSP" in answers[3]["error"]["message"]
    assert [a["error"]["message"].rpartition(" ")[2] for a in answers[4:8]] == [
        "true", "1.5", "null", "true"]
    assert "params.position.line must be a whole number" in answers[8]["error"]["message"]
    assert answers[9]["result"]["contents"]["value"].startswith("**conv8**")  # line 1, col 1
    assert done.returncode == 0, done.stderr
