"""URL elicitation answers per protocol era, read back with the `mcp` SDK's own types (an
independent parser of what a client will receive)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp.shared.exceptions import UrlElicitationRequiredError
from mcp_types import ErrorData, InputRequiredResult

from gateway.errors import ElicitationRequiredError
from gateway.jsonrpc import parse_message
from gateway.mcp_request import inspect_request
from gateway.web.elicitation import NOT_ELICITABLE, elicitation_body
from gateway.web.error_response import error_answer
from gateway.web.exchange import RequestContext

URL = "https://gw.example/oauth/connect/start?ticket=abc"
MODERN = "2026-07-28"


def _error() -> ElicitationRequiredError:
    return ElicitationRequiredError(
        "no grant", url=URL, elicitation_id="el-1", message="Connect your GitHub account"
    )


def _context(
    method: str, version: str | None, capabilities: dict[str, Any] | None
) -> RequestContext:
    params: dict[str, Any] = {"name": "echo", "arguments": {}} if method == "tools/call" else {}
    if capabilities is not None:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": capabilities,
        }
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()
    message = parse_message(body)
    headers = {"mcp-protocol-version": version} if version else {}
    if version == MODERN:
        headers["mcp-method"] = method
        if method == "tools/call":
            headers["mcp-name"] = "echo"
    return RequestContext(
        "req", 0.0, message=message, calls=inspect_request(message.payload, headers)
    )


@pytest.mark.parametrize("version", [None, "2025-06-18", "2025-11-25"])
def test_session_eras_get_the_url_elicitation_required_error(version: str | None) -> None:
    body = json.loads(elicitation_body(_error(), _context("tools/call", version, None), version))
    assert body["id"] == 7
    raised = UrlElicitationRequiredError.from_error(ErrorData.model_validate(body["error"]))
    [elicitation] = raised.elicitations
    assert (elicitation.url, elicitation.elicitation_id) == (URL, "el-1")
    assert elicitation.message == "Connect your GitHub account"
    assert URL in body["error"]["message"]  # readable by a client that does not know -32042


def test_modern_client_with_url_elicitation_gets_an_input_required_result() -> None:
    context = _context("tools/call", MODERN, {"elicitation": {"url": {}}})
    body = json.loads(elicitation_body(_error(), context, MODERN))
    assert body["id"] == 7
    result = InputRequiredResult.model_validate(body["result"])
    assert result.request_state is None
    assert result.input_requests is not None
    [(key, request)] = result.input_requests.items()
    assert key == "el-1"
    assert request.method == "elicitation/create"
    assert request.params.mode == "url"
    assert (request.params.url, request.params.message) == (URL, "Connect your GitHub account")
    assert "elicitationId" not in body["result"]["inputRequests"]["el-1"]["params"]


@pytest.mark.parametrize(
    ("method", "capabilities"),
    [
        ("tools/call", {}),  # no elicitation at all
        ("tools/call", {"elicitation": {"form": {}}}),  # form mode only
        ("tools/call", {"elicitation": {"url": True}}),  # not an object
        ("tools/list", {"elicitation": {"url": {}}}),  # may not carry input_required
    ],
)
def test_modern_requests_that_cannot_elicit_get_an_error_naming_the_url(
    method: str, capabilities: dict[str, Any]
) -> None:
    body = json.loads(elicitation_body(_error(), _context(method, MODERN, capabilities), MODERN))
    assert "result" not in body
    assert body["error"]["code"] == NOT_ELICITABLE
    assert URL in body["error"]["message"]
    assert body["error"]["data"] == {"reason": "url_elicitation_unsupported", "url": URL}


def test_the_error_answer_carries_the_rendered_body_with_http_200() -> None:
    error = _error()
    context = _context("tools/call", MODERN, {"elicitation": {"url": {}}})
    error.body = elicitation_body(error, context, MODERN)
    answer = error_answer(error, context.rpc_id)
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.body == error.body
