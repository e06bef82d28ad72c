"""What a relayed stream keeps of its request (`McpRequest.forget`): a stream may stay open
for hours, and everything it holds is held that long, for each of thousands of streams."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.jsonrpc import parse_message
from gateway.web.exchange import McpRequest, RequestContext
from gateway.web.plane.body import BodyReader

BODY = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a long file"}}}'  # noqa: E501


def streamed_request() -> McpRequest:
    context = RequestContext(request_id="r1", started=0.0)
    context.body = BODY
    context.message = parse_message(BODY)
    headers = CIMultiDict({"Authorization": "Bearer secret-token", "Mcp-Method": "tools/call"})
    raw = [(b"Authorization", b"Bearer secret-token"), (b"Mcp-Method", b"tools/call")]
    return McpRequest(context, "POST", "/mcp", headers, raw, len(BODY), BodyReader(0), None)


def test_a_stream_lets_go_of_its_headers_body_and_payload_but_not_its_id_and_method() -> None:
    request = streamed_request()
    request.forget(keep_payload=False)
    context = request.context
    assert list(request.headers.items()) == []
    assert list(request.raw_headers) == []
    assert context.body == b""
    assert context.message is not None
    assert context.message.payload is None
    assert (context.rpc_id, context.rpc_method) == (7, "tools/call")  # the access line's


def test_the_payload_stays_when_the_audit_record_will_read_its_arguments() -> None:
    request = streamed_request()
    request.forget(keep_payload=True)
    assert request.context.body == b""
    assert request.context.message is not None
    assert request.context.message.payload["params"]["arguments"] == {"text": "a long file"}
    assert list(request.headers.items()) == []
