"""Compiling the configured policies, and the swappable snapshot the running gateway reads."""

from __future__ import annotations

from gateway.config.auth import AuthSettings
from gateway.config.fields import GATEWAY_AS_NAME
from gateway.config.limits import LimitFallback
from gateway.config.model import GatewayConfig
from gateway.config.policy import Policy
from gateway.config.problems import YamlPath
from gateway.config.upstreams import Upstream
from gateway.mcp_methods import MCP_METHODS
from gateway.policy.decision import RoutePolicy
from gateway.policy.grants import Grants, rule
from gateway.policy.limits import compile_limits, limit_problems
from gateway.policy.patterns import Pattern, is_pattern, overlap
from gateway.policy.redaction import Redaction
from gateway.policy.scopes import ScopeImplications
from gateway.policy.visibility import Ceilings


def compile_route_policy(
    upstream: Upstream,
    implications: ScopeImplications,
    own_issuer: str | None = None,
    limits_fallback: LimitFallback = "refuse",
) -> RoutePolicy:
    """`own_issuer`: the gateway's issuer when it is the authorization server (facade);
    `limits_fallback`: `store.limits_fallback`, for routes that do not set their own."""
    policy = upstream.policy
    rules = (
        None
        if policy.attainable is None
        else Grants([rule(r.when, r.scopes) for r in policy.attainable], implications)
    )
    compiled = RoutePolicy(
        baseline=upstream.scopes,
        default=policy.default_requirement(),
        tools=policy.tools,
        resources=policy.resources,
        prompts=policy.prompts,
        implications=implications,
        list_visibility=policy.list_visibility,
        ceilings=Ceilings(own_issuer, rules, implications),
        methods=policy.methods,
        redaction=Redaction(policy.audit),
    )
    fallback = policy.limits_fallback or limits_fallback
    compiled.limits = compile_limits(upstream.name, policy.limits, fallback)
    return compiled


Found = list[tuple[YamlPath, str]]
"""Problems as (YAML path, message), placed by the loader's line index."""


def route_problems(upstream: Upstream, auth: AuthSettings | None) -> Found:
    """What the models cannot see alone, under the upstream's path: patterns that tie, entries
    of `policy.methods` that name an MCP method (the gateway decides those itself) or a
    look-alike of one (refused before any policy applies), attainable rules that never apply,
    limits that share a label or sit on an anonymous route (`limit_problems`)."""
    found = _pattern_problems(upstream.policy) + limit_problems(upstream)
    for method in upstream.policy.methods:
        path: YamlPath = ("policy", "methods", method)
        if method in MCP_METHODS:
            found.append((path, f"{method!r} is an MCP method: it needs the route's scopes "
                          "(named calls are decided under tools, resources and prompts); list "
                          "only methods MCP does not define"))  # fmt: skip
        elif (like := MCP_METHODS.variant_of(method)) is not None:
            found.append((path, f"{method!r} is a look-alike of the MCP method {like!r}, which "
                          "the gateway refuses whatever the policy"))  # fmt: skip
    if auth is not None:
        found += _attainable_problems(upstream, auth)
    return found


def _pattern_problems(policy: Policy) -> Found:
    """Two patterns of one kind that are equally specific and can match the same name: no rule
    says which wins. Listing the shared names exactly does not settle it (other names may
    still match both), so the advice is to make one of them win by specificity."""
    found: Found = []
    tables: list[tuple[YamlPath, dict[str, object]]] = [
        (("policy", kind), getattr(policy, kind)) for kind in ("tools", "resources", "prompts")
    ]
    tables += [
        (("policy", "audit", kind), getattr(policy.audit, kind)) for kind in ("tools", "prompts")
    ]
    for where, names in tables:
        patterns = [Pattern(name) for name in names if is_pattern(name)]
        for i, a in enumerate(patterns):
            for b in patterns[i + 1 :]:
                if a.specificity == b.specificity and overlap(a.text, b.text):
                    found.append(((*where, b.text),
                                  f"{a.text!r} and {b.text!r} can match the same name and have "
                                  "equally many literal characters, so neither wins: give the "
                                  "one that should win more literal characters, or change one "
                                  "so that they cannot both match"))  # fmt: skip
    return found


def _attainable_problems(upstream: Upstream, auth: AuthSettings) -> Found:
    """`attainable` rules that could never apply: they are for other issuers' tokens, in
    `list_visibility: attainable`."""
    policy = upstream.policy
    if policy.attainable is None:
        return []
    path: YamlPath = ("policy", "attainable")
    if policy.list_visibility != "attainable":
        return [(path, f"applies only with list_visibility: attainable, not "
                       f"{policy.list_visibility}")]  # fmt: skip
    external = {s.name for s in auth.resource_server.authorization_servers} if (
        auth.resource_server is not None) else set()  # fmt: skip
    trusted = set(upstream.authorization_servers or external | {GATEWAY_AS_NAME})
    if not trusted & external:
        return [(path, "this route trusts only the gateway's own tokens, whose ceiling comes "
                       "from auth.authorization_server.grants; attainable rules are for tokens "
                       "of other authorization servers")]  # fmt: skip
    return []


def compile_policies(config: GatewayConfig) -> dict[str, RoutePolicy]:
    """Every authenticated route's policy, by upstream name (anonymous routes have none), from
    a config whose problems were already reported (see `gateway.compiler`)."""
    implications = ScopeImplications(config.scopes.implies)
    own_issuer = config.public_base() if config.auth.authorization_server is not None else None
    return {
        upstream.name: compile_route_policy(
            upstream, implications, own_issuer, config.store.limits_fallback
        )
        for upstream in config.upstreams
        if not upstream.allow_anonymous
    }


class PolicyStore:
    """The policies in force. A reload replaces the whole mapping in one assignment, so a request
    sees either the old policies or the new ones, never a mix."""

    def __init__(self, policies: dict[str, RoutePolicy]) -> None:
        self.current = policies
