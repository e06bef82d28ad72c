"""The named steps every MCP request passes before it is forwarded.

Order (see `build_steps`): authenticate -> bind session -> read body -> inspect JSON-RPC ->
decide policy. Session binding and policy arrive in later versions; each is a `Step` that reads
and fills the `RequestContext` or raises a `GatewayError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.auth.authenticator import RouteAuthenticator
from gateway.errors import BodyTooLargeError, GatewayError, ParseError, RequestError
from gateway.jsonrpc import MessageError, parse_message
from gateway.observability.logging import get_logger
from gateway.web.keys import CONTEXT_KEY

Step = Callable[[web.Request], Awaitable[None]]
audit = get_logger("gateway.audit")


def build_steps(
    max_request_bytes: int, authenticator: RouteAuthenticator | None
) -> tuple[Step, ...]:
    """The pipeline for one MCP route, assembled once at start-up."""

    async def authenticate(request: web.Request) -> None:
        """Every request carries and passes its own token (RFC 6750 section 2.1 header only).

        Each refusal is an audit event with its reason code; the token itself is never logged.
        """
        assert authenticator is not None
        context = request[CONTEXT_KEY]
        authorization = request.headers.getall("Authorization", ())
        try:
            context.principal = await authenticator.authenticate(authorization)
        except GatewayError as error:
            audit.info(
                "token_rejected",
                request_id=context.request_id,
                upstream=context.upstream,
                status=error.status,
                reason=error.detail,
            )
            raise

    async def read_body(request: web.Request) -> None:
        """Read a POST body, enforcing the size limit as it streams in (413), not only by
        Content-Length: a chunked body is counted chunk by chunk."""
        if request.method != "POST":
            return
        declared = request.content_length
        if declared is not None and declared > max_request_bytes:
            raise BodyTooLargeError(f"declared {declared} bytes")
        chunks: list[bytes] = []
        size = 0
        content = request.content
        while chunk := await content.readany():
            size += len(chunk)
            if size > max_request_bytes:
                raise BodyTooLargeError("body exceeded the limit while streaming")
            chunks.append(chunk)
        request[CONTEXT_KEY].body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

    steps: tuple[Step, ...] = (read_body, inspect_message)
    return steps if authenticator is None else (authenticate, *steps)


async def inspect_message(request: web.Request) -> None:
    """Parse the POST body once as JSON-RPC; malformed bodies never reach an upstream."""
    if request.method != "POST":
        return
    context = request[CONTEXT_KEY]
    try:
        context.message = parse_message(context.body)
    except MessageError as exc:
        if exc.kind == "parse":
            raise ParseError(str(exc)) from None
        raise RequestError(str(exc)) from None
