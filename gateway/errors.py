"""The gateway's one error model.

Every failure the gateway answers on its own is a `GatewayError` subclass. The class carries the
HTTP status, a stable machine-readable code and the JSON-RPC error code; exactly one function
(`gateway.web.error_response.render_error`) turns it into an HTTP response. Nothing classifies an
error by its message text.

JSON-RPC codes: the standard ones (-32700, -32600, -32602, -32603) and MCP's (-32020
HeaderMismatch) where they fit. The gateway's own refusals each have a dedicated code in
-31001..-31099, outside the range JSON-RPC reserves (-32768..-32000): MCP 2026-07-28 ("Error
Codes") reserves -32020..-32099 for codes it defines, calls -32000..-32019 legacy, and asks that
other codes be allocated outside -32768..-32000. They used to be the same numbers in
-32001..-32099 (insufficient_scope was -32043, now -31043).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from gateway.jsonrpc import JsonRpcId


class GatewayError(Exception):
    """Base class: an error the gateway answers itself, before any upstream byte is sent."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    jsonrpc_code: ClassVar[int] = -32603
    public_message: ClassVar[str] = "Internal error"

    retry_after: ClassVar[int | None] = None
    """Seconds for a `Retry-After` header, for errors a client should simply retry."""

    close_connection: ClassVar[bool] = False
    """Close the client connection after answering (its request body was not read)."""

    stalled: ClassVar[bool] = False
    """Close at once after answering: do not wait for the rest of a stalled body."""

    echo_rpc_id: ClassVar[bool] = True
    """Answer with the request's JSON-RPC id (else `null`, so answers cannot differ by it)."""

    def __init__(
        self,
        detail: str = "",
        *,
        rpc_id: JsonRpcId = None,
        challenge: Mapping[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        # `detail` is for logs only; it never reaches the client.
        super().__init__(detail or self.public_message)
        self.detail = detail
        self.message = message or self.public_message
        """The JSON-RPC error message: `public_message`, or one written for this refusal (from
        the policy and the request, never from `detail`)."""
        self.rpc_id = rpc_id
        self.challenge = challenge
        """Parameters of the `WWW-Authenticate: Bearer` challenge to send, if any."""

    def retry_seconds(self) -> int | None:
        """The `Retry-After` to send: the class's, unless this refusal knows better."""
        return self.retry_after


class RequestError(GatewayError):
    """The client's request is unacceptable as sent."""

    status = 400
    code = "invalid_request"
    jsonrpc_code = -32600
    public_message = "Invalid request"


class ParseError(RequestError):
    code = "parse_error"
    jsonrpc_code = -32700
    public_message = "Parse error"


class BodyTooLargeError(RequestError):
    status = 413
    code = "request_too_large"
    public_message = "Request body too large"
    close_connection = True


class MethodNotAllowedError(RequestError):
    status = 405
    code = "method_not_allowed"
    public_message = "Method not allowed"

    def __init__(self, allowed: tuple[str, ...], detail: str = "") -> None:
        super().__init__(detail)
        self.allowed = allowed


class NotFoundError(RequestError):
    status = 404
    code = "not_found"
    public_message = "Not found"


class RequestTimeoutError(RequestError):
    """The client did not send its request body in time (`server.body_timeout`)."""

    status = 408
    code = "request_timeout"
    public_message = "Request timed out"
    close_connection = True
    stalled = True


class UnsupportedEncodingError(RequestError):
    """A request body with a `Content-Encoding`: bodies must stay inspectable and bounded."""

    status = 415
    code = "unsupported_content_encoding"
    public_message = "Compressed request bodies are not accepted"
    close_connection = True


class UnsafeRequestPartError(RequestError):
    """A request target or header with bytes HTTP/1.1 does not allow there (CR, LF, NUL, other
    controls, an unencoded space): never written upstream, whoever would write it."""

    code = "invalid_request_part"


class MisdirectedRequestError(RequestError):
    """A `Host` the gateway does not serve (DNS rebinding defence)."""

    status = 421
    code = "misdirected_request"
    public_message = "Misdirected request"


class OriginRejectedError(GatewayError):
    """A browser `Origin` that is not allowed (including `null`): MCP transports say 403."""

    status = 403
    code = "origin_not_allowed"
    jsonrpc_code = -31045
    public_message = "Origin not allowed"


class SessionNotFoundError(GatewayError):
    """Unknown, ended, expired or another principal's session: one indistinguishable 404.

    The body never carries the request's id, so every such answer is the same, byte for byte.
    """

    status = 404
    code = "session_not_found"
    jsonrpc_code = -31001
    public_message = "Session not found"
    echo_rpc_id = False


class TooManyError(GatewayError):
    """The caller holds as many sessions or streams as it may: it should close one first."""

    status = 429
    code = "too_many_sessions"
    jsonrpc_code = -31053
    public_message = "Too many open sessions or streams for this caller"
    retry_after = 10


class TooManyStreamsError(TooManyError):
    """The caller has as many response streams open (or requests awaiting one) as it may."""

    code = "too_many_streams"
    jsonrpc_code = -31055
    public_message = "Too many open streams for this caller"
    retry_after = 1


class RateLimitedError(GatewayError):
    """A call over one of its route's limits (`policy.limits`): 429 with a message naming the
    limit (written from the config) and `Retry-After` in whole seconds until the limit would
    admit it. Nothing is forwarded."""

    status = 429
    code = "rate_limited"
    jsonrpc_code = -31059
    public_message = "Rate limit exceeded"

    def __init__(self, detail: str, *, message: str, retry_after: int) -> None:
        super().__init__(detail, message=message)
        self.wait = max(1, retry_after)

    def retry_seconds(self) -> int | None:
        return self.wait


class CapacityError(GatewayError):
    """The gateway holds as many sessions or streams as it may in all."""

    status = 503
    code = "at_capacity"
    jsonrpc_code = -31054
    public_message = "Gateway at capacity, retry later"
    retry_after = 10


class AuthenticationError(GatewayError):
    """No usable access token: 401 with a Bearer challenge (RFC 6750 section 3)."""

    status = 401
    code = "unauthorized"
    jsonrpc_code = -31040
    public_message = "Authentication required"


class InvalidTokenError(AuthenticationError):
    """The token is malformed, expired, revoked, for another resource or badly signed."""

    code = "invalid_token"
    jsonrpc_code = -31041
    public_message = "Invalid access token"


class InvalidParamsError(RequestError):
    """A request's params are unusable, e.g. a tool name that is not a string."""

    code = "invalid_params"
    jsonrpc_code = -32602


class HeaderMismatchError(RequestError):
    """MCP request metadata headers disagree with the body (2026-07-28 Streamable HTTP)."""

    code = "header_mismatch"
    jsonrpc_code = -32020


class MethodVariantError(RequestError):
    """A method spelled like an MCP method but not exactly (case, spaces, control characters):
    an upstream that normalised it would run a call the policy never decided."""

    code = "method_variant"


class DuplicateIdError(RequestError):
    """A batch whose requests share an id: their responses could not be told apart, so a list
    response could not be filtered by the call it answers."""

    code = "duplicate_id"


class InsufficientScopeError(GatewayError):
    """The token lacks scopes this operation needs: 403 with a step-up challenge listing every
    scope needed (RFC 6750 section 3.1; MCP 2026-07-28 Scope Challenge Handling)."""

    status = 403
    code = "insufficient_scope"
    jsonrpc_code = -31043
    public_message = "Insufficient scope"


class PolicyDeniedError(GatewayError):
    """The policy denies this operation whatever the scopes: 403 without a step-up hint."""

    status = 403
    code = "forbidden"
    jsonrpc_code = -31044
    public_message = "Forbidden by policy"


class InvalidAuthorizationHeaderError(RequestError):
    """Several Authorization headers, or one that is not a well-formed Bearer credential."""

    code = "invalid_authorization"


class AuthUnavailableError(GatewayError):
    """Tokens cannot be checked right now (key source or introspection down): fail closed."""

    status = 503
    code = "auth_unavailable"
    jsonrpc_code = -31052
    public_message = "Authorization service unavailable, retry later"
    retry_after = 5


class StoreUnavailableError(AuthUnavailableError):
    """The shared state store (Redis) failed or timed out: whatever needed it is refused (503),
    never answered as if the item were absent or valid."""

    code = "store_unavailable"
    jsonrpc_code = -31056
    public_message = "State store unavailable, retry later"


class CredentialUnavailableError(GatewayError):
    """The upstream's own credential cannot be obtained right now (the token exchange or the
    provider is down, or did not answer in time): fail closed, nothing is forwarded."""

    status = 503
    code = "upstream_credential_unavailable"
    jsonrpc_code = -31057
    public_message = "The upstream's credential is unavailable, retry later"
    retry_after = 5


class CredentialRefusedError(GatewayError):
    """The authorization server refused the upstream's credential for this caller (e.g. the
    token exchange answered `access_denied` or `invalid_target`): 403, nothing forwarded. The
    message is written by the gateway, never copied from the server's answer."""

    status = 403
    code = "upstream_credential_refused"
    jsonrpc_code = -31058
    public_message = "The upstream's authorization server refused a credential for this caller"


class ElicitationRequiredError(GatewayError):
    """The caller must first visit a gateway page (URL-mode elicitation), e.g. to connect
    their account at a third-party provider: answered with HTTP 200 as MCP's URL-elicitation
    answer of the request's protocol era (2025-11-25: the -32042 error; 2026-07-28: an
    `input_required` result carrying a URL-mode `elicitation/create`), or, to a client that did
    not declare URL elicitation, as a readable error naming the URL
    (`gateway.web.elicitation`). Nothing is forwarded."""

    status = 200
    code = "url_elicitation_required"
    jsonrpc_code = -32042
    public_message = "This request needs an account connected first"

    def __init__(self, detail: str, *, url: str, elicitation_id: str, message: str) -> None:
        super().__init__(detail, message=message)
        self.url = url
        """The gateway page the user must open (absolute, the gateway's own origin)."""
        self.elicitation_id = elicitation_id
        """Unique per elicitation; never a secret (it is sent to the client)."""
        self.body: bytes | None = None
        """The answer in the request's protocol era, set where the request is known."""


class UpstreamError(GatewayError):
    """The upstream MCP server failed before it sent a response.

    `kind` is the `kind` label of `mcp_gateway_upstream_errors_total`.
    """

    status = 502
    code = "upstream_unavailable"
    jsonrpc_code = -31050
    public_message = "Upstream server unavailable"
    kind: ClassVar[str] = "connect"


class UnfilterableResponseError(UpstreamError):
    """A list response too large or malformed to filter: refused rather than leaked unfiltered."""

    kind = "protocol"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"
    jsonrpc_code = -31051
    public_message = "Upstream server timed out"
    kind = "timeout"


class UpstreamStreamError(Exception):
    """The upstream failed after the response started: nothing can be rendered, only aborted."""
