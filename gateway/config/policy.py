"""A route's `policy`: the scopes each tool, resource and prompt needs, and what lists show;
with its limits (`gateway.config.limits`) and audit redaction (`gateway.config.audit`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.audit import AuditPolicy
from gateway.config.fields import (
    METHOD_NAME,
    GrantRuleSettings,
    Model,
    Requirement,
    ScopeList,
)
from gateway.config.limits import PolicyLimits


class DefaultRule(Model):
    scopes: ScopeList


class Policy(PolicyLimits, Model):
    """Which scopes each tool, resource (by URI) and prompt needs on this route.

    Keys are exact names or patterns (`*` any run of characters, `?` one character); values
    are the scopes required (all of them; `[]`: any authenticated caller) or `deny`. An exact
    name beats every pattern; among patterns, more literal characters win; patterns that tie
    and can match the same name are refused. Anything unlisted falls to `default`.
    """

    default: DefaultRule | Literal["deny"] | None = Field(
        None, description="Rule for names no entry matches. Default: the route's `scopes`."
    )
    tools: dict[str, Requirement] = Field(default_factory=dict)
    resources: dict[str, Requirement] = Field(default_factory=dict)
    prompts: dict[str, Requirement] = Field(default_factory=dict)
    list_visibility: Literal["attainable", "held", "all"] = Field(
        "attainable",
        description="What lists (tools/list, resources/list, prompts/list) show: `held`, what "
        "the caller's token may use; `attainable`, that and what the caller could be granted "
        "(facade: its grant rules for this user; other authorization servers: everything, or "
        "what `attainable` gives the token's claims); `all`, everything. Entries shown but not "
        "held carry the scopes they need in `_meta` (`io.mcp-auth-gateway/requiredScopes`). "
        "What `deny` rules cover is never shown.",
    )
    attainable: list[GrantRuleSettings] | None = Field(
        None,
        description="For tokens of other authorization servers (not the gateway's own): the "
        "scopes a caller could be granted, by rules over the token's claims, e.g. `{when: "
        "{groups: [eng]}, scopes: [files:write]}`. Omitted: every scope is attainable. A list "
        "(even empty): only what the rules whose claims match give, plus implied scopes.",
    )
    methods: dict[str, Requirement] = Field(
        default_factory=dict,
        description="Rules for JSON-RPC methods the gateway does not know as MCP methods "
        "(e.g. a vendor extension). Any other unknown method is decided by `default`.",
    )
    audit: AuditPolicy = Field(default_factory=AuditPolicy)  # described on the model

    @model_validator(mode="before")
    @classmethod
    def _renamed_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hide_unauthorized" in data:
            raise ValueError(
                "hide_unauthorized was replaced by list_visibility: `held` shows only what the "
                "token may use (hide_unauthorized: true), `attainable` (the default) also what "
                "the caller could be granted, `all` everything but what deny rules cover"
            )
        return data

    @field_validator("tools", "resources", "prompts")
    @classmethod
    def _names_not_empty(cls, value: dict[str, Requirement]) -> dict[str, Requirement]:
        if any(not name for name in value):
            raise ValueError("empty names are not allowed")
        return value

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, value: dict[str, Requirement]) -> dict[str, Requirement]:
        for method in value:
            if not METHOD_NAME.fullmatch(method):
                raise ValueError(f"method {method!r} must be visible ASCII without spaces")
        return value

    def default_requirement(self) -> Requirement | None:
        if isinstance(self.default, DefaultRule):
            return self.default.scopes
        return self.default
