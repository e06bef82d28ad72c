"""The one place where errors become HTTP responses."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.challenge import bearer_challenge
from gateway.errors import GatewayError, MethodNotAllowedError
from gateway.jsonrpc import JsonRpcId, error_body


def render_error(error: GatewayError, rpc_id: JsonRpcId = None) -> web.Response:
    """Render a `GatewayError` as its status, a JSON-RPC error body and its headers.

    The body carries the request's JSON-RPC id when the request had one, the error's message
    (the class's public message, or one written for this refusal) and its stable code; never
    the error's internal detail.
    """
    headers = {"Cache-Control": "no-store"}
    if isinstance(error, MethodNotAllowedError):
        headers["Allow"] = ", ".join(error.allowed)
    if error.challenge is not None:
        headers["WWW-Authenticate"] = bearer_challenge(error.challenge)
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    response = web.Response(
        status=error.status,
        body=error_body(
            error.rpc_id if error.rpc_id is not None or not error.echo_rpc_id else rpc_id,
            error.jsonrpc_code,
            error.message,
            error.code,
        ),
        content_type="application/json",
        headers=headers,
    )
    if error.close_connection:
        response.force_close()
    return response
