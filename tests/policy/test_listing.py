from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.policy.listing import (
    LIST_FIELDS,
    ListFilter,
    ListFilterError,
    SseListFilter,
    filter_json_body,
    filter_message,
    filter_payload,
)
from gateway.policy.visibility import REQUIRED_SCOPES_META


def allowed(key: str) -> frozenset[str] | None:
    """ "ok..." is held, "up..." is shown annotated with what it needs, anything else hidden."""
    if key.startswith("ok"):
        return frozenset()
    return frozenset({"files:write", "files:read"}) if key.startswith("up") else None


def one(method: str = "tools/list", rpc_id: str | int = 1) -> ListFilter:
    """The filter of a request holding one list call."""
    return ListFilter(calls={rpc_id: (method, allowed)})


def compact(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def list_response(method: str, keys: list[Any], rpc_id: object = 1, **extra: Any) -> Any:
    array_key, item_key = LIST_FIELDS[method]
    items = [{item_key: key, "description": "d"} for key in keys]
    return {"jsonrpc": "2.0", "id": rpc_id, "result": {array_key: items, **extra}}


def listed(message: Any, method: str = "tools/list") -> list[object]:
    array_key, item_key = LIST_FIELDS[method]
    return [item[item_key] for item in message["result"][array_key]]


TOOLS = list_response("tools/list", ["ok-a", "no-b", "ok-c"])
FILTERED_TOOLS = list_response("tools/list", ["ok-a", "ok-c"])


# --- filter_message / filter_json_body ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "keys", "expected"),
    [
        ("tools/list", ["ok-a", "no-b", "ok-c"], ["ok-a", "ok-c"]),
        ("resources/list", ["ok://a", "file:///b"], ["ok://a"]),
        ("resources/templates/list", ["file:///{x}", "ok://{y}"], ["ok://{y}"]),
        ("prompts/list", ["no", "ok"], ["ok"]),
        ("tools/list", ["ok-a", 7, None, ["ok-x"]], ["ok-a"]),
        ("tools/list", [], []),
        ("tools/list", ["no-a", "no-b"], []),
    ],
    ids=["tools", "resources", "templates", "prompts", "non-str-key", "empty", "none-allowed"],
)
def test_filter_message_keeps_allowed_items(
    method: str, keys: list[Any], expected: list[str]
) -> None:
    assert listed(filter_message(one(method, 1), list_response(method, keys)), method) == expected


def test_filter_message_drops_items_that_are_not_objects() -> None:
    message = {"jsonrpc": "2.0", "id": 1, "result": {"tools": ["ok-a", 3, {"name": "ok-b"}]}}
    assert filter_message(one("tools/list", 1), message) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tools": [{"name": "ok-b"}]},
    }


def test_filter_message_keeps_every_other_field_and_copies() -> None:
    message = list_response(
        "tools/list", ["ok-a", "no-b"], nextCursor="c2", _meta={"k": [1]}, extra=None
    )
    message["x-vendor"] = {"y": 1}
    original = copy.deepcopy(message)

    filtered = filter_message(one("tools/list", 1), message)

    assert filtered == {
        "jsonrpc": "2.0",
        "id": 1,
        "x-vendor": {"y": 1},
        "result": {
            "tools": [{"name": "ok-a", "description": "d"}],
            "nextCursor": "c2",
            "_meta": {"k": [1]},
            "extra": None,
        },
    }
    assert message == original


