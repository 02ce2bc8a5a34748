"""`cnnspec lsp`: a Language Server Protocol server over stdio (pygls 2.x, lsprotocol).

Every answer comes from cnnspec.editor.analysis; this module keeps the open documents
(cnnspec.editor.documents: the client's line and position rules) and converts between the
protocol's types and the analysis's plain tuples. No handler lets an exception escape: an
internal error is logged (to stderr and the client's log) and the request gets no answer, so
the server outlives any input; a request the protocol layer refuses (unreadable params,
before `initialize`, after `shutdown`) gets the protocol's error answer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
    JsonRpcServerNotInitialized,
)
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from cnnspec.editor import analysis
from cnnspec.editor.documents import Change, Document

log = logging.getLogger("cnnspec.editor.lsp")

_COMPLETION_KIND = {
    "layer": types.CompletionItemKind.Function,
    "setting": types.CompletionItemKind.Property,
    "argument": types.CompletionItemKind.Field,
    "value": types.CompletionItemKind.EnumMember,
    "block": types.CompletionItemKind.Module,
    "keyword": types.CompletionItemKind.Keyword,
}

# An analysis slower than this (a sweep of many variants) is not run again on every change:
# the next one waits as long as the last took (at most _MOST_WAIT), so fast typing is
# checked once, when it pauses, instead of queueing one analysis per keystroke. A faster one
# runs at once: waiting would only add to an edit's round trip (target < 50 ms).
_SLOW = 0.1
_MOST_WAIT = 0.5


class _Protocol(LanguageServerProtocol):
    """pygls's protocol, answering every request as the protocol says (pygls answers none of
    these, and a client waits for the answer forever): params it cannot read (`hover` without
    a position, a negative line) get -32602, a request before `initialize` -32002, one after
    `shutdown` -32600. It also notes whether `shutdown` came, for the exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initialize_seen = False
        self.shutdown_seen = False

    def structure_message(self, data: dict[str, Any]) -> Any:
        # (this is json.loads' object_hook: it sees every object of a message, the innermost
        # first, so what it checks must be a message's own: `jsonrpc` and a `method` string)
        own = "jsonrpc" in data and isinstance(data.get("method"), str)
        if own and "id" in data and not _a_request_id(data["id"]):
            # JSON-RPC: an id is a string or a whole number (LSP: integer | string); one that
            # is neither (true, 1.5, null) cannot be answered by it: the error goes to id null,
            # before its params are read (they were answered to the bad id)
            self.answer_unknown_id(JsonRpcInvalidRequest(
                message=f"a request id is a whole number or a string, not "
                        f"{json.dumps(data['id'])}"))
            raise JsonRpcInvalidRequest(message="unusable request id")
        where = _fractional_position(data.get("params")) if own else None
        if where is not None:  # a notification (a change at line 1.5) is dropped unanswered
            if "id" in data:
                self._send_response(data["id"], None, JsonRpcInvalidParams(
                    message=f"invalid params for {data['method']}: {where} must be a whole "
                            "number").to_response_error())
            raise JsonRpcInvalidParams(message=f"{where} not a whole number")
        method = data.get("method") if isinstance(data, dict) else None
        kinds = types.METHOD_TO_TYPES.get(method) if isinstance(method, str) else None
        if kinds is not None and kinds[1] is None and isinstance(data.get("id"), int | str):
            # a notification's method sent as a request: it has no answer of its own, and
            # the client waits for one; say so instead of running it without a reply
            self._send_response(data["id"], None, JsonRpcInvalidRequest(
                message=f"{method} is a notification: send it without an id",
            ).to_response_error())
            raise JsonRpcInvalidRequest(message=f"{method} sent with an id")
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "method" in data and isinstance(data.get("id"), int | str):
                self._send_response(data["id"], None, JsonRpcInvalidParams(
                    message=f"invalid params for {data['method']}: {_why(exc)}",
                ).to_response_error())
            raise

    def answer_unknown_id(self, error: JsonRpcException) -> None:
        """JSON-RPC's answer to a message whose id cannot be read: the error, to id null
        (written out: pygls's own response leaves a null id out, and the member is required)."""
        self._send_data({"jsonrpc": "2.0", "id": None,
                         "error": {"code": error.code, "message": error.message}})

    def handle_message(self, message: Any) -> None:
        if not hasattr(message, "jsonrpc"):  # a batch (a JSON array), a bare value
            self.answer_unknown_id(JsonRpcInvalidRequest(
                message="a message is one JSON-RPC object"
                + (" (batches are not part of LSP: send each alone)"
                   if isinstance(message, list) else "")))
            log.debug("cnnspec lsp: not a JSON-RPC object: %s", type(message).__name__)
            return
        method = getattr(message, "method", None)
        request = method is not None and hasattr(message, "id")
        if request and method == types.INITIALIZE:
            self.initialize_seen = True
        elif request and not self.initialize_seen:
            self._send_response(message.id, None, JsonRpcServerNotInitialized(
                message=f"{method} before initialize").to_response_error())
            return
        elif request and self.shutdown_seen:
            self._send_response(message.id, None, JsonRpcInvalidRequest(
                message=f"{method} after shutdown").to_response_error())
            return
        if request and method == types.SHUTDOWN:
            self.shutdown_seen = True
        super().handle_message(message)

    # The documents are the server's own (CnnspecServer.documents), not pygls's workspace's:
    # pygls's copy would also clamp a change's position in place, before our handler sees it.

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: Any) -> Iterator[Any]:
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: Any) -> Iterator[Any]:
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: Any) -> Iterator[Any]:
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CLOSE, params)

    def _user_handler(self, method: str, params: Any) -> Iterator[Any]:
        handler = self.fm.features.get(method)
        if handler is not None:
            yield handler, (params,), None


