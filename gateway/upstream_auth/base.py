"""What every kind of upstream credential is to the forwarder: a header it sets, a value per
caller, and what it says when it cannot give one (`gateway.errors`: refused, unavailable)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from gateway.auth.principal import Principal
from gateway.observability.metrics import GatewayMetrics

OUTCOMES = (
    "issued",
    "cached",
    "refused",
    "unavailable",
    "elicited",
    "connected",
    "refreshed",
    "disconnected",
    "failed",
)
"""The `outcome` label values of `mcp_gateway_upstream_credentials_total`."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the credential is for: the validated principal and the token it was validated from
    (an exchange's `subject_token`; never sent anywhere else)."""

    principal: Principal
    token: str = ""
    elicitable: bool = False
    """The request can be answered with a URL elicitation the client acts on (one request of
    `tools/call`, `resources/read` or `prompts/get`); for any other request a credential that
    needs the user first gives none (`value` returns None) and the request goes without."""


class UpstreamCredential(Protocol):
    """One route's credential source."""

    kind: str
    header: str
    """The upstream request header it sets (`Authorization`: `Bearer <token>`)."""

    async def value(self, caller: Caller) -> str | None:
        """The header's value for `caller`; raises `CredentialRefusedError` (403),
        `CredentialUnavailableError` (503) or, for `user_oauth`, `ElicitationRequiredError`
        (only when `caller.elicitable`; otherwise None: the request goes without)."""

    async def close(self) -> None:
        """Release what it holds (HTTP sessions, background tasks)."""


def header_value(header: str, token: str) -> str:
    """A token as the header carries it: `Bearer <token>` in `Authorization`, else bare."""
    return f"Bearer {token}" if header.lower() == "authorization" else token


def outcome_counter(metrics: GatewayMetrics, upstream: str, kind: str) -> Callable[[str], None]:
    """`count(outcome)` for one route's credential, label children resolved once."""
    children: dict[str, Counter] = {
        outcome: metrics.upstream_credentials.labels(upstream, kind, outcome)
        for outcome in OUTCOMES
    }
    return lambda outcome: children[outcome].inc()