@pytest.mark.parametrize(
    ("method", "rpc_id", "message"),
    [
        ("tools/list", 2, TOOLS),
        ("tools/list", "1", TOOLS),
        ("tools/list", 1, {**TOOLS, "id": True}),
        ("tools/list", 1, {**TOOLS, "id": None}),
        ("tools/list", "a", {**TOOLS, "id": "b"}),
        ("tools/call", 1, TOOLS),
        ("prompts/list", 1, TOOLS),
        ("tools/list", 1, {"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "m"}}),
        ("tools/list", 1, {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}),
        ("tools/list", 1, {"jsonrpc": "2.0", "id": 1, "method": "roots/list"}),
        ("tools/list", 1, {"jsonrpc": "2.0", "id": 1, "result": [{"name": "no"}]}),
        ("tools/list", 1, {"jsonrpc": "2.0", "id": 1, "result": {"tools": {"name": "no"}}}),
        ("tools/list", 1, [TOOLS]),
        ("tools/list", 1, None),
    ],
    ids=[
        "other-int-id",
        "str-vs-int-id",
        "bool-id",
        "null-id",
        "other-str-id",
        "not-a-list-method",
        "other-list-method",
        "error-response",
        "notification",
        "server-request-same-id",
        "result-not-object",
        "array-not-list",
        "batch",
        "null",
    ],
)
def test_filter_message_leaves_other_messages(
    method: str, rpc_id: str | int, message: object
) -> None:
    assert filter_message(one(method, rpc_id), message) is None


@pytest.mark.parametrize(
    ("rpc_id", "message_id"),
    [(1, 1), ("req-1", "req-1"), (1, 1.0)],
    ids=["int", "str", "float-equal-value"],
)
def test_filter_message_matches_same_id(rpc_id: str | int, message_id: object) -> None:
    filtered = filter_message(one("tools/list", rpc_id), {**TOOLS, "id": message_id})
    assert listed(filtered) == ["ok-a", "ok-c"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (compact(TOOLS), compact(FILTERED_TOOLS)),
        (json.dumps(TOOLS, indent=2).encode(), compact(FILTERED_TOOLS)),
        (b"\xef\xbb\xbf" + compact(TOOLS), compact(FILTERED_TOOLS)),
        (
            compact(list_response("tools/list", ["ok-café", "no-日本"], nextCursor="ü")),
            '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok-café","description":"d"}],'
            '"nextCursor":"ü"}}'.encode(),
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok\\ud800"},{"name":"no"}]}}',
            b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok\\ud800"}]}}',
        ),
    ],
    ids=["compact", "indented", "utf8-bom", "non-ascii-kept-raw", "lone-surrogate-escaped"],
)
def test_filter_json_body_rewrites_the_response(body: bytes, expected: bytes) -> None:
    assert filter_json_body(one(), body) == expected


@pytest.mark.parametrize(
    "body",
    [
        compact({**TOOLS, "id": 2}),
        compact({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}}),
        b' {"jsonrpc": "2.0", "method": "notifications/message", "params": {}}\n',
        b"",
        b"not json",
        compact(TOOLS)[:-1],
        b"\xff\xfe\x00",
        b"<html>502</html>",
    ],
    ids=["other-id", "error", "notification", "empty", "not-json", "truncated", "binary", "html"],
)
def test_filter_json_body_leaves_other_bodies_byte_for_byte(body: bytes) -> None:
    assert filter_json_body(one(), body) is body


@pytest.mark.parametrize(
    "body",
    [compact(TOOLS), b"x" * 101, compact({**TOOLS, "id": 2})],
    ids=["matching", "not-json", "other-id"],
)
def test_filter_json_body_over_max_bytes_fails_closed(body: bytes) -> None:
    body = body.ljust(101)
    with pytest.raises(ListFilterError):
        filter_json_body(one(), body, max_bytes=100)


def test_filter_json_body_at_max_bytes_is_filtered() -> None:
    body = compact(TOOLS)
    assert filter_json_body(one(), body, max_bytes=len(body)) == compact(FILTERED_TOOLS)


def test_filter_json_body_too_deep_fails_closed() -> None:
    deep = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[' + b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ListFilterError):
        filter_json_body(one(), deep + b"]}}", max_bytes=1 << 20)


# --- SseListFilter ---------------------------------------------------------------------------

RESPONSE = compact(list_response("tools/list", ["ok-a", "no-b"], nextCursor="n"))
FILTERED = compact(list_response("tools/list", ["ok-a"], nextCursor="n"))
PROGRESS = b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}'


def run_sse(stream: bytes, *, rpc_id: str | int = 1, method: str = "tools/list") -> bytes:
    sse = SseListFilter(one(method, rpc_id))
    return sse.feed(stream) + sse.finish()


