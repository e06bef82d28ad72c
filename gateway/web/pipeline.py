"""The named steps every MCP request passes before it is forwarded.

Order (see `build_steps`): authenticate -> read body -> inspect JSON-RPC -> bind session ->
decide policy. Each is a `Step` that reads and fills the `RequestContext` or raises a
`GatewayError`. Sessions never authenticate: the token is checked on every request first.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from gateway.auth.authenticator import RouteAuthenticator
from gateway.errors import (
    BodyTooLargeError,
    DuplicateIdError,
    GatewayError,
    HeaderMismatchError,
    InsufficientScopeError,
    InvalidParamsError,
    MethodVariantError,
    ParseError,
    PolicyDeniedError,
    RequestError,
    RequestTimeoutError,
    UnsupportedEncodingError,
)
from gateway.jsonrpc import MessageError, parse_message
from gateway.mcp_methods import MCP_METHODS
from gateway.mcp_request import McpCall, McpRequestError, inspect_request
from gateway.observability.logging import get_logger
from gateway.policy.compiled import PolicyStore
from gateway.policy.decision import (
    LIST_KINDS,
    Allow,
    Decision,
    Deny,
    InsufficientScope,
    Kind,
    RoutePolicy,
)
from gateway.policy.listing import Allowed, ListFilter
from gateway.policy.refusal import Refusal, denied_message, insufficient_scope_message
from gateway.policy.visibility import Attainable, Hidden
from gateway.session.seal import Owner
from gateway.web.exchange import McpRequest, RequestContext

Step = Callable[[McpRequest], Awaitable[None]]
audit = get_logger("gateway.audit")


class BodyLimits(NamedTuple):
    max_bytes: int
    """Largest accepted body (413 beyond)."""
    timeout: float
    """Seconds the whole body may take to arrive (408 beyond)."""


def build_steps(
    limits: BodyLimits,
    authenticator: RouteAuthenticator | None,
    bind_session: Step,
    policies: PolicyStore | None = None,
    route_name: str = "",
    count_decision: Callable[[str], None] = lambda decision: None,
    limit: Step | None = None,
    traced: Callable[[str, Step], Step] | None = None,
) -> tuple[Step, ...]:
    """The pipeline for one MCP route, assembled once at start-up: authentication only on a
    route that has it, the policy decision only where there is also a policy, and after it
    the route's limits (`gateway.web.limiting`) only where it has some. `traced` (tracing
    on) wraps authentication and the policy decision in a span each."""
    steps: tuple[Step, ...] = (body_step(limits), inspect_message, bind_session)
    if authenticator is None:
        return steps
    authenticate = authentication_step(authenticator)
    if traced is not None:
        authenticate = traced("authenticate", authenticate)
    if policies is None:
        return (authenticate, *steps)
    decide = policy_step(authenticator, policies, route_name, count_decision)
    if traced is not None:
        decide = traced("policy", decide)
    if limit is None:
        return (authenticate, *steps, decide)
    return (authenticate, *steps, decide, limit)


def authentication_step(authenticator: RouteAuthenticator) -> Step:
    """The step that turns the request's token into its principal, and so into the owner of
    whatever the request opens (`Owner.of`: a token without `sub` owns it itself)."""

    async def authenticate(request: McpRequest) -> None:
        """Every request carries and passes its own token (RFC 6750 section 2.1 header only).

        Each refusal is an audit event with its reason code; the token itself is never logged.
        """
        context = request.context
        authorization: Sequence[str] = request.headers.getall("Authorization", ())
        try:
            principal = await authenticator.authenticate(authorization)
        except GatewayError as error:
            audit.info(
                "token_rejected",
                request_id=context.request_id,
                upstream=context.upstream,
                status=error.status,
                reason=error.detail,
            )
            raise
        context.principal = principal
        context.owner = Owner.of(principal, authorization[0])  # exactly one, or it was refused

    return authenticate


def body_step(limits: BodyLimits) -> Step:
    """The step that reads a POST body within the route's size and time limits."""
    max_request_bytes = limits.max_bytes

    async def read_body(request: McpRequest) -> None:
        """Read a POST body, enforcing the size limit as it streams in (413), not only by
        Content-Length: a chunked body is counted chunk by chunk. A body that takes longer
        than the body deadline gets 408; a compressed one 415 (bodies stay inspectable, and a
        small compressed body must not become a large one)."""
        if request.method != "POST":
            return
        encodings = request.headers.getall("Content-Encoding", ())
        if any(value.strip().lower() not in ("", "identity") for value in encodings):
            raise UnsupportedEncodingError("compressed request body")
        declared = request.content_length
        if declared is not None and declared > max_request_bytes:
            raise BodyTooLargeError(f"declared {declared} bytes")
        content = request.content
        if content.is_eof():  # the common case: the body arrived with the headers
            request.context.body = content.read_nowait()
            if len(request.context.body) <= max_request_bytes:
                return
            raise BodyTooLargeError("body exceeded the limit")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(limits.timeout):
                while chunk := await content.readany():
                    size += len(chunk)
                    if size > max_request_bytes:
                        raise BodyTooLargeError("body exceeded the limit while streaming")
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeoutError("request body not received in time") from None
        request.context.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

    return read_body


