"""The one place where errors become HTTP responses."""

from __future__ import annotations

from typing import NamedTuple

from aiohttp import web

from gateway.auth.challenge import bearer_challenge
from gateway.errors import ElicitationRequiredError, GatewayError, MethodNotAllowedError
from gateway.jsonrpc import JsonRpcId, error_body


class ErrorAnswer(NamedTuple):
    """A `GatewayError` as an HTTP answer, for whichever server writes it."""

    status: int
    headers: dict[str, str]
    body: bytes
    close: bool
    """Close the connection once it is sent."""


def error_answer(error: GatewayError, rpc_id: JsonRpcId = None) -> ErrorAnswer:
    """A `GatewayError` as its status, a JSON-RPC error body and its headers.

    The body carries the request's JSON-RPC id when the request had one, the error's message
    (the class's public message, or one written for this refusal) and its stable code; never
    the error's internal detail.
    """
    headers = {"Cache-Control": "no-store"}
    if isinstance(error, MethodNotAllowedError):
        headers["Allow"] = ", ".join(error.allowed)
    if error.challenge is not None:
        headers["WWW-Authenticate"] = bearer_challenge(error.challenge)
    if (retry_after := error.retry_seconds()) is not None:
        headers["Retry-After"] = str(retry_after)
    headers["Content-Type"] = "application/json"
    if isinstance(error, ElicitationRequiredError) and error.body is not None:
        return ErrorAnswer(error.status, headers, error.body, error.close_connection)
    body = error_body(
        error.rpc_id if error.rpc_id is not None or not error.echo_rpc_id else rpc_id,
        error.jsonrpc_code,
        error.message,
        error.code,
    )
    return ErrorAnswer(error.status, headers, body, error.close_connection)


def render_error(error: GatewayError, rpc_id: JsonRpcId = None) -> web.Response:
    """`error_answer` as an aiohttp response."""
    answer = error_answer(error, rpc_id)
    response = web.Response(status=answer.status, body=answer.body, headers=answer.headers)
    if answer.close:
        response.force_close()
    return response