@pytest.mark.parametrize(
    "stream",
    [
        b"id: 0\ndata: \n\n",
        b"id: 0\r\ndata:\r\n\r\n",
        b"id: 0\rdata\r\r",
        b":\n\n",
        b": keep-alive\r\n\r\n",
        b"retry: 3000\n\n",
        b"event: message\ndata: " + PROGRESS + b"\n\n",
        b"data: " + compact({**TOOLS, "id": 2}) + b"\n\n",
        b'data: {"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"m"}}\n\n',
        b"data: not json\n\n",
        b"data: " + RESPONSE[:40] + b"\n\n",
        b"data: \xff\xfe caf\xc3\xa9\r\n\r\n",
        b"\n\n\n",
        b"",
    ],
    ids=[
        "priming-lf",
        "priming-crlf",
        "priming-cr-no-colon",
        "keep-alive",
        "comment-crlf",
        "retry-only",
        "notification",
        "other-id",
        "error-response",
        "not-json",
        "truncated-json",
        "invalid-utf8",
        "blank-lines",
        "empty",
    ],
)
def test_sse_passes_other_events_byte_for_byte(stream: bytes) -> None:
    assert run_sse(stream) == stream


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: " + RESPONSE + b"\n\n", b"data: " + FILTERED + b"\n\n"),
        (b"data:" + RESPONSE + b"\n\n", b"data: " + FILTERED + b"\n\n"),
        (
            b"event: message\nid: 7\ndata: " + RESPONSE + b"\n\n",
            b"event: message\nid: 7\ndata: " + FILTERED + b"\n\n",
        ),
        (
            b"event: message\r\nid: 7\r\ndata: " + RESPONSE + b"\r\n\r\n",
            b"event: message\r\nid: 7\r\ndata: " + FILTERED + b"\r\n\r\n",
        ),
        (
            b"event: message\rid: 7\rdata: " + RESPONSE + b"\r\r",
            b"event: message\rid: 7\rdata: " + FILTERED + b"\r\r",
        ),
        (
            b"id: 7\ndata: " + RESPONSE[:24] + b"\ndata:\ndata: " + RESPONSE[24:] + b"\n\n",
            b"id: 7\ndata: " + FILTERED + b"\n\n",
        ),
        (
            b"data: {\n: inner comment\ndata:  "
            + RESPONSE[1:]
            + b"\nid: 9\nretry: 500\nfoo: bar\n\n",
            b"data: " + FILTERED + b"\n: inner comment\nid: 9\nretry: 500\nfoo: bar\n\n",
        ),
        (
            b"event: other\ndata: " + RESPONSE + b"\n\n",
            b"event: other\ndata: " + FILTERED + b"\n\n",
        ),
        (b"\xef\xbb\xbfdata: " + RESPONSE + b"\n\n", b"data: " + FILTERED + b"\n\n"),
    ],
    ids=[
        "lf",
        "no-space-after-colon",
        "event-and-id-kept",
        "crlf",
        "cr",
        "multi-line-data",
        "comment-and-fields-kept",
        "other-event-type",
        "stream-bom",
    ],
)
def test_sse_rewrites_the_response_event(stream: bytes, expected: bytes) -> None:
    assert run_sse(stream) == expected


def test_sse_filters_a_whole_stream_and_keeps_the_rest() -> None:
    stream = (
        b"id: s-0\ndata: \n\n"
        b":\n\n"
        b"event: message\nid: s-1\ndata: " + PROGRESS + b"\n\n"
        b"event: message\nid: s-2\ndata: " + RESPONSE + b"\n\n"
    )
    out = run_sse(stream)
    assert out == stream.replace(RESPONSE, FILTERED)
    last = out.split(b"\n\n")[-2].split(b"\n")
    assert last[:2] == [b"event: message", b"id: s-2"]
    assert json.loads(last[2].removeprefix(b"data: "))["result"] == {
        "tools": [{"name": "ok-a", "description": "d"}],
        "nextCursor": "n",
    }


def test_sse_sends_each_event_as_soon_as_it_is_complete() -> None:
    sse = SseListFilter(one())
    assert sse.feed(b"id: 0\rdata:\r\r") == b"id: 0\rdata:\r\r"
    assert sse.feed(b"event: message\ndata: " + RESPONSE[:20]) == b""
    assert sse.feed(RESPONSE[20:] + b"\n") == b""
    assert sse.feed(b"\n: after") == b"event: message\ndata: " + FILTERED + b"\n\n"
    assert sse.finish() == b": after"


