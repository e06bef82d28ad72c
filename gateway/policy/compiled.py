"""Compiling the configured policies, and the swappable snapshot the running gateway reads."""

from __future__ import annotations

from gateway.config.fields import GATEWAY_AS_NAME
from gateway.config.loader import ConfigError, ConfigProblem
from gateway.config.model import GatewayConfig
from gateway.config.upstreams import Upstream
from gateway.mcp_methods import MCP_METHODS
from gateway.policy.decision import RoutePolicy
from gateway.policy.grants import Grants, rule
from gateway.policy.scopes import ScopeImplications
from gateway.policy.visibility import Ceilings


def compile_route_policy(
    upstream: Upstream, implications: ScopeImplications, own_issuer: str | None = None
) -> RoutePolicy:
    """`own_issuer`: the gateway's issuer when it is the authorization server (facade)."""
    policy = upstream.policy
    rules = (
        None
        if policy.attainable is None
        else Grants([rule(r.when, r.scopes) for r in policy.attainable], implications)
    )
    return RoutePolicy(
        baseline=upstream.scopes,
        default=policy.default_requirement(),
        tools=policy.tools,
        resources=policy.resources,
        prompts=policy.prompts,
        implications=implications,
        list_visibility=policy.list_visibility,
        ceilings=Ceilings(own_issuer, rules, implications),
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
        problems += _attainable_problems(config, index, upstream)
    return problems


def _attainable_problems(
    config: GatewayConfig, index: int, upstream: Upstream
) -> list[ConfigProblem]:
    """`attainable` rules that could never apply: they are for other issuers' tokens, in
    `list_visibility: attainable`."""
    policy = upstream.policy
    if policy.attainable is None:
        return []
    path = f"upstreams[{index}].policy.attainable"
    if policy.list_visibility != "attainable":
        return [ConfigProblem(path, f"applies only with list_visibility: attainable, not "
                              f"{policy.list_visibility}")]  # fmt: skip
    external = {s.name for s in config.auth.resource_server.authorization_servers} if (
        config.auth.resource_server is not None) else set()  # fmt: skip
    trusted = set(upstream.authorization_servers or external | {GATEWAY_AS_NAME})
    if not trusted & external:
        return [ConfigProblem(path, "this route trusts only the gateway's own tokens, whose "
                              "ceiling comes from auth.authorization_server.grants; attainable "
                              "rules are for tokens of other authorization servers")]  # fmt: skip
    return []


def compile_policies(config: GatewayConfig, *, source: str = "<config>") -> dict[str, RoutePolicy]:
    """Every authenticated route's policy, by upstream name (anonymous routes have none).

    Raises `ConfigError` listing every problem `policy_problems` finds.
    """
    problems = policy_problems(config)
    if problems:
        raise ConfigError(source, problems)
    implications = ScopeImplications(config.scopes.implies)
    own_issuer = config.public_base() if config.auth.authorization_server is not None else None
    return {
        upstream.name: compile_route_policy(upstream, implications, own_issuer)
        for upstream in config.upstreams
        if not upstream.allow_anonymous
    }


class PolicyStore:
    """The policies in force. A reload replaces the whole mapping in one assignment, so a request
    sees either the old policies or the new ones, never a mix."""

    def __init__(self, policies: dict[str, RoutePolicy]) -> None:
        self.current = policies
