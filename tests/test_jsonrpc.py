from __future__ import annotations

import json

import pytest

from gateway.jsonrpc import MessageError, coerce_id, error_body, parse_message


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
    assert json.loads(error_body("x", -32050, "Upstream down", "upstream_unavailable")) == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {
            "code": -32050,
            "message": "Upstream down",
            "data": {"reason": "upstream_unavailable"},
        },
    }


@pytest.mark.parametrize(
    ("value", "expected"), [(1, 1), ("s", "s"), (True, None), (None, None), ([1], None)]
)
def test_coerce_id(value: object, expected: object) -> None:
    assert coerce_id(value) == expected
