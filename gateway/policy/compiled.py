"""Compiling the configured policies, and the swappable snapshot the running gateway reads."""

from __future__ import annotations

from gateway.config.loader import ConfigError, ConfigProblem
from gateway.config.model import GatewayConfig, Upstream
from gateway.mcp_methods import MCP_METHODS
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
        methods=policy.methods,
    )


def policy_problems(config: GatewayConfig) -> list[ConfigProblem]:
    """What the models cannot see alone: `policy.methods` entries that name an MCP method (the
    gateway decides those itself) or a look-alike of one (refused before any policy applies)."""
    problems = []
    for index, upstream in enumerate(config.upstreams):
        for method in upstream.policy.methods:
            path = f"upstreams[{index}].policy.methods.{method}"
            if method in MCP_METHODS:
                problems.append(
                    ConfigProblem(
                        path,
                        f"{method!r} is an MCP method: it needs the route's scopes (named calls "
                        "are decided under tools, resources and prompts); list only methods MCP "
                        "does not define",
                    )
                )
            elif (like := MCP_METHODS.variant_of(method)) is not None:
                problems.append(
                    ConfigProblem(
                        path,
                        f"{method!r} is a look-alike of the MCP method {like!r}, which the "
                        "gateway refuses whatever the policy",
                    )
                )
    return problems


def compile_policies(config: GatewayConfig, *, source: str = "<config>") -> dict[str, RoutePolicy]:
    """Every authenticated route's policy, by upstream name (anonymous routes have none).

    Raises `ConfigError` listing every problem `policy_problems` finds.
    """
    problems = policy_problems(config)
    if problems:
        raise ConfigError(source, problems)
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
