from __future__ import annotations

import json

import pytest

from gateway.jsonrpc import MessageError, coerce_id, decode_json, error_body, parse_message


@pytest.mark.parametrize(
    ("body", "rpc_id", "method"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', 1, "tools/list"),
        (b'{"jsonrpc":"2.0","id":"a","method":"ping"}', "a", "ping"),
        (
            b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
            None,
            "notifications/initialized",
        ),
        (b'{"jsonrpc":"2.0","id":true,"method":7}', None, None),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"x"}', None, "x"),
        (b'[{"jsonrpc":"2.0","id":1,"method":"a"}]', None, None),
    ],
    ids=["int-id", "str-id", "notification", "bool-id-bad-method", "float-id", "batch"],
)
def test_parse_message(body: bytes, rpc_id: object, method: str | None) -> None:
    message = parse_message(body)
    assert message.rpc_id == rpc_id
    assert message.method == method
    assert message.payload == json.loads(body)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"", "parse"),
        (b"{", "parse"),
        (b"\xff", "parse"),
        (b"null", "invalid"),
        (b"[]", "invalid"),
        (b"[1]", "invalid"),
        (b"3", "invalid"),
    ],
    ids=["empty", "truncated", "not-utf8", "null", "empty-batch", "batch-of-number", "number"],
)
def test_parse_message_rejects(body: bytes, kind: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(body)
    assert caught.value.kind == kind


def test_error_body_is_a_jsonrpc_error() -> None:
    assert json.loads(error_body("x", -31050, "Upstream down", "upstream_unavailable")) == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {
            "code": -31050,
            "message": "Upstream down",
            "data": {"reason": "upstream_unavailable"},
        },
    }


@pytest.mark.parametrize(
    ("value", "expected"), [(1, 1), ("s", "s"), (True, None), (None, None), ([1], None)]
)
def test_coerce_id(value: object, expected: object) -> None:
    assert coerce_id(value) == expected


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[{"k":1,"k":1}]}}',
        b'[{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}]',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1,"\\u0061":2}}',
    ],
    ids=["top-level", "params-name", "nested-in-array", "in-batch", "escaped-spelling"],
)
def test_parse_message_rejects_duplicate_keys(body: bytes) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(body)
    assert caught.value.kind == "parse"


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[]" + b"}" * (depth - 1)


@pytest.mark.parametrize(
    ("body", "max_depth"),
    [
        (b"[" * 10_000 + b"]" * 10_000, 64),
        (b"[" * 100_000, 64),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 64),
        (_nested(65), 64),
        (_nested(4), 3),
        (b"[" * 100_000 + b"]" * 100_000, 1_000_000),
    ],
    ids=[
        "array-bomb",
        "unclosed-array-bomb",
        "object-bomb",
        "one-past-default",
        "one-past-custom",
        "deeper-than-the-interpreter-stack",
    ],
)
def test_parse_message_rejects_deep_nesting(body: bytes, max_depth: int) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(body, max_depth=max_depth)
    assert caught.value.kind == "parse"


@pytest.mark.parametrize(
    ("body", "max_depth"),
    [
        (_nested(64), 64),
        (_nested(3), 3),
        # Brackets inside strings are not nesting, even when there are many of them.
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"q":"' + b"[{" * 500 + b'"}}', 64),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"q":"\\"[[[[[["}}', 3),
        # Many containers side by side are wide, not deep.
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"r":[' + b"[]," * 500 + b"[]]}}", 64),
    ],
    ids=["at-default", "at-custom", "brackets-in-string", "escaped-quote", "wide"],
)
def test_parse_message_accepts_nesting_up_to_the_limit(body: bytes, max_depth: int) -> None:
    assert parse_message(body, max_depth=max_depth).payload == json.loads(body)


def _call(params: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + params + b"}"


@pytest.mark.parametrize(
    "body",
    [
        _call(b'{"name":"\\ud800"}'),
        _call(b'{"name":"read_\\uDFFF_file"}'),
        _call(b'{"name":"\\ude00\\ud83d"}'),
        _call(b'{"name":"\\ud83d x"}'),
        b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///\\udbff"}}',
        _call(b'{"name":"a","arguments":{"\\ud800":1}}'),
        _call(b'{"name":"a","arguments":{"deep":[[{"x":["\\uDC01"]}]]}}'),
        b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x\\ud800"}]',
        b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
    ],
    ids=[
        "high-alone",
        "low-alone-upper-case-escape",
        "pair-reversed",
        "high-then-other",
        "resource-uri",
        "object-key",
        "deep-in-arguments",
        "in-batch",
        "id",
    ],
)
def test_parse_message_rejects_lone_surrogates(body: bytes) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(body)
    assert (caught.value.kind, str(caught.value)) == ("parse", "LoneSurrogateError")


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (_call(b'{"name":"\\ud83d\\ude00"}'), "\U0001f600"),
        (_call(b'{"name":"\\uD83D\\uDE00"}'), "\U0001f600"),
        (_call('{"name":"\U0001f600"}'.encode()), "\U0001f600"),
        (_call(b'{"name":"\\\\ud800"}'), "\\ud800"),
        (_call(b'{"name":"\\ud7ff\\ue000"}'), "\ud7ff\ue000"),
    ],
    ids=["escaped-pair", "escaped-pair-upper", "raw-utf8", "escaped-backslash", "around-range"],
)
def test_parse_message_accepts_surrogate_pairs_and_lookalikes(body: bytes, value: str) -> None:
    assert parse_message(body).payload["params"]["name"] == value


@pytest.mark.parametrize(
    "constant", [b"NaN", b"Infinity", b"-Infinity"], ids=["nan", "infinity", "minus-infinity"]
)
@pytest.mark.parametrize(
    "template",
    [
        _call(b'{"name":"a","arguments":{"n":%s}}'),
        b'{"jsonrpc":"2.0","id":%s,"method":"ping"}',
        b'[{"jsonrpc":"2.0","method":"x","params":[[%s]]}]',
    ],
    ids=["argument", "id", "in-batch"],
)
def test_parse_message_rejects_non_finite_numbers(constant: bytes, template: bytes) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(template % constant)
    assert (caught.value.kind, str(caught.value)) == ("parse", "NonFiniteNumberError")


@pytest.mark.parametrize(
    ("body", "value"),
    [(b"3", 3), (b'"\\ud83d\\ude00"', "\U0001f600"), (b'{"a":[null]}', {"a": [None]})],
    ids=["number", "escaped-pair", "object"],
)
def test_decode_json_takes_any_json_value(body: bytes, value: object) -> None:
    assert decode_json(body) == value


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'"\\udc00"', "LoneSurrogateError"),
        (b"[NaN]", "NonFiniteNumberError"),
        (b'{"a":1,"a":2}', "DuplicateKeyError"),
        (b"[" * 65 + b"]" * 65, "NestingTooDeep"),
        (b"\xff", "UnicodeDecodeError"),
    ],
    ids=["lone-surrogate", "nan", "duplicate-key", "too-deep", "not-utf8"],
)
def test_decode_json_refuses_what_parsers_disagree_on(body: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        decode_json(body)
    assert (caught.value.kind, str(caught.value)) == ("parse", reason)