class CnnspecServer(LanguageServer):
    """The server, with its own copy of each open document (cnnspec.editor.documents says why
    not pygls's), keyed by the URI exactly as the client wrote it."""

    def __init__(self) -> None:
        super().__init__("cnnspec", "0.1.0", protocol_cls=_Protocol)
        self.documents: dict[str, Document] = {}
        self.costs: dict[str, float] = {}  # seconds the last analysis of a document took
        self.pending: dict[str, asyncio.TimerHandle] = {}  # analyses waiting for a pause

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Logged, never shown in a pop-up: the client sent something unreadable (its log
        says what), which the user can do nothing about. A body that is not JSON (or not
        UTF-8) gets JSON-RPC's parse error, to id null: its id cannot be read."""
        if isinstance(error, json.JSONDecodeError | UnicodeDecodeError) and isinstance(
                self.protocol, _Protocol):
            self.protocol.answer_unknown_id(JsonRpcParseError(
                message=f"the message is not UTF-8 JSON: {_why(error)}"))
        log.debug("cnnspec lsp: %s", error)

    @property
    def exit_code(self) -> int:
        """0 when the client asked for `shutdown` before the end, else 1 (the protocol's)."""
        return 0 if isinstance(self.protocol, _Protocol) and self.protocol.shutdown_seen else 1


server = CnnspecServer()


def _a_request_id(value: Any) -> bool:
    """Whether a request id is one JSON-RPC can answer: a string or a whole number (a bool is
    JSON's true/false, not a number; 1.5 is no LSP id)."""
    return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(
        value, bool) and float(value).is_integer())


def _fractional_position(params: Any, path: str = "params") -> str | None:
    """Where params hold a `line` or `character` that is not a whole number (lsprotocol's
    converter would truncate 1.5 to 1 and answer about another place), or None."""
    if isinstance(params, dict):
        for key, value in params.items():
            here = f"{path}.{key}"
            if key in ("line", "character") and isinstance(value, float) \
                    and not value.is_integer():
                return here
            found = _fractional_position(value, here)
            if found is not None:
                return found
    elif isinstance(params, list):
        for i, value in enumerate(params[:1000]):
            found = _fractional_position(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None


class _NotOpen(Exception):
    """A request about a document the client has not opened."""


def _safe(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler; on any exception log it and answer nothing."""

    @functools.wraps(handler)
    def wrapper(ls: CnnspecServer, params: Any) -> Any:
        try:
            return handler(ls, params)
        except _NotOpen as exc:
            log.warning("cnnspec lsp: %s on %s, which is not open: no answer",
                        handler.__name__, exc)
            return None
        except Exception:
            log.exception("cnnspec lsp: %s failed", handler.__name__)
            return None

    return wrapper


def _doc(ls: CnnspecServer, uri: str) -> Document:
    """An open document. Never one read from disk: the server only answers for what the
    editor shows (and reading any URI asked about would hang on `file:///dev/zero`)."""
    doc = ls.documents.get(uri)
    if doc is None:
        raise _NotOpen(uri)
    return doc


def _pos(doc: Document, position: types.Position) -> tuple[int, int]:
    """A client position as the analysis's (line, character)."""
    return doc.to_parser(position.line, position.character)


def _range(doc: Document, r: analysis.Range) -> types.Range:
    (sl, sc), (el, ec) = doc.to_client(r[0], r[1]), doc.to_client(r[2], r[3])
    return types.Range(start=types.Position(line=sl, character=sc),
                       end=types.Position(line=el, character=ec))


def _encoding(ls: CnnspecServer) -> str:
    """The position encoding agreed in `initialize` (UTF-16 unless the client offered
    another)."""
    chosen = getattr(ls.workspace, "position_encoding", None) or "utf-16"
    return str(getattr(chosen, "value", chosen))


def spec_name(uri: str) -> str | None:
    """The name `cnnspec check` gives the document's file (its stem: `exp7` for
    file:///…/exp7.cnn), so the editor's messages name a sweep's variants as the CLI does."""
    from pathlib import PurePosixPath
    from urllib.parse import unquote, urlparse

    return PurePosixPath(unquote(urlparse(uri).path)).stem or None


def publish(ls: CnnspecServer, uri: str) -> None:
    doc = _doc(ls, uri)
    began = time.perf_counter()
    problems = analysis.diagnostics(doc.text, name=spec_name(uri))
    ls.costs[uri] = time.perf_counter() - began
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
        uri=uri,
        version=doc.version,
        diagnostics=[
            types.Diagnostic(
                range=_range(doc, p.range),
                message=p.message,
                severity=types.DiagnosticSeverity(p.severity),
                source="cnnspec",
            )
            for p in problems
        ],
    ))


