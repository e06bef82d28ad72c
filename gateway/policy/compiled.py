"""Compiling the configured policies, and the swappable snapshot the running gateway reads."""

from __future__ import annotations

from gateway.config.model import GatewayConfig, Upstream
from gateway.policy.decision import RoutePolicy
from gateway.policy.scopes import ScopeImplications


def compile_route_policy(upstream: Upstream, implications: ScopeImplications) -> RoutePolicy:
    policy = upstream.policy
    return RoutePolicy(
        baseline=upstream.scopes,
        default=policy.default_requirement(),
        tools=policy.tools,
        resources=policy.resources,
        prompts=policy.prompts,
        implications=implications,
        hide_unauthorized=policy.hide_unauthorized,
    )


def compile_policies(config: GatewayConfig) -> dict[str, RoutePolicy]:
    """Every authenticated route's policy, by upstream name (anonymous routes have none)."""
    implications = ScopeImplications(config.scopes.implies)
    return {
        upstream.name: compile_route_policy(upstream, implications)
        for upstream in config.upstreams
        if not upstream.allow_anonymous
    }


class PolicyStore:
    """The policies in force. A reload replaces the whole mapping in one assignment, so a request
    sees either the old policies or the new ones, never a mix."""

    def __init__(self, policies: dict[str, RoutePolicy]) -> None:
        self.current = policies