SAMPLE_RESPONSE = compact(
    list_response("tools/list", ["ok-工具ü", "no-禁止", "ok-é"], nextCursor="€")
)
SAMPLE_FILTERED = compact(list_response("tools/list", ["ok-工具ü", "ok-é"], nextCursor="€"))
SAMPLE_EVENTS = [
    b"id: s-0{eol}data: {eol}{eol}",
    b":{eol}{eol}",
    b"event: message{eol}id: s-1{eol}data: " + PROGRESS + b"{eol}{eol}",
    b"event: message{eol}id: s-2{eol}data: "
    + SAMPLE_RESPONSE[:50]
    + b"{eol}data: "
    + SAMPLE_RESPONSE[50:]
    + b"{eol}{eol}",
    b"data: " + compact({**TOOLS, "id": 2}) + b"{eol}{eol}",
    b"id: s-3{eol}data: " + SAMPLE_RESPONSE + b"{eol}{eol}",
    b": tail",
]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_sse_output_does_not_depend_on_chunking(eol: bytes) -> None:
    stream = b"".join(event.replace(b"{eol}", eol) for event in SAMPLE_EVENTS)
    filtered = b"data: " + SAMPLE_FILTERED + b"{eol}"
    expected_events = [
        *SAMPLE_EVENTS[:3],
        b"event: message{eol}id: s-2{eol}" + filtered + b"{eol}",
        SAMPLE_EVENTS[4],
        b"id: s-3{eol}" + filtered + b"{eol}",
        SAMPLE_EVENTS[6],
    ]
    expected = b"".join(expected_events).replace(b"{eol}", eol)
    whole = run_sse(stream)
    assert whole == expected
    assert whole.count(b"data: " + SAMPLE_FILTERED) == 2

    for split in range(len(stream) + 1):
        sse = SseListFilter(one())
        chunked = sse.feed(stream[:split]) + sse.feed(stream[split:]) + sse.finish()
        assert chunked == whole, f"split at byte {split}"

    sse = SseListFilter(one())
    byte_by_byte = b"".join(sse.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert byte_by_byte + sse.finish() == whole


def test_sse_multibyte_name_split_inside_a_character() -> None:
    message = compact(list_response("tools/list", ["ok-工具", "no-工具"]))
    stream = b"data: " + message + b"\n\n"
    split = stream.index("工".encode()) + 1
    sse = SseListFilter(one())
    out = sse.feed(stream[:split]) + sse.feed(stream[split:]) + sse.finish()
    assert json.loads(out.removeprefix(b"data: "))["result"]["tools"] == [
        {"name": "ok-工具", "description": "d"}
    ]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b"id: 5\ndata: partial", b"id: 5\ndata: partial"),
        (b"data: " + PROGRESS + b"\n", b"data: " + PROGRESS + b"\n"),
        (b"data: " + RESPONSE[:-3], b"data: " + RESPONSE[:-3]),
        (b"id: 5\r\ndata: " + RESPONSE + b"\r\n", b"id: 5\r\ndata: " + FILTERED),
        (b"data: " + RESPONSE, b"data: " + FILTERED),
    ],
    ids=["partial", "line-ended", "truncated-response", "whole-response-crlf", "whole-response"],
)
def test_sse_finish_returns_the_unterminated_tail(tail: bytes, expected: bytes) -> None:
    sse = SseListFilter(one())
    assert sse.feed(b"id: 0\ndata:\n\n" + tail) == b"id: 0\ndata:\n\n"
    assert sse.finish() == expected


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: " + RESPONSE + b"\n\n"],
        [b"data: " + PROGRESS + b" " * 30 + b"\n\n"],
        [b": " + b"x" * 200 + b"\n\n"],
        [b"data: " + RESPONSE[:50], RESPONSE[50:]],
        [b"x" * 60, b"x" * 60],
    ],
    ids=["response", "notification", "comment", "incomplete-response", "incomplete-garbage"],
)
def test_sse_event_over_max_bytes_fails_closed(chunks: list[bytes]) -> None:
    sse = SseListFilter(one(), max_bytes=100)
    assert sse.feed(b"id: 0\ndata:\n\n") == b"id: 0\ndata:\n\n"
    *head, last = chunks
    for chunk in head:
        assert sse.feed(chunk) == b""
    with pytest.raises(ListFilterError):
        sse.feed(last)


def test_sse_event_at_max_bytes_is_filtered() -> None:
    event = b"data: " + RESPONSE + b"\n\n"
    sse = SseListFilter(one(), max_bytes=len(event))
    assert sse.feed(event) == b"data: " + FILTERED + b"\n\n"


def test_list_filter_error_is_a_value_error() -> None:
    assert issubclass(ListFilterError, ValueError)


# --- batches: several list calls in one request -----------------------------------------------

ALL_LISTS = ListFilter(
    calls={
        1: ("tools/list", allowed),
        "r": ("resources/list", allowed),
        3: ("resources/templates/list", allowed),
        "p": ("prompts/list", allowed),
    }
)