def _publish_later(ls: CnnspecServer, uri: str) -> None:
    """Diagnostics for the document now, or, after a slow analysis, once the changes pause."""
    waiting = ls.pending.pop(uri, None)
    if waiting is not None:
        waiting.cancel()
    cost = ls.costs.get(uri, 0.0)
    if cost < _SLOW:
        publish(ls, uri)
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not inside the server's loop: at once
        publish(ls, uri)
        return
    ls.pending[uri] = loop.call_later(min(cost, _MOST_WAIT), _publish_waiting, ls, uri)


def _publish_waiting(ls: CnnspecServer, uri: str) -> None:
    ls.pending.pop(uri, None)
    if uri not in ls.documents:  # closed meanwhile
        return
    try:
        publish(ls, uri)
    except Exception:
        log.exception("cnnspec lsp: diagnostics for %s failed", uri)


def _changes(params: types.DidChangeTextDocumentParams) -> list[Change]:
    out: list[Change] = []
    for change in params.content_changes:
        r = getattr(change, "range", None)
        where = None if r is None else (r.start.line, r.start.character,
                                        r.end.line, r.end.character)
        out.append((where, change.text))
    return out


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
@_safe
def did_open(ls: CnnspecServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    ls.documents[item.uri] = Document(item.text, item.version, _encoding(ls))
    ls.costs.pop(item.uri, None)
    publish(ls, item.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
@_safe
def did_change(ls: CnnspecServer, params: types.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents[uri] = _doc(ls, uri).edited(_changes(params), params.text_document.version)
    _publish_later(ls, uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
@_safe
def did_close(ls: CnnspecServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents.pop(uri, None)
    ls.costs.pop(uri, None)
    waiting = ls.pending.pop(uri, None)
    if waiting is not None:
        waiting.cancel()
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(types.TEXT_DOCUMENT_HOVER)
@_safe
def hover(ls: CnnspecServer, params: types.HoverParams) -> types.Hover | None:
    doc = _doc(ls, params.text_document.uri)
    text = analysis.hover(doc.text, *_pos(doc, params.position),
                          name=spec_name(params.text_document.uri))
    if text is None:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


@server.feature(
    types.TEXT_DOCUMENT_COMPLETION,
    types.CompletionOptions(trigger_characters=["=", " ", "("]),
)
@_safe
def completion(ls: CnnspecServer, params: types.CompletionParams) -> types.CompletionList:
    doc = _doc(ls, params.text_document.uri)
    items = [
        types.CompletionItem(
            label=c.label,
            detail=c.detail or None,
            kind=_COMPLETION_KIND.get(c.kind),
            documentation=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                              value=c.documentation) if c.documentation
            else None,
        )
        for c in analysis.completions(doc.text, *_pos(doc, params.position))
    ]
    return types.CompletionList(is_incomplete=False, items=items)


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
@_safe
def definition(ls: CnnspecServer, params: types.DefinitionParams) -> types.Location | None:
    uri = params.text_document.uri
    doc = _doc(ls, uri)
    r = analysis.definition(doc.text, *_pos(doc, params.position))
    return None if r is None else types.Location(uri=uri, range=_range(doc, r))


@server.feature(types.TEXT_DOCUMENT_REFERENCES)
@_safe
def references(ls: CnnspecServer, params: types.ReferenceParams) -> list[types.Location]:
    uri = params.text_document.uri
    doc = _doc(ls, uri)
    found = analysis.references(doc.text, *_pos(doc, params.position),
                                include_declaration=params.context.include_declaration)
    return [types.Location(uri=uri, range=_range(doc, r)) for r in found]


@server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@_safe
def document_symbol(ls: CnnspecServer,
                    params: types.DocumentSymbolParams) -> list[types.DocumentSymbol]:
    doc = _doc(ls, params.text_document.uri)
    return [
        types.DocumentSymbol(
            name=s.name,
            kind=types.SymbolKind.Function if s.kind == "block" else types.SymbolKind.Property,
            range=_range(doc, s.range),
            selection_range=_range(doc, s.selection),
        )
        for s in analysis.symbols(doc.text)
    ]


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
@_safe
def formatting(ls: CnnspecServer,
               params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
    doc = _doc(ls, params.text_document.uri)
    new = analysis.formatted(doc.text)
    if new is not None and "\r\n" in doc.text and "\n" not in doc.text.replace("\r\n", ""):
        new = new.replace("\n", "\r\n")  # a CRLF file stays CRLF
    if new is None or new == doc.text:
        return []
    line, character = doc.position(len(doc.text))
    return [types.TextEdit(range=types.Range(start=types.Position(line=0, character=0),
                                             end=types.Position(line=line, character=character)),
                           new_text=new)]


@server.feature(types.TEXT_DOCUMENT_INLAY_HINT)
@_safe
def inlay_hint(ls: CnnspecServer, params: types.InlayHintParams) -> list[types.InlayHint]:
    doc = _doc(ls, params.text_document.uri)
    first, last = params.range.start.line, params.range.end.line
    out = []
    for line, character, label in analysis.inlay_hints(doc.text):
        r = _range(doc, (line, character, line, character))
        if first <= r.start.line <= last:
            out.append(types.InlayHint(position=r.start, label=label,
                                       kind=types.InlayHintKind.Type, padding_left=True))
    return out


class _OneLineBadMessages(logging.Filter):
    """A message the client sent that pygls cannot read (not JSON, not an object, params of the
    wrong shape) is bad input, so the editor's log gets one line saying what was wrong, not the
    two full tracebacks pygls logs for it. The server ignores such a message and reads on; it
    logged the same before this filter, with tracebacks. Only pygls's records about a message
    it could not read are shortened: cnnspec's own handler failures (bugs, logged under
    `cnnspec.*`) and pygls's other failures keep their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("pygls"):
            return True
        if str(record.msg).startswith("Unable to deserialize message"):
            return False  # its traceback text is in the message; the record after it says it
        if (record.exc_info is None or record.exc_info[1] is None
                or not str(record.msg).startswith("Unable to handle message")):
            return True  # pygls's other failures (sending an answer, ...) keep their traceback
        said = record.getMessage()
        record.msg = "cnnspec lsp: %s (%s); the message is ignored"
        record.args = (said, _why(record.exc_info[1]))
        record.exc_info = record.exc_text = None
        return True


def _why(exc: BaseException) -> str:
    """One line: the exception and, for params of the wrong shape, which fields are wrong."""
    cause = exc.__cause__
    if cause is not None and isinstance(cause, ExceptionGroup):
        from cattrs import transform_error  # lsprotocol's own (de)serializer

        detail = "; ".join(transform_error(cause))
    else:
        detail = str(exc)
    return " ".join(f"{type(exc).__name__}: {detail}".split())


class _HeaderReader:
    """The client's stream, with a `content-length` header in any letter case read as pygls
    expects it (`Content-Length: N` and CRLF).

    Why: the base protocol's headers are HTTP-style, whose names are case-insensitive, and a
    client that writes `content-length: 52` was otherwise never answered (pygls matches the
    exact spelling and drops the message without a word). Body bytes pass through untouched."""

    _LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d+)[ \t]*\r?\n", re.IGNORECASE)

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readline(self) -> bytes:
        line: bytes = self.stream.readline()
        match = self._LENGTH.fullmatch(line)
        return b"Content-Length: " + match.group(1) + b"\r\n" if match else line

    def read(self, n: int) -> bytes:
        return self.stream.read(n)  # type: ignore[no-any-return]


def main() -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(_OneLineBadMessages())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        server.start_io(_HeaderReader(sys.stdin.buffer))  # type: ignore[arg-type]
    except Exception as exc:  # pygls's reader gave up on the stream (Content-Length: 10**20)
        log.error("cnnspec lsp: cannot read the client's messages any more (%s: %s); stopping",
                  type(exc).__name__, exc)
        return 1
    return server.exit_code
