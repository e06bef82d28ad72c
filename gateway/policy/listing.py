"""List-result filtering, so a caller sees only the tools, resources and prompts it may use.

The MCP list methods (server features: tools, resources, prompts; 2025-11-25 and 2026-07-28)
return their items in one array of `result`, beside pagination state (`nextCursor`) and `_meta`,
which are kept as they are. A request may hold several list calls (a JSON-RPC batch, 2025-03-26),
so a `ListFilter` holds every list call of the request by id and rewrites each response that
answers one of them. A GET stream answers no request of its own, but a server may replay earlier
responses on it (Streamable HTTP, "Resumability and Redelivery"): there any response whose result
holds a list array is filtered by that array's kind.

A response reaches the gateway either as an `application/json` body (one message, or an array of
them for a batch) or as events of a `text/event-stream` body (Streamable HTTP, "Sending Messages"
/ "Receiving Messages") whose data is again a message or an array; `SseListFilter` rewrites those
events and passes every other one through.

An entry the caller may see but does not hold gets the scopes it needs in its `_meta`, under
`REQUIRED_SCOPES_META`; the gateway owns that key, so an upstream's own value there is dropped
from every entry of a filtered list.

Everything here fails closed: a body or event too large or too deeply nested to inspect raises
`ListFilterError` instead of letting an unfiltered list through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from gateway.policy.visibility import REQUIRED_SCOPES_META

LIST_FIELDS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "tools/list": ("tools", "name"),
        "resources/list": ("resources", "uri"),
        "resources/templates/list": ("resourceTemplates", "uriTemplate"),
        "prompts/list": ("prompts", "name"),
    }
)
"""List method -> (array key in `result`, key naming each item)."""

Allowed: TypeAlias = Callable[[str], frozenset[str] | None]
"""Given an item's name, uri or uriTemplate: None to hide it, else the scopes to annotate it
with (empty: the caller holds what it needs, no annotation)."""
ListCalls: TypeAlias = Mapping[str | int, tuple[str, Allowed]]
"""The list calls of one request: JSON-RPC id -> (list method, what the caller may see)."""


@dataclass(frozen=True, slots=True)
class ListFilter:
    """Which responses of one exchange to filter, and what each may show."""

    calls: ListCalls = field(default_factory=dict)
    """The request's list calls by id: the responses answering them are filtered."""
    replayed: Mapping[str, Allowed] | None = None
    """List method -> what the caller may see, for a stream that can replay responses to
    earlier requests (GET): every response holding a list array is filtered by its kind."""


MAX_BYTES: Final = 4 * 1024 * 1024

# SSE spec, "Parsing an event stream": a line ends with CRLF, LF or CR; an empty line ends the
# event. A CR directly followed by LF is one CRLF, never a line end plus an empty line.
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_LINE_END = re.compile(r"\r\n|\r|\n")


class ListFilterError(ValueError):
    """A list response cannot be inspected: over `max_bytes`, or nested too deeply.

    The gateway must not forward the body: answer an error instead or, once the response has
    started streaming, abort the stream. A `SseListFilter` that raised is unusable afterwards.
    """


def filter_message(lists: ListFilter, message: object) -> object | None:
    """Filter the list in `message` if it is the success response to one of `lists.calls` (or,
    with `lists.replayed`, any success response holding a list array).

    Returns a new message whose `result[<array key>]` keeps only the items whose key is a string
    the call's `allowed` shows, annotated as it says; every other field of `result`
    (`nextCursor`, `_meta`, ...) and of the message is kept. Returns None for anything else:
    notifications, errors, requests and other ids. Ids compare by JSON value (`1.0` matches
    `1`, `true` does not), erring towards filtering.
    """
    if not isinstance(message, dict) or not isinstance(message.get("result"), dict):
        return None
    msg_id = message.get("id")
    if isinstance(msg_id, float) and msg_id.is_integer():
        msg_id = int(msg_id)  # the JSON value 1.0 is the id 1
    if isinstance(msg_id, str | int) and not isinstance(msg_id, bool):
        call = lists.calls.get(msg_id)
        if call is not None:
            return _filtered(message, *call)
    if lists.replayed is None:
        return None
    current = message
    for method, allowed in lists.replayed.items():
        current = _filtered(current, method, allowed) or current
    return current if current is not message else None


def _filtered(message: dict[str, Any], method: str, allowed: Allowed) -> dict[str, Any] | None:
    """`message` with its result's list for `method` filtered, or None if it holds none.

    A filtered list depends on the caller's authorization, so a `cacheScope` (2026-07-28
    `CacheableResult`) becomes `"private"`: no shared cache may serve one caller's view to
    another."""
    fields = LIST_FIELDS.get(method)
    result = message["result"]
    if fields is None or not isinstance(result.get(fields[0]), list):
        return None
    array_key, item_key = fields
    kept = []
    for item in result[array_key]:
        if not isinstance(item, dict) or not isinstance(item.get(item_key), str):
            continue
        needs = allowed(item[item_key])
        if needs is not None:
            kept.append(_annotated(item, needs))
    filtered = {**result, array_key: kept}
    if "cacheScope" in result:
        filtered["cacheScope"] = "private"
    return {**message, "result": filtered}