def batch_reply() -> list[Any]:
    return [
        list_response("tools/list", ["ok-a", "no-b"], 1),
        list_response("resources/list", ["no://x", "ok://y"], "r", nextCursor="c"),
        list_response("resources/templates/list", ["ok://{z}", "no://{w}"], 3),
        list_response("prompts/list", ["no", "ok"], "p"),
        {"jsonrpc": "2.0", "id": 5, "result": {"tools": [{"name": "no-call-result"}]}},
        {"jsonrpc": "2.0", "id": "r2", "error": {"code": -32601, "message": "nope"}},
    ]


def filtered_batch_reply() -> list[Any]:
    reply = batch_reply()
    reply[:4] = [
        list_response("tools/list", ["ok-a"], 1),
        list_response("resources/list", ["ok://y"], "r", nextCursor="c"),
        list_response("resources/templates/list", ["ok://{z}"], 3),
        list_response("prompts/list", ["ok"], "p"),
    ]
    return reply


def test_filter_payload_filters_every_list_response_of_a_batch_reply() -> None:
    assert filter_payload(ALL_LISTS, batch_reply()) == filtered_batch_reply()


def test_filter_payload_leaves_a_batch_reply_without_list_responses() -> None:
    assert filter_payload(ALL_LISTS, batch_reply()[4:]) is None
    assert filter_payload(ListFilter(), batch_reply()) is None


def test_filter_payload_filters_a_single_message_by_its_own_call() -> None:
    message = list_response("prompts/list", ["no", "ok"], "p")
    assert filter_payload(ALL_LISTS, message) == list_response("prompts/list", ["ok"], "p")
    # The same items under the id of another list call are read by that call's fields.
    assert filter_payload(ALL_LISTS, {**message, "id": 1}) is None


def test_filter_json_body_filters_a_batch_reply() -> None:
    assert filter_json_body(ALL_LISTS, compact(batch_reply())) == compact(filtered_batch_reply())


def test_filter_json_body_over_max_bytes_fails_closed_for_a_batch_reply() -> None:
    body = compact(batch_reply())
    with pytest.raises(ListFilterError):
        filter_json_body(ALL_LISTS, body, max_bytes=len(body) - 1)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_sse_filters_a_batch_reply_in_one_event_or_in_many(newline: bytes) -> None:
    reply, expected = batch_reply(), filtered_batch_reply()
    one_event = b"data: " + compact(reply) + newline * 2
    sse = SseListFilter(ALL_LISTS)
    assert sse.feed(one_event) + sse.finish() == b"data: " + compact(expected) + newline * 2
    many = b"".join(b"id: %d%sdata: %s%s" % (i, newline, compact(m), newline * 2)
                    for i, m in enumerate(reply))  # fmt: skip
    sse = SseListFilter(ALL_LISTS)
    out = b"".join(sse.feed(many[i : i + 7]) for i in range(0, len(many), 7)) + sse.finish()
    assert out == b"".join(b"id: %d%sdata: %s%s" % (i, newline, compact(m), newline * 2)
                           for i, m in enumerate(expected))  # fmt: skip


# --- a GET stream: responses replayed there are filtered by their shape ---------------------

REPLAYED = ListFilter(replayed=dict.fromkeys(LIST_FIELDS, allowed))


@pytest.mark.parametrize("method", list(LIST_FIELDS))
@pytest.mark.parametrize("rpc_id", [1, "x", None], ids=["int-id", "str-id", "null-id"])
def test_replayed_list_responses_are_filtered_whatever_their_id(
    method: str, rpc_id: object
) -> None:
    message = list_response(method, ["ok-1", "no-2"], rpc_id, nextCursor="c")
    expected = list_response(method, ["ok-1"], rpc_id, nextCursor="c")
    assert filter_message(REPLAYED, message) == expected


def test_a_replayed_result_holding_several_lists_has_each_filtered() -> None:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tools": [{"name": "ok"}, {"name": "no"}], "prompts": [{"name": "no"}]},
    }
    assert filter_message(REPLAYED, message) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tools": [{"name": "ok"}], "prompts": []},
    }


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "no"}]}},
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "m"}},
        {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
        {"jsonrpc": "2.0", "id": 2, "method": "x", "params": {"tools": [{"name": "no"}]}},
        {"jsonrpc": "2.0", "id": 1, "result": {"tools": {"name": "no"}}},
    ],
    ids=["other-result", "error", "notification", "server-request", "array-not-list"],
)
def test_replayed_filtering_leaves_other_messages(message: object) -> None:
    assert filter_message(REPLAYED, message) is None


