"""`policy.limits`: rate limits and concurrency caps of a route, per caller.

Each rule matches calls by tool, resource (URI) or prompt name, exactly or by pattern (`*`, `?`,
as the policy's own keys), or every JSON-RPC request of the route when it names none; every
rule that matches a call applies. A rule is a token bucket (`rate` calls per `per`, up to
`burst` at once), a cap on calls in flight (`concurrency`), or both, counted per caller (`by`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.fields import Model, Name

LimitKey = Literal["principal", "client_id", "client_address"]
LimitFallback = Literal["local", "refuse"]
PER_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


class LimitRule(Model):
    """One limit: which calls it counts, whose, and how many."""

    name: Name | None = Field(
        None,
        description="Label in metrics, logs and the refusal message. Default: the rule's "
        "index in the list.",
    )
    tools: list[str] | None = Field(None, description="Tool names or patterns it counts.")
    resources: list[str] | None = Field(None, description="Resource URIs or patterns.")
    prompts: list[str] | None = Field(None, description="Prompt names or patterns.")
    by: LimitKey = Field(
        "principal",
        description="Whose calls count together: `principal` (issuer and subject; the client "
        "id when the token has no subject), `client_id` (issuer and client id), or "
        "`client_address` (the client's address, see `server.trusted_proxies`).",
    )
    rate: int | None = Field(
        None, ge=1, le=1_000_000, description="Calls allowed per `per` (a token bucket)."
    )
    per: Literal["second", "minute", "hour"] | float | None = Field(
        None, description="The window of `rate`: second, minute, hour or a number of seconds."
    )
    burst: int | None = Field(
        None, ge=1, le=1_000_000, description="Calls allowed at once. Default: `rate`."
    )
    concurrency: int | None = Field(
        None, ge=1, le=100_000, description="Calls allowed in flight at once."
    )

    @field_validator("tools", "resources", "prompts")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("empty: omit it to count every call of the route")
        if any(not name for name in value):
            raise ValueError("empty names are not allowed")
        if len(set(value)) != len(value):
            raise ValueError("a name is listed twice")
        return value

    @field_validator("per")
    @classmethod
    def _per(cls, value: str | float | None) -> str | float | None:
        if isinstance(value, float) and not 0 < value <= 86_400:
            raise ValueError("a number of seconds must be > 0 and at most 86400")
        return value

    @model_validator(mode="after")
    def _complete(self) -> LimitRule:
        if self.rate is None and self.concurrency is None:
            raise ValueError("give rate (with per) or concurrency, or both")
        if self.rate is None and (self.per is not None or self.burst is not None):
            raise ValueError("per and burst are for rate: give rate too")
        if self.rate is not None and self.per is None:
            raise ValueError("rate needs per: second, minute, hour or a number of seconds")
        return self

    def window(self) -> float:
        """Seconds of `per`."""
        return PER_UNITS[self.per] if isinstance(self.per, str) else float(self.per or 1.0)


class PolicyLimits(Model):
    """The limit keys of a route's `policy`."""

    limits: list[LimitRule] = Field(
        default_factory=list,
        max_length=64,
        description="Rate limits and concurrency caps per caller, e.g. `{tools: [write_*], "
        "rate: 10, per: minute}` or `{concurrency: 4}` (every call of the route). Every rule "
        "that matches a call applies; a call over one gets 429 with `Retry-After`.",
    )
    limits_fallback: LimitFallback | None = Field(
        None,
        description="When the store (Redis) is down: `local` enforces the limits per replica, "
        "`refuse` answers 503. Default: `store.limits_fallback`.",
    )
