"""`cnnspec lsp`: a Language Server Protocol server over stdio (pygls 2.x, lsprotocol).

Every answer comes from cnnspec.editor.analysis; this module only converts between the protocol's
types and positions (the client's UTF-16 units) and the analysis's plain tuples. No handler
lets an exception escape: an internal error is logged (to stderr and the client's log) and
the request gets no answer, so the server outlives any input.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from cnnspec.editor import analysis

log = logging.getLogger("cnnspec.editor.lsp")

server = LanguageServer("cnnspec", "0.1.0")

_COMPLETION_KIND = {
    "layer": types.CompletionItemKind.Function,
    "setting": types.CompletionItemKind.Property,
    "argument": types.CompletionItemKind.Field,
    "value": types.CompletionItemKind.EnumMember,
    "block": types.CompletionItemKind.Module,
    "keyword": types.CompletionItemKind.Keyword,
}


class _NotOpen(Exception):
    """A request about a document the client has not opened."""


def _safe(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler; on any exception log it and answer nothing."""

    @functools.wraps(handler)
    def wrapper(ls: LanguageServer, params: Any) -> Any:
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


def _doc(ls: LanguageServer, uri: str) -> Any:
    """An open document. Never one read from disk: pygls would read any URI it is asked about
    (`file:///dev/zero` never ends), and the server only answers for what the editor shows."""
    doc = ls.workspace.text_documents.get(uri)
    if doc is None:
        raise _NotOpen(uri)
    return doc


def _pos(doc: Any, position: types.Position) -> tuple[int, int]:
    """A client position as (line, character index into the Python string)."""
    p = doc.position_codec.position_from_client_units(doc.lines, position)
    return p.line, p.character


def _range(doc: Any, r: analysis.Range) -> types.Range:
    lines = doc.lines
    codec = doc.position_codec

    def pos(line: int, ch: int) -> types.Position:
        if line >= len(lines):
            return types.Position(line=line, character=ch)
        return codec.position_to_client_units(lines, types.Position(line=line, character=ch))

    return types.Range(start=pos(r[0], r[1]), end=pos(r[2], r[3]))


def publish(ls: LanguageServer, uri: str) -> None:
    doc = _doc(ls, uri)
    problems = analysis.diagnostics(doc.source)
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


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
@_safe
def did_open(ls: LanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    publish(ls, params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
@_safe
def did_change(ls: LanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    publish(ls, params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
@_safe
def did_close(ls: LanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))


@server.feature(types.TEXT_DOCUMENT_HOVER)
@_safe
def hover(ls: LanguageServer, params: types.HoverParams) -> types.Hover | None:
    doc = _doc(ls, params.text_document.uri)
    text = analysis.hover(doc.source, *_pos(doc, params.position))
    if text is None:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


@server.feature(
    types.TEXT_DOCUMENT_COMPLETION,
    types.CompletionOptions(trigger_characters=["=", " ", "("]),
)
@_safe
def completion(ls: LanguageServer, params: types.CompletionParams) -> types.CompletionList:
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
        for c in analysis.completions(doc.source, *_pos(doc, params.position))
    ]
    return types.CompletionList(is_incomplete=False, items=items)


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
@_safe
def definition(ls: LanguageServer, params: types.DefinitionParams) -> types.Location | None:
    doc = _doc(ls, params.text_document.uri)
    r = analysis.definition(doc.source, *_pos(doc, params.position))
    return None if r is None else types.Location(uri=doc.uri, range=_range(doc, r))


@server.feature(types.TEXT_DOCUMENT_REFERENCES)
@_safe
def references(ls: LanguageServer, params: types.ReferenceParams) -> list[types.Location]:
    doc = _doc(ls, params.text_document.uri)
    found = analysis.references(doc.source, *_pos(doc, params.position),
                                include_declaration=params.context.include_declaration)
    return [types.Location(uri=doc.uri, range=_range(doc, r)) for r in found]


@server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@_safe
def document_symbol(ls: LanguageServer,
                    params: types.DocumentSymbolParams) -> list[types.DocumentSymbol]:
    doc = _doc(ls, params.text_document.uri)
    return [
        types.DocumentSymbol(
            name=s.name,
            kind=types.SymbolKind.Function if s.kind == "block" else types.SymbolKind.Property,
            range=_range(doc, s.range),
            selection_range=_range(doc, s.selection),
        )
        for s in analysis.symbols(doc.source)
    ]


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
@_safe
def formatting(ls: LanguageServer,
               params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
    doc = _doc(ls, params.text_document.uri)
    new = analysis.formatted(doc.source)
    if new is None or new == doc.source:
        return []
    end = types.Position(line=len(doc.lines), character=0)
    return [types.TextEdit(range=types.Range(start=types.Position(line=0, character=0), end=end),
                           new_text=new)]


@server.feature(types.TEXT_DOCUMENT_INLAY_HINT)
@_safe
def inlay_hint(ls: LanguageServer, params: types.InlayHintParams) -> list[types.InlayHint]:
    doc = _doc(ls, params.text_document.uri)
    first, last = params.range.start.line, params.range.end.line
    out = []
    for line, character, label in analysis.inlay_hints(doc.source):
        if first <= line <= last:
            r = _range(doc, (line, character, line, character))
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


def main() -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(_OneLineBadMessages())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        server.start_io()
    except Exception as exc:  # pygls's reader gave up on the stream (Content-Length: 10**20)
        log.error("cnnspec lsp: cannot read the client's messages any more (%s: %s); stopping",
                  type(exc).__name__, exc)
        return 1
    return 0