def test_an_sse_stream_replaying_a_list_is_filtered() -> None:
    sse = SseListFilter(REPLAYED)
    stream = b"id: e1\ndata: " + RESPONSE + b"\n\nid: e2\ndata: " + PROGRESS + b"\n\n"
    assert sse.feed(stream) + sse.finish() == (
        b"id: e1\ndata: " + FILTERED + b"\n\nid: e2\ndata: " + PROGRESS + b"\n\n"
    )


@pytest.mark.parametrize("lists", [one(), REPLAYED], ids=["by-id", "replayed"])
@pytest.mark.parametrize("scope", ["public", "private"])
def test_a_filtered_list_is_never_cacheable_across_callers(lists: ListFilter, scope: str) -> None:
    """2026-07-28: a `public` list may be served by shared caches to any caller; once filtered
    for one caller it is that caller's alone."""
    message = list_response("tools/list", ["ok-a"], 1, cacheScope=scope, ttlMs=60_000)
    assert filter_message(lists, message) == {
        **message,
        "result": {**message["result"], "cacheScope": "private"},
    }


def test_a_list_without_cache_scope_gets_none() -> None:
    assert "cacheScope" not in filter_message(one(), TOOLS)["result"]  # type: ignore[index]


# --- annotation of entries shown but not held ---------------------------------------------


def test_an_entry_shown_but_not_held_carries_the_scopes_it_needs() -> None:
    message = list_response("tools/list", ["ok-a", "up-b", "no-c"])
    message["result"]["tools"][1]["_meta"] = {"vendor/x": 1}
    assert filter_message(one(), message) == {"jsonrpc": "2.0", "id": 1, "result": {"tools": [
        {"name": "ok-a", "description": "d"},
        {"name": "up-b", "description": "d",
         "_meta": {"vendor/x": 1, REQUIRED_SCOPES_META: ["files:read", "files:write"]}},
    ]}}  # fmt: skip


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({REQUIRED_SCOPES_META: ["nothing"]}, {}),
        ({REQUIRED_SCOPES_META: ["nothing"], "vendor/x": 1}, {"vendor/x": 1}),
    ],
    ids=["only-ours", "ours-and-others"],
)
def test_an_upstreams_own_required_scopes_are_dropped_from_held_entries(
    meta: dict[str, Any], expected: dict[str, Any]
) -> None:
    message = list_response("tools/list", ["ok-a"])
    message["result"]["tools"][0]["_meta"] = meta
    [item] = filter_message(one(), message)["result"]["tools"]  # type: ignore[index]
    assert item == {"name": "ok-a", "description": "d", "_meta": expected}


def test_an_upstreams_own_required_scopes_are_replaced_on_annotated_entries() -> None:
    message = list_response("tools/list", ["up-a"])
    message["result"]["tools"][0]["_meta"] = {REQUIRED_SCOPES_META: []}
    [item] = filter_message(one(), message)["result"]["tools"]  # type: ignore[index]
    assert item["_meta"] == {REQUIRED_SCOPES_META: ["files:read", "files:write"]}


def test_a_meta_that_is_not_an_object_is_replaced_when_annotating() -> None:
    message = list_response("tools/list", ["up-a", "ok-b"])
    for item in message["result"]["tools"]:
        item["_meta"] = "odd"
    assert filter_message(one(), message)["result"]["tools"] == [  # type: ignore[index]
        {
            "name": "up-a",
            "description": "d",
            "_meta": {REQUIRED_SCOPES_META: ["files:read", "files:write"]},
        },
        {"name": "ok-b", "description": "d", "_meta": "odd"},
    ]


def test_sse_and_replayed_lists_are_annotated_too() -> None:
    body = compact(list_response("prompts/list", ["up-p", "no-q"], 9))
    sse = SseListFilter(ListFilter(replayed=dict.fromkeys(LIST_FIELDS, allowed)))
    out = sse.feed(b"id: 1\ndata: " + body + b"\n\n") + sse.finish()
    assert out == b"id: 1\ndata: " + compact(
        {"jsonrpc": "2.0", "id": 9, "result": {"prompts": [
            {"name": "up-p", "description": "d",
             "_meta": {REQUIRED_SCOPES_META: ["files:read", "files:write"]}}]}}
    ) + b"\n\n"  # fmt: skip
