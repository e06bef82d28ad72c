from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.mcp_request import (
    McpCall,
    McpRequestError,
    ToolHeaders,
    decode_header_value,
    inspect_request,
    is_stateless_era,
)

MODERN = "2026-07-28"
LEGACY = "2025-11-25"


def request(method: str, params: Any = None, rpc_id: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: Any = None) -> dict[str, Any]:
    message = request(method, params)
    del message["id"]
    return message


def result(rpc_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "result": {}}


def modern(method: str | None = None, name: str | None = None, **extra: str) -> dict[str, str]:
    """Headers of a modern request; keyword names map to lower-case header names."""
    headers = {"mcp-protocol-version": MODERN}
    if method is not None:
        headers["mcp-method"] = method
    if name is not None:
        headers["mcp-name"] = name
    headers.update({key.replace("_", "-"): value for key, value in extra.items()})
    return headers


def b64(value: str) -> str:
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def legacy(version: str = LEGACY) -> dict[str, str]:
    return {"mcp-protocol-version": version}


NO_HEADERS: dict[str, str] = {}
CALL = request("tools/call", {"name": "get_weather", "arguments": {"location": "Seattle"}})
FILE = "file:///projects/app/config.json"


@pytest.mark.parametrize(
    ("payload", "headers", "expected"),
    [
        pytest.param(
            CALL,
            modern("tools/call", "get_weather"),
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="modern-tools-call",
        ),
        pytest.param(
            request("prompts/get", {"name": "summary"}, "p-1"),
            modern("prompts/get", "summary"),
            [McpCall("prompts/get", "summary", "p-1", "request")],
            id="modern-prompts-get",
        ),
        pytest.param(
            request("resources/read", {"uri": FILE}),
            modern("resources/read", FILE),
            [McpCall("resources/read", FILE, 1, "request")],
            id="modern-resources-read",
        ),
        pytest.param(
            request("resources/subscribe", {"uri": FILE}),
            modern("resources/subscribe"),
            [McpCall("resources/subscribe", FILE, 1, "request")],
            id="subscribe-name-header-optional",
        ),
        pytest.param(
            request("resources/unsubscribe", {"uri": FILE}),
            modern("resources/unsubscribe", FILE),
            [McpCall("resources/unsubscribe", FILE, 1, "request")],
            id="unsubscribe-name-header-checked",
        ),
        pytest.param(
            request("tools/list", {}, 0),
            modern("tools/list"),
            [McpCall("tools/list", None, 0, "request")],
            id="modern-unnamed-method",
        ),
        pytest.param(
            request("tools/list", [], -5),
            modern("tools/list"),
            [McpCall("tools/list", None, -5, "request")],
            id="array-params-negative-id",
        ),
        pytest.param(
            notification("notifications/initialized"),
            modern(),
            [McpCall("notifications/initialized", None, None, "notification")],
            id="modern-notification-without-headers",
        ),
        pytest.param(
            notification("notifications/cancelled", {"requestId": 1}),
            modern("notifications/cancelled"),
            [McpCall("notifications/cancelled", None, None, "notification")],
            id="modern-notification-with-method-header",
        ),
        pytest.param(
            notification("tools/call", {"name": "rm"}),
            NO_HEADERS,
            [McpCall("tools/call", "rm", None, "notification")],
            id="named-notification-keeps-name",
        ),
        pytest.param(
            CALL,
            NO_HEADERS,
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="no-version-header-needs-no-metadata",
        ),
        pytest.param(
            CALL,
            legacy(),
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="legacy-needs-no-metadata",
        ),
        pytest.param(
            CALL,
            legacy() | {"mcp-method": "tools/call", "mcp-name": "get_weather"},
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="legacy-with-matching-metadata",
        ),
        pytest.param(
            result("r"),
            legacy(),
            [McpCall("", None, "r", "response")],
            id="legacy-result",
        ),
        pytest.param(
            {"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "x"}},
            legacy(),
            [McpCall("", None, None, "response")],
            id="legacy-error-with-null-id",
        ),
        pytest.param(
            CALL,
            modern("tools/call", "get_weather", mcp_protocol_version="2027-01-01"),
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="later-version-is-modern",
        ),
        pytest.param(
            request(
                "tools/call",
                {
                    "name": "get_weather",
                    "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN},
                },
            ),
            modern("tools/call", "get_weather"),
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="meta-version-matches-header",
        ),
        pytest.param(
            [CALL, notification("notifications/initialized"), result(7)],
            NO_HEADERS,
            [
                McpCall("tools/call", "get_weather", 1, "request"),
                McpCall("notifications/initialized", None, None, "notification"),
                McpCall("", None, 7, "response"),
            ],
            id="batch-without-version-header",
        ),
        pytest.param(
            [CALL],
            legacy("2025-03-26"),
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="batch-at-2025-03-26",
        ),
        # Removed at 2026-07-28 (replaced by subscriptions/listen): unknown methods, forwarded
        # for the upstream's own 404 -32601; still named when they name something.
        pytest.param(
            request("resources/subscribe", {}),
            modern("resources/subscribe"),
            [McpCall("resources/subscribe", None, 1, "request")],
            id="modern-subscribe-without-uri",
        ),
        pytest.param(
            request("resources/unsubscribe"),
            modern("resources/unsubscribe"),
            [McpCall("resources/unsubscribe", None, 1, "request")],
            id="modern-unsubscribe-without-params",
        ),
        pytest.param(
            request("resources/subscribe", {"uri": 7}),
            modern("resources/subscribe"),
            [McpCall("resources/subscribe", None, 1, "request")],
            id="modern-subscribe-number-uri",
        ),
        pytest.param(
            request("resources/subscribe", {"uri": FILE}),
            modern("resources/subscribe"),
            [McpCall("resources/subscribe", FILE, 1, "request")],
            id="modern-subscribe-still-named",
        ),
        # A version the gateway does not know is the upstream's to refuse (-32022, listing
        # its supported versions): forwarded, with the headers present still checked.
        pytest.param(
            CALL,
            {"mcp-protocol-version": "v999.0.0"},
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="version-not-a-date",
        ),
        pytest.param(
            CALL,
            {
                "mcp-protocol-version": "v999.0.0",
                "mcp-method": "tools/call",
                "mcp-name": "get_weather",
            },
            [McpCall("tools/call", "get_weather", 1, "request")],
            id="version-not-a-date-with-matching-headers",
        ),
        pytest.param(
            request("ping"),
            {"mcp-protocol-version": "latest"},
            [McpCall("ping", None, 1, "request")],
            id="version-a-word",
        ),
        pytest.param(
            request("ping"),
            {"mcp-protocol-version": ""},
            [McpCall("ping", None, 1, "request")],
            id="version-empty",
        ),
        pytest.param(
            request("ping"),
            {"mcp-protocol-version": "1900-01-01"},
            [McpCall("ping", None, 1, "request")],
            id="version-an-old-date",
        ),
    ],
)
def test_inspect_request_accepts(
    payload: object, headers: Mapping[str, str], expected: list[McpCall]
) -> None:
    assert inspect_request(payload, headers) == tuple(expected)


def error_case(
    payload: object, headers: Mapping[str, str], code: int, reason: str, rpc_id: Any, id: str
) -> Any:
    return pytest.param(payload, headers, code, reason, rpc_id, id=id)


MISMATCH = -32020


@pytest.mark.parametrize(
    ("payload", "headers", "code", "reason", "rpc_id"),
    [
        # JSON-RPC 2.0 shape
        error_case(None, NO_HEADERS, -32600, "not_jsonrpc", None, "null-body"),
        error_case("tools/call", NO_HEADERS, -32600, "not_jsonrpc", None, "string-body"),
        error_case(
            {"id": 1, "method": "ping"}, NO_HEADERS, -32600, "not_jsonrpc", None, "no-version"
        ),
        error_case(
            {"jsonrpc": "1.0", "id": 1, "method": "ping"},
            NO_HEADERS,
            -32600,
            "not_jsonrpc",
            None,
            "wrong-version",
        ),
        error_case(request("ping", rpc_id=None), NO_HEADERS, -32600, "invalid_id", None, "id-null"),
        error_case(request("ping", rpc_id=True), NO_HEADERS, -32600, "invalid_id", None, "id-bool"),
        error_case(request("ping", rpc_id=1.0), NO_HEADERS, -32600, "invalid_id", None, "id-float"),
        error_case(request("ping", rpc_id=[1]), NO_HEADERS, -32600, "invalid_id", None, "id-array"),
        error_case(request(7), NO_HEADERS, -32600, "invalid_method", 1, "method-number"),  # type: ignore[arg-type]
        error_case(
            {"jsonrpc": "2.0", "id": "a", "method": None},
            NO_HEADERS,
            -32600,
            "invalid_method",
            "a",
            "method-null",
        ),
        error_case(request("ping", "x"), NO_HEADERS, -32600, "invalid_params", 1, "params-string"),
        error_case(
            {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": None},
            NO_HEADERS,
            -32600,
            "invalid_params",
            1,
            "params-null",
        ),
        error_case(
            {"jsonrpc": "2.0", "id": 1}, legacy(), -32600, "invalid_response", 1, "no-result"
        ),
        error_case(
            {"jsonrpc": "2.0", "result": {}}, legacy(), -32600, "invalid_response", None, "no-id"
        ),
        error_case(
            {"jsonrpc": "2.0", "id": 2, "result": {}, "error": {}},
            legacy(),
            -32600,
            "invalid_response",
            2,
            "result-and-error",
        ),
        error_case(result(3), modern(), -32600, "response_not_allowed", 3, "modern-response"),
        # Protocol version and batching
        error_case(
            CALL,
            {"mcp-protocol-version": "2026-07-28\x00"},
            -32600,
            "invalid_protocol_version",
            None,
            "version-with-nul",
        ),
        error_case(
            CALL,
            {"mcp-protocol-version": "v999\x7f"},
            -32600,
            "invalid_protocol_version",
            None,
            "version-with-del",
        ),
        error_case(
            CALL,
            {"mcp-protocol-version": "v999\r\nX-Injected: 1"},
            -32600,
            "invalid_protocol_version",
            None,
            "version-with-crlf",
        ),
        error_case(
            CALL,
            {"mcp-protocol-version": "\uff12\uff10\uff12\uff16-07-28"},
            -32600,
            "invalid_protocol_version",
            None,
            "version-non-ascii-digits",
        ),
        error_case([CALL], legacy(), -32600, "batch_not_allowed", None, "batch-2025-11-25"),
        error_case(
            [CALL], legacy("2025-06-18"), -32600, "batch_not_allowed", None, "batch-2025-06-18"
        ),
        error_case(
            [CALL],
            modern("tools/call", "get_weather"),
            -32600,
            "batch_not_allowed",
            None,
            "batch-modern",
        ),
        error_case([], legacy(), -32600, "batch_not_allowed", None, "empty-batch-2025-11-25"),
        error_case(
            [CALL], legacy("v999.0.0"), -32600, "batch_not_allowed", None, "batch-unknown-version"
        ),
        error_case(
            CALL,
            {"mcp-protocol-version": "v999.0.0", "mcp-method": "tools/list"},
            MISMATCH,
            "header_mismatch",
            1,
            "unknown-version-method-header-checked",
        ),
        error_case(
            CALL,
            {"mcp-protocol-version": "v999.0.0", "mcp-name": "other"},
            MISMATCH,
            "header_mismatch",
            1,
            "unknown-version-name-header-checked",
        ),
        error_case(
            request("tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}),
            {"mcp-protocol-version": "v999.0.0"},
            MISMATCH,
            "header_mismatch",
            1,
            "unknown-version-meta-checked",
        ),
        error_case(
            request("resources/subscribe", {}),
            modern("resources/subscribe", FILE),
            MISMATCH,
            "header_mismatch",
            1,
            "modern-subscribe-name-header-without-uri",
        ),
        error_case(
            request("resources/subscribe", {}),
            legacy(),
            -32602,
            "invalid_name",
            1,
            "legacy-subscribe-without-uri",
        ),
        error_case([], NO_HEADERS, -32600, "empty_batch", None, "empty-batch-2025-03-26"),
        error_case(
            [CALL, request("ping", rpc_id=False)],
            NO_HEADERS,
            -32600,
            "invalid_id",
            None,
            "bad-id-in-batch",
        ),
        error_case(
            [CALL, request("tools/call", {}, 9)],
            NO_HEADERS,
            -32602,
            "invalid_name",
            9,
            "bad-name-in-batch",
        ),
        error_case([CALL, 1], NO_HEADERS, -32600, "not_jsonrpc", None, "number-in-batch"),
        # Names
        error_case(
            request("tools/call", {"arguments": {}}),
            NO_HEADERS,
            -32602,
            "invalid_name",
            1,
            "tools-call-no-name",
        ),
        error_case(
            request("tools/call", {"name": ""}),
            NO_HEADERS,
            -32602,
            "invalid_name",
            1,
            "tools-call-empty-name",
        ),
        error_case(
            request("tools/call", {"name": ["a"]}),
            NO_HEADERS,
            -32602,
            "invalid_name",
            1,
            "tools-call-array-name",
        ),
        error_case(
            request("tools/call", ["get_weather"]),
            NO_HEADERS,
            -32602,
            "invalid_name",
            1,
            "tools-call-array-params",
        ),
        error_case(
            request("tools/call"), NO_HEADERS, -32602, "invalid_name", 1, "tools-call-no-params"
        ),
        error_case(
            request("prompts/get", {"name": 3}),
            NO_HEADERS,
            -32602,
            "invalid_name",
            1,
            "prompts-get-number-name",
        ),
        error_case(
            request("resources/read", {"name": FILE}),
            NO_HEADERS,
            -32602,
            "invalid_name",
            1,
            "resources-read-name-instead-of-uri",
        ),
        error_case(
            request("resources/subscribe", {"uri": ""}),
            NO_HEADERS,
            -32602,
            "invalid_name",
            1,
            "resources-subscribe-empty-uri",
        ),
        error_case(
            request("resources/unsubscribe", {}),
            NO_HEADERS,
            -32602,
            "invalid_name",
            1,
            "resources-unsubscribe-no-uri",
        ),
        error_case(
            notification("tools/call", {}),
            NO_HEADERS,
            -32602,
            "invalid_name",
            None,
            "named-notification-without-name",
        ),
    ],
)
def test_inspect_request_rejects(
    payload: object, headers: Mapping[str, str], code: int, reason: str, rpc_id: object
) -> None:
    with pytest.raises(McpRequestError) as caught:
        inspect_request(payload, headers)
    assert (caught.value.jsonrpc_code, caught.value.reason, caught.value.rpc_id) == (
        code,
        reason,
        rpc_id,
    )


NON_ASCII = "天気"
SENTINEL_LOOKALIKE = "=?base64?Z2V0X3dlYXRoZXI=?="  # the literal text; decodes to "get_weather"


@pytest.mark.parametrize(
    ("payload", "headers"),
    [
        pytest.param(
            request("tools/call", {"name": NON_ASCII}),
            modern("tools/call", b64(NON_ASCII)),
            id="non-ascii-name-encoded",
        ),
        pytest.param(CALL, modern("tools/call", b64("get_weather")), id="ascii-name-encoded"),
        pytest.param(
            request("tools/call", {"name": SENTINEL_LOOKALIKE}),
            modern("tools/call", b64(SENTINEL_LOOKALIKE)),
            id="sentinel-lookalike-name-encoded-again",
        ),
        pytest.param(
            request("tools/call", {"name": " padded "}),
            modern("tools/call", b64(" padded ")),
            id="padded-name-encoded",
        ),
        pytest.param(
            request("resources/read", {"uri": "file:///données/é.txt"}),
            modern("resources/read", b64("file:///données/é.txt")),
            id="non-ascii-uri-encoded",
        ),
        pytest.param(
            request("tools/call", {"name": "a=?base64?b"}),
            modern("tools/call", "a=?base64?b"),
            id="marker-inside-plain-name",
        ),
        pytest.param(
            request("tools/call", {"name": "=?base64?="}),
            modern("tools/call", "=?base64?="),
            id="overlapping-markers-are-plain",
        ),
    ],
)
def test_inspect_request_accepts_encoded_names(
    payload: dict[str, Any], headers: Mapping[str, str]
) -> None:
    (call,) = inspect_request(payload, headers)
    assert call.name == payload["params"].get("name", payload["params"].get("uri"))


@pytest.mark.parametrize(
    ("payload", "headers"),
    [
        pytest.param(CALL, modern(), id="missing-method-and-name"),
        pytest.param(CALL, modern(name="get_weather"), id="missing-method"),
        pytest.param(CALL, modern("tools/call"), id="missing-name-tools-call"),
        pytest.param(
            request("prompts/get", {"name": "p"}), modern("prompts/get"), id="missing-name-prompts"
        ),
        pytest.param(
            request("resources/read", {"uri": FILE}),
            modern("resources/read"),
            id="missing-name-resources-read",
        ),
        pytest.param(request("tools/list"), modern(), id="missing-method-unnamed"),
        pytest.param(
            CALL,
            modern("tools/call", mcp_protocol_version="2027-01-01"),
            id="missing-name-later-version",
        ),
        pytest.param(CALL, modern("tools/list", "get_weather"), id="wrong-method"),
        pytest.param(CALL, modern("Tools/Call", "get_weather"), id="method-case-differs"),
        pytest.param(CALL, modern("tools/call", "delete_everything"), id="wrong-name"),
        pytest.param(CALL, modern("tools/call", "Get_Weather"), id="name-case-differs"),
        pytest.param(CALL, modern("tools/call", b64("delete_everything")), id="wrong-name-encoded"),
        pytest.param(
            request("tools/call", {"name": SENTINEL_LOOKALIKE}),
            modern("tools/call", SENTINEL_LOOKALIKE),
            id="matches-only-if-not-decoded",
        ),
        pytest.param(
            request("tools/call", {"name": NON_ASCII}),
            modern("tools/call", NON_ASCII),
            id="non-ascii-name-sent-raw",
        ),
        pytest.param(
            request("tools/call", {"name": "a\nb"}),
            modern("tools/call", "a\nb"),
            id="control-character-sent-raw",
        ),
        pytest.param(CALL, modern("tools/call", "=?base64?Z2V0X3dlYXRoZXI?="), id="bad-padding"),
        pytest.param(CALL, modern("tools/call", "=?base64?Z2V0X3dl*XRoZXI=?="), id="bad-alphabet"),
        pytest.param(CALL, modern("tools/call", "=?BASE64?Z2V0X3dlYXRoZXI=?="), id="upper-marker"),
        pytest.param(
            request("tools/call", {"name": "x"}),
            modern("tools/call", "=?base64?/w==?="),
            id="encoded-bytes-not-utf8",
        ),
        pytest.param(
            request("tools/list"), modern("tools/list", "get_weather"), id="name-on-unnamed-method"
        ),
        pytest.param(
            request("resources/subscribe", {"uri": FILE}),
            modern("resources/subscribe", "file:///other"),
            id="wrong-uri-on-subscribe",
        ),
        pytest.param(
            notification("notifications/initialized"),
            modern("notifications/cancelled"),
            id="wrong-method-on-notification",
        ),
        pytest.param(
            CALL,
            legacy() | {"mcp-method": "tools/call", "mcp-name": "other"},
            id="legacy-mismatch-when-present",
        ),
        pytest.param(
            [CALL, request("tools/list", rpc_id=2)],
            {"mcp-method": "tools/call"},
            id="batch-method-header-matches-one",
        ),
        pytest.param(
            request(
                "tools/call",
                {
                    "name": "get_weather",
                    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-08-01"},
                },
            ),
            modern("tools/call", "get_weather"),
            id="meta-version-differs",
        ),
        pytest.param(
            request(
                "tools/call",
                {
                    "name": "get_weather",
                    "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN},
                },
            ),
            NO_HEADERS,
            id="meta-version-without-header",
        ),
    ],
)
def test_inspect_request_rejects_header_mismatch(
    payload: object, headers: Mapping[str, str]
) -> None:
    with pytest.raises(McpRequestError) as caught:
        inspect_request(payload, headers)
    assert (caught.value.jsonrpc_code, caught.value.reason) == (MISMATCH, "header_mismatch")
    offending = payload[-1] if isinstance(payload, list) else payload  # batches fail on the last
    assert isinstance(offending, dict)
    assert caught.value.rpc_id == offending.get("id")


TOOL_HEADERS: ToolHeaders = {
    "execute_sql": {"Region": ("region",), "Shard": ("target", "shard"), "DryRun": ("dry_run",)}
}


def sql(**arguments: Any) -> dict[str, Any]:
    return request("tools/call", {"name": "execute_sql", "arguments": arguments})


SQL = modern("tools/call", "execute_sql")


@pytest.mark.parametrize(
    ("payload", "headers", "ok"),
    [
        pytest.param(sql(query="q"), SQL, True, id="no-annotated-values-no-headers"),
        pytest.param(
            sql(region="us-west1"), SQL | {"mcp-param-region": "us-west1"}, True, id="string"
        ),
        pytest.param(
            sql(region="eu"), SQL | {"mcp-param-region": "us-west1"}, False, id="string-differs"
        ),
        pytest.param(sql(region="us-west1"), SQL, False, id="header-omitted"),
        pytest.param(
            sql(), SQL | {"mcp-param-region": "us-west1"}, False, id="header-without-value"
        ),
        pytest.param(sql(region=None), SQL, True, id="null-value-no-header"),
        pytest.param(
            sql(region="Hello, 世界"),
            SQL | {"mcp-param-region": "=?base64?SGVsbG8sIOS4lueVjA==?="},
            True,
            id="spec-example-encoded",
        ),
        pytest.param(
            sql(region="Hello, 世界"),
            SQL | {"mcp-param-region": "Hello, 世界"},
            False,
            id="raw-non-ascii",
        ),
        pytest.param(
            sql(target={"shard": 42}), SQL | {"mcp-param-shard": "42"}, True, id="nested-int"
        ),
        pytest.param(
            sql(target={"shard": 42}), SQL | {"mcp-param-shard": "42.0"}, True, id="int-numerically"
        ),
        pytest.param(
            sql(target={"shard": 42}), SQL | {"mcp-param-shard": "43"}, False, id="int-differs"
        ),
        pytest.param(
            sql(target={"shard": 42}), SQL | {"mcp-param-shard": " 42"}, False, id="int-padded"
        ),
        pytest.param(
            sql(target={"shard": 42}), SQL | {"mcp-param-shard": "4_2"}, False, id="int-underscore"
        ),
        pytest.param(
            sql(target={"shard": 1.5}), SQL | {"mcp-param-shard": "1.50"}, True, id="number"
        ),
        pytest.param(
            sql(target=[42]), SQL | {"mcp-param-shard": "42"}, False, id="path-through-array"
        ),
        pytest.param(
            sql(target={"shard": {"x": 1}}),
            SQL | {"mcp-param-shard": "{}"},
            False,
            id="object-value",
        ),
        pytest.param(sql(dry_run=True), SQL | {"mcp-param-dryrun": "true"}, True, id="bool-true"),
        pytest.param(
            sql(dry_run=False), SQL | {"mcp-param-dryrun": "false"}, True, id="bool-false"
        ),
        pytest.param(
            sql(dry_run=True), SQL | {"mcp-param-dryrun": "1"}, False, id="bool-as-number"
        ),
        pytest.param(
            sql(dry_run=1), SQL | {"mcp-param-dryrun": "true"}, False, id="number-as-bool"
        ),
        pytest.param(
            request("tools/call", {"name": "other", "arguments": {"region": "x"}}),
            modern("tools/call", "other", mcp_param_region="y"),
            True,
            id="unannotated-tool-header-ignored",
        ),
        pytest.param(
            sql(region="eu"),
            legacy() | {"mcp-param-region": "us"},
            True,
            id="legacy-param-headers-ignored",
        ),
    ],
)
def test_inspect_request_param_headers(
    payload: dict[str, Any], headers: Mapping[str, str], ok: bool
) -> None:
    if ok:
        assert inspect_request(payload, headers, tool_headers=TOOL_HEADERS)
        return
    with pytest.raises(McpRequestError) as caught:
        inspect_request(payload, headers, tool_headers=TOOL_HEADERS)
    assert caught.value.reason == "header_mismatch"


def test_param_headers_unchecked_without_tool_schema() -> None:
    headers = SQL | {"mcp-param-region": "us"}
    assert inspect_request(sql(region="eu"), headers) == (
        McpCall("tools/call", "execute_sql", 1, "request"),
    )


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("plain", "plain"),
        ("", ""),
        ("=?base64?SGVsbG8sIOS4lueVjA==?=", "Hello, 世界"),
        ("=?base64?IHBhZGRlZCA=?=", " padded "),
        ("=?base64?bGluZTEKbGluZTI=?=", "line1\nline2"),
        ("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=", "=?base64?literal?="),
        ("=?base64??=", ""),
        ("=?base64?SGk?=", None),
        ("=?base64?SGk=\n?=", None),
        ("tab\tok", "tab\tok"),
        ("new\nline", None),
        ("é", None),
    ],
    ids=[
        "plain",
        "empty",
        "spec-non-ascii",
        "spec-padded",
        "spec-newline",
        "spec-sentinel-lookalike",
        "encoded-empty",
        "missing-padding",
        "newline-in-base64",
        "tab-allowed",
        "raw-newline",
        "raw-non-ascii",
    ],
)
def test_decode_header_value(value: str, decoded: str | None) -> None:
    assert decode_header_value(value) == decoded


@pytest.mark.parametrize(
    ("version", "stateless"),
    [
        pytest.param(None, False, id="absent"),
        pytest.param("2025-03-26", False, id="2025-03-26"),
        pytest.param("2025-11-25", False, id="2025-11-25"),
        pytest.param("2026-07-28", True, id="2026-07-28"),
        pytest.param("2027-01-01", True, id="later-date"),
        pytest.param("v999.0.0", False, id="not-a-date"),
        pytest.param("2026-07-28 ", False, id="date-with-trailing-space"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_stateless_era(version: str | None, stateless: bool) -> None:
    assert is_stateless_era(version) is stateless