def policy_step(
    authenticator: RouteAuthenticator,
    policies: PolicyStore,
    route_name: str,
    count_decision: Callable[[str], None],
) -> Step:
    """The step that applies the route's current policy to every call of the request."""

    async def decide(request: McpRequest) -> None:
        """Apply the route's policy to every call in the request (decided on the parsed body).

        Insufficient scope -> 403 with a challenge naming every scope needed, so the client
        can step up; deny -> 403 without one. Nothing refused is forwarded.
        """
        context = request.context
        assert context.principal is not None
        policy = policies.current[route_name]
        principal = context.principal
        granted = principal.scopes
        ceiling = functools.partial(policy.ceilings.of, principal.issuer, principal.claims)
        calls = calls_of(request.method, context.calls)
        required: set[str] = set()
        refusals: list[Refusal] = []
        denied: list[str | None] = []
        for label, method, name in calls:
            decision = policy.decide(granted, method, name)
            outcome = _OUTCOMES[type(decision)]
            count_decision(outcome)
            context.call_name, context.decision = name, outcome
            if not isinstance(decision, Deny):
                context.required_scopes = decision.required
            if len(calls) > 1:
                _audit_batch_decision(context, route_name, label, name, decision)
            if isinstance(decision, Deny):
                denied.append(name if name is not None else method)
            elif isinstance(decision, InsufficientScope):
                required |= decision.required
                refusals.append(Refusal(name or method or request.method, decision.required))
        if denied:
            raise PolicyDeniedError("denied by policy", message=denied_message(denied))
        context.list_filter = list_filter(request.method, context.calls, policy, granted, ceiling)
        if required:
            unattainable = policy.unattainable(frozenset(required), granted, ceiling())
            raise InsufficientScopeError(
                "missing scopes",
                message=insufficient_scope_message(refusals, granted, unattainable),
                challenge=authenticator.insufficient_scope_challenge(required),
            )

    return decide


def _audit_batch_decision(
    context: RequestContext, route: str, label: str, name: str | None, decision: Decision
) -> None:
    """One audit event per call of a batch (a lone call's decision is in the access record)."""
    audit.info(
        "policy_decided",
        request_id=context.request_id,
        upstream=route,
        method=label,
        name=name,
        decision=_OUTCOMES[type(decision)],
        rule=decision.rule,
    )


_OUTCOMES: dict[type, str] = {Allow: "allow", InsufficientScope: "insufficient_scope", Deny: "deny"}