def _annotated(item: dict[str, Any], needs: frozenset[str]) -> dict[str, Any]:
    """`item` with `_meta[REQUIRED_SCOPES_META]` set to `needs` (sorted), or without that key
    when `needs` is empty (an upstream's own value). A `_meta` that is not an object is
    replaced when annotating."""
    meta = item.get("_meta")
    own = isinstance(meta, dict) and REQUIRED_SCOPES_META in meta
    if not needs and not own:
        return item
    kept = {k: v for k, v in meta.items() if k != REQUIRED_SCOPES_META} if isinstance(
        meta, dict) else {}  # fmt: skip
    if needs:
        kept[REQUIRED_SCOPES_META] = sorted(needs)
    return {**item, "_meta": kept}


def filter_payload(lists: ListFilter, payload: object) -> object | None:
    """`filter_message` over one message or a batch reply (an array of messages): the payload
    with every list response in it filtered, or None if none was."""
    if not isinstance(payload, list):
        return filter_message(lists, payload)
    filtered = [filter_message(lists, message) for message in payload]
    if all(message is None for message in filtered):
        return None
    return [new if new is not None else old for new, old in zip(filtered, payload, strict=True)]


def filter_json_body(lists: ListFilter, body: bytes, *, max_bytes: int = MAX_BYTES) -> bytes:
    """Filter an `application/json` response body; any other body is returned unchanged.

    Raises `ListFilterError` for a body over `max_bytes`, whatever it holds.
    """
    if len(body) > max_bytes:
        raise ListFilterError(f"response body over {max_bytes} bytes")
    # Decoded as a fetch() client would (BOM dropped, bad bytes replaced), so it cannot see a
    # list that this parser missed.
    filtered = filter_payload(lists, _parse(body.decode("utf-8-sig", "replace")))
    return body if filtered is None else _serialise(filtered).encode()


class SseListFilter:
    """Incremental rewriter of a `text/event-stream` response body (SSE spec, "Event stream
    interpretation"; MCP Streamable HTTP).

    `feed` returns what can be sent now: every complete event, at once. An event whose data (its
    `data:` lines joined with LF) is a payload `filter_payload` applies to is re-emitted with
    its other lines (`event:`, `id:`, `retry:`, comments) in place and one `data:` line holding
    the filtered JSON, using the event's first line ending. Every other event is passed through
    byte for byte. Raises `ListFilterError` once an event grows past `max_bytes`.
    """

    def __init__(self, lists: ListFilter, *, max_bytes: int = MAX_BYTES) -> None:
        self._lists = lists
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._first_event = True
        # The last event ended in a CR at the end of a chunk: a LF opening the next chunk
        # completes that CRLF, and is emitted as this (nothing if the event was rewritten).
        self._lf_tail: bytes | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk of the body; return the bytes ready to send."""
        out = bytearray()
        if self._lf_tail is not None and chunk:
            if chunk.startswith(b"\n"):
                out += self._lf_tail
                chunk = chunk[1:]
            self._lf_tail = None
        scan_from = max(0, len(self._buffer) - 3)  # an event end is at most 4 bytes long
        self._buffer += chunk
        start, rewritten = 0, False
        for match in _EVENT_END.finditer(self._buffer, scan_from):
            event = bytes(self._buffer[start : match.end()])
            if len(event) > self._max_bytes:
                raise ListFilterError(f"SSE event over {self._max_bytes} bytes")
            replacement = self._rewrite(event, terminated=True)
            rewritten = replacement is not None
            out += event if replacement is None else replacement
            start = match.end()
        if start and start == len(self._buffer) and self._buffer.endswith(b"\r"):
            self._lf_tail = b"" if rewritten else b"\n"
        del self._buffer[:start]
        if len(self._buffer) > self._max_bytes:
            raise ListFilterError(f"SSE event over {self._max_bytes} bytes")
        return bytes(out)

    def finish(self) -> bytes:
        """Return what is left at the end of the body: an unterminated last event.

        SSE clients do not dispatch it, so it is passed through unchanged, unless it holds the
        list response, which is filtered anyway (still unterminated) for lenient clients.
        """
        tail = bytes(self._buffer)
        self._buffer.clear()
        replacement = self._rewrite(tail, terminated=False) if tail else None
        return tail if replacement is None else replacement

    def _rewrite(self, event: bytes, *, terminated: bool) -> bytes | None:
        """The event with its list filtered, or None to pass it through."""
        # The stream is UTF-8 with errors replaced and one leading BOM dropped (SSE spec).
        text = event.decode("utf-8-sig" if self._first_event else "utf-8", "replace")
        self._first_event = False
        lines = [line for line in _LINE_END.split(text) if line]
        data = [value for name, value in map(_field, lines) if name == "data"]
        if not data:
            return None
        filtered = filter_payload(self._lists, _parse("\n".join(data)))
        if filtered is None:
            return None
        kept = [line for line in lines if _field(line)[0] != "data"]
        first_data = next(i for i, line in enumerate(lines) if _field(line)[0] == "data")
        kept.insert(first_data, "data: " + _serialise(filtered))
        eol = _LINE_END.search(text)
        newline = eol.group() if eol else "\n"
        return (newline.join(kept) + (newline * 2 if terminated else "")).encode()


def _field(line: str) -> tuple[str, str]:
    """(name, value) of an event-stream line (SSE spec, "Process the field"); "" names a
    comment."""
    name, _, value = line.partition(":")
    return name, value.removeprefix(" ")


def _parse(text: str) -> object:
    """The JSON value of `text`, or None if it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None
    except RecursionError:
        raise ListFilterError("JSON nested too deeply to inspect") from None


def _serialise(message: object) -> str:
    """Compact JSON keeping non-ASCII as is; lone surrogates (from `\\ud800` escapes in the
    input) cannot be UTF-8, so such a message is written with `\\u` escapes instead."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(message, separators=(",", ":"))
    return text