def calls_of(
    http_method: str, calls: tuple[McpCall, ...]
) -> list[tuple[str, str | None, str | None]]:
    """(label for the audit, JSON-RPC method, name) for every message of the request. A GET
    stream or DELETE acts on the session as a whole, and a client's reply to a server request
    has no method: both are decided with no method (the route's baseline scopes)."""
    if not calls:
        return [(http_method, None, None)]
    return [
        ("(response)", None, None)
        if call.kind == "response"
        else (call.method, call.method, call.name)
        for call in calls
    ]


def list_filter(
    http_method: str,
    calls: tuple[McpCall, ...],
    policy: RoutePolicy,
    granted: frozenset[str],
    ceiling: Callable[[], frozenset[str] | None] = lambda: None,
) -> ListFilter | None:
    """What to filter in the response: every list request of a POST (one, or several in a
    batch) by id, so each list response is filtered like a single one's; on a GET stream, any
    list response an upstream replays there (resumption). None when there is nothing to do.
    `ceiling`: what the caller could be granted (None: anything), see `RoutePolicy.listing`;
    asked only when there is a list to filter."""
    lists = {
        call.rpc_id: call.method
        for call in calls
        if call.method in LIST_KINDS and call.kind == "request" and call.rpc_id is not None
    }
    if http_method != "GET" and not lists:
        return None
    limit = ceiling()

    def allowed(method: str) -> Allowed:
        return functools.partial(_shown, policy, LIST_KINDS[method], granted, limit)

    if http_method == "GET":
        return ListFilter(replayed={method: allowed(method) for method in LIST_KINDS})
    return ListFilter(calls={rpc_id: (method, allowed(method)) for rpc_id, method in lists.items()})


def _shown(
    policy: RoutePolicy,
    kind: Kind,
    granted: frozenset[str],
    ceiling: frozenset[str] | None,
    name: str,
) -> frozenset[str] | None:
    """None to hide the entry, else the scopes to annotate it with (none when held)."""
    listing = policy.listing(kind, name, granted, ceiling)
    if isinstance(listing, Hidden):
        return None
    return listing.required if isinstance(listing, Attainable) else frozenset()


_REQUEST_ERRORS: dict[int, type[RequestError]] = {
    -32600: RequestError,
    -32602: InvalidParamsError,
    -32020: HeaderMismatchError,
}
_SINGLE_HEADERS = ("MCP-Protocol-Version", "Mcp-Method", "Mcp-Name")


async def inspect_message(request: McpRequest) -> None:
    """Parse the POST body once (duplicate keys and deep nesting refused) and check it as MCP:
    JSON-RPC shape, names, batching per protocol version, metadata headers against the body.
    Malformed bodies never reach an upstream; decisions later use the body, never headers."""
    if request.method != "POST":
        return
    context = request.context
    try:
        context.message = parse_message(context.body)
    except MessageError as exc:
        if exc.kind == "parse":
            raise ParseError(str(exc)) from None
        raise RequestError(str(exc)) from None
    headers = request.headers
    if any(len(headers.getall(name, ())) > 1 for name in _SINGLE_HEADERS):
        raise HeaderMismatchError("a request metadata header is repeated")
    try:
        context.calls = inspect_request(context.message.payload, headers)
    except McpRequestError as exc:
        error_class = _REQUEST_ERRORS.get(exc.jsonrpc_code, RequestError)
        raise error_class(exc.reason, rpc_id=exc.rpc_id) from None
    check_calls(context.calls)


def check_calls(calls: tuple[McpCall, ...]) -> None:
    """Refuse what the policy could not decide soundly: a look-alike of an MCP method (an
    upstream that normalised it would run a call nobody decided), and requests of one batch
    sharing an id (their responses, list responses above all, could not be told apart)."""
    ids: set[str | int] = set()
    for call in calls:
        if call.kind != "response" and (like := MCP_METHODS.variant_of(call.method)):
            raise MethodVariantError(f"look-alike of {like}", rpc_id=call.rpc_id)
        if call.kind == "request" and call.rpc_id is not None:
            if call.rpc_id in ids:
                raise DuplicateIdError("two requests share an id")
            ids.add(call.rpc_id)
