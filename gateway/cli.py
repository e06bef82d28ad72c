"""The `mcp-auth-gateway` command: serve, check."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.audit.command import add_audit_command, run_audit
from gateway.compiler import CompiledConfig, load
from gateway.config import ConfigError, GatewayConfig
from gateway.config.fields import GATEWAY_AS_NAME
from gateway.config.reference import render_configuration_reference
from gateway.config.schema import render_schema
from gateway.config.upstreams import Upstream
from gateway.mcp_methods import MCP_METHODS
from gateway.oauth.users import hash_password
from gateway.observability.line_writer import LineWriter
from gateway.observability.logging import configure_logging, get_logger
from gateway.policy.decision import NAMED_METHODS, Allow, Deny, InsufficientScope, RoutePolicy
from gateway.policy.grants import Grants, rule
from gateway.policy.scopes import ScopeImplications
from gateway.policy.visibility import Attainable, Held, Listing
from gateway.session.seal import new_key
from gateway.web.app import create_app
from gateway.web.keys import RELOADER_KEY, ROUTES_KEY
from gateway.web.server import start_gateway

log = get_logger("gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-auth-gateway",
        description="OAuth 2.1 auth gateway for unmodified MCP servers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, type=Path, help="YAML config file")
    check = commands.add_parser("check", help="validate a config file and list every problem")
    check.add_argument("--config", required=True, type=Path, nargs="+", help="YAML config file(s)")
    explain = commands.add_parser(
        "explain",
        help="dry-run a policy decision and say which rule made it; without a call, say what "
        "lists show and why",
    )
    explain.add_argument("--config", required=True, type=Path, help="YAML config file")
    explain.add_argument("--route", required=True, help="the route (e.g. /files/mcp) or its name")
    explain.add_argument("--scopes", default="", help='granted scopes, e.g. "files:read mcp:tools"')
    explain.add_argument(
        "--claims",
        type=_claims,
        help='the user\'s claims as JSON, e.g. \'{"groups": ["eng"]}\': what they could be '
        "granted (facade: auth.authorization_server.grants; other issuers: policy.attainable)",
    )
    explain.add_argument(
        "--issuer",
        help="name of the authorization server the token comes from (default: the gateway's "
        "own when it is one the route trusts, else the first the route trusts)",
    )
    target = explain.add_mutually_exclusive_group()
    target.add_argument("--tool", help="decide tools/call of this tool")
    target.add_argument("--resource", help="decide resources/read of this URI")
    target.add_argument("--prompt", help="decide prompts/get of this prompt")
    target.add_argument(
        "--method",
        help="decide another JSON-RPC method (an MCP method needs the route's scopes; any other "
        "is decided by policy.methods or the default)",
    )
    commands.add_parser(
        "keygen",
        help="print a new session sealing key (for sessions.keys; share it across replicas)",
    )
    commands.add_parser(
        "hash-password",
        help="read a password (prompted, or one line of stdin) and print its hash for a users file",
    )
    schema = commands.add_parser("schema", help="print the config's JSON Schema")
    schema.add_argument("--output", type=Path, help="write to this file instead of stdout")
    schema.add_argument(
        "--markdown",
        action="store_true",
        help="print the configuration reference (docs/configuration.md) instead",
    )
    add_audit_command(commands)
    return parser


def _hash_password() -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().removesuffix("\n")
    try:
        print(hash_password(password))
    except ValueError as exc:
        print(f"hash-password: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    if args.command == "schema":
        return _schema(args.output, markdown=args.markdown)
    if args.command == "keygen":
        print(new_key())
        return 0
    if args.command == "hash-password":
        return _hash_password()
    if args.command == "explain":
        return _explain(args)
    if args.command == "audit":
        return run_audit(args)
    try:
        compiled = _load(args.config)
    except ConfigError as error:
        _print_problems(error)
        return 1
    configure_logging(compiled.config.log)
    try:
        _run(compiled, args.config)
    finally:  # the last lines go out before a traceback, not after it at interpreter exit
        LineWriter.flush_all()
    return 0


def _load(path: Path, *, policy_only: bool = False) -> CompiledConfig:
    """Load a config file as `serve` does, both passes (every problem raised as one
    `ConfigError`); `policy_only` for `explain`, which needs neither secrets nor files."""
    return load(path, policy_only=policy_only)


def _print_problems(error: ConfigError) -> None:
    print(f"{error.source}: {len(error.problems)} problem(s)", file=sys.stderr)
    for problem in error.problems:
        print(f"  - {problem}", file=sys.stderr)


def _check(paths: list[Path]) -> int:
    failed = False
    for path in paths:
        try:
            compiled = _load(path)
        except ConfigError as error:
            _print_problems(error)
            failed = True
            continue
        print(f"{path}: ok ({len(compiled.config.upstreams)} upstream(s))")
    return 1 if failed else 0


def _claims(text: str) -> dict[str, Any]:
    try:
        claims = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not JSON") from None
    if not isinstance(claims, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of claims")
    return claims


def _explain(args: argparse.Namespace) -> int:
    """Exit 0 when the call would be allowed (or for a listing), 3 when refused, 1 on a bad
    config or route."""
    try:
        compiled = _load(args.config, policy_only=True)
    except ConfigError as error:
        _print_problems(error)
        return 1
    config = compiled.config
    upstream = next((u for u in config.upstreams if args.route in (u.route, u.name)), None)
    if upstream is None:
        print(f"no route {args.route!r} in {args.config}", file=sys.stderr)
        return 1
    if upstream.allow_anonymous:
        print(f"{upstream.route}: anonymous route, no policy applies: allow")
        return 0
    policy = compiled.policies[upstream.name]
    if all(getattr(args, t) is None for t in ("tool", "resource", "prompt", "method")):
        return _explain_lists(config, upstream, policy, args)
    method, name = (
        ("tools/call", args.tool)
        if args.tool is not None
        else ("resources/read", args.resource)
        if args.resource is not None
        else ("prompts/get", args.prompt)
        if args.prompt is not None
        else (args.method, None)
    )
    granted = frozenset(args.scopes.split())
    if (like := MCP_METHODS.variant_of(method)) is not None:
        print(f"route:    {upstream.route} ({upstream.name})")
        print(f"call:     {method!r}")
        print(f"refused:  a look-alike of the MCP method {like!r} (400 method_variant)")
        return 3
    decision = policy.decide(granted, method, name)
    rule = policy.rule_for(method, name)
    effective = ScopeImplications(config.scopes.implies).expand(granted)
    needs = (
        "denied whatever the scopes"
        if rule.scopes is None
        else ("needs " + (" ".join(sorted(rule.scopes)) or "no scope"))
    )
    print(f"route:    {upstream.route} ({upstream.name})")
    print(f"call:     {method}" + (f" {name}" if name is not None else ""))
    print(f"granted:  {' '.join(sorted(granted)) or '(none)'}")
    print(f"implied:  {' '.join(sorted(effective - granted)) or '(none)'}")
    print(f"rule:     {rule.source}: {needs}")
    verdict = {Allow: "allow", InsufficientScope: "insufficient_scope", Deny: "deny"}
    print(f"decision: {verdict[type(decision)]}")
    _print_limits(config, policy, method, name)
    kind = NAMED_METHODS.get(method)
    if kind is not None and name is not None:
        trusted = _trusted(config, upstream)
        issuer = args.issuer if args.issuer in trusted else _default_issuer(trusted)
        ceiling, _ = _ceiling(config, upstream, policy, issuer, args.claims)
        print(f"listed:   {_listing_text(policy.listing(kind, name, granted, ceiling))}")
    return 0 if isinstance(decision, Allow) else 3


def _print_limits(
    config: GatewayConfig, policy: RoutePolicy, method: str, name: str | None
) -> None:
    """The route's limits that count the call (`policy.limits`)."""
    limits = policy.limits.applying(method, name) if policy.limits is not None else []
    for summary in [limit.summary() for limit in limits] or ["(none)"]:
        print(f"limit:    {summary}")
    if limits and policy.limits is not None and config.store.backend == "redis":
        print(f"          shared through the store; while it is down: {policy.limits.fallback}")


def _explain_lists(
    config: GatewayConfig, upstream: Upstream, policy: RoutePolicy, args: argparse.Namespace
) -> int:
    """Print, for every tool, resource and prompt the route's policy names, how lists show it
    to this caller: held, attainable (annotated with the scopes it needs) or hidden, and why."""
    granted = frozenset(args.scopes.split())
    trusted = _trusted(config, upstream)
    issuer = args.issuer or _default_issuer(trusted)
    if issuer not in trusted:
        print(
            f"the route does not trust {issuer!r}; it trusts {', '.join(trusted)}", file=sys.stderr
        )
        return 1
    ceiling, source = _ceiling(config, upstream, policy, issuer, args.claims)
    effective = ScopeImplications(config.scopes.implies).expand(granted)
    print(f"route:      {upstream.route} ({upstream.name})")
    print(f"granted:    {' '.join(sorted(granted)) or '(none)'}")
    print(f"implied:    {' '.join(sorted(effective - granted)) or '(none)'}")
    print(f"visibility: {policy.list_visibility}")
    if policy.list_visibility == "attainable":
        shown = "any scope" if ceiling is None else (" ".join(sorted(ceiling)) or "(none)")
        print(f"attainable: {shown} ({source})")
    for kind in ("tools", "resources", "prompts"):
        entries = policy.named(kind, granted, ceiling)
        if not entries:
            continue
        print(f"{kind}:")
        width = max(len(name) for name, _ in entries)
        for name, listing in entries:
            print(f"  {name:<{width}}  {_listing_text(listing)}")
    return 0


def _listing_text(listing: Listing) -> str:
    if isinstance(listing, Held):
        return f"held: listed as is ({listing.rule})"
    if isinstance(listing, Attainable):
        needs = " ".join(sorted(listing.required))
        return f"attainable: listed, annotated as needing {needs} ({listing.rule})"
    why = {
        "denied": "denied whatever the scopes",
        "not_held": "not held (list_visibility: held)",
        "not_attainable": "needs scopes this caller cannot be granted",
    }[listing.reason]
    return f"hidden: {why} ({listing.rule})"


def _default_issuer(trusted: list[str]) -> str:
    return GATEWAY_AS_NAME if GATEWAY_AS_NAME in trusted else trusted[0]


def _trusted(config: GatewayConfig, upstream: Upstream) -> list[str]:
    """The names of the authorization servers whose tokens the route accepts."""
    resource_server = config.auth.resource_server
    names = [s.name for s in resource_server.authorization_servers] if resource_server else []
    if config.auth.authorization_server is not None:
        names.append(GATEWAY_AS_NAME)
    chosen = upstream.authorization_servers
    return [name for name in names if name in chosen] if chosen else names


def _ceiling(
    config: GatewayConfig,
    upstream: Upstream,
    policy: RoutePolicy,
    issuer: str,
    claims: dict[str, Any] | None,
) -> tuple[frozenset[str] | None, str]:
    """What a caller with `claims` could be granted on this route, and where that comes from:
    the grant rules for the gateway's own tokens (as minted: cut to the route's scopes), the
    route's `attainable` rules for other issuers' tokens."""
    implications = ScopeImplications(config.scopes.implies)
    settings = config.auth.authorization_server
    if issuer == GATEWAY_AS_NAME and settings is not None:
        grants = Grants([rule(g.when, g.scopes) for g in settings.grants], implications)
        ceiling = grants.ceiling(claims or {}) & policy.scopes_supported
        return ceiling, f"auth.authorization_server.grants for claims {json.dumps(claims or {})}"
    if upstream.policy.attainable is None:
        return None, "no policy.attainable rules: everything not denied"
    grants = Grants([rule(g.when, g.scopes) for g in upstream.policy.attainable], implications)
    return grants.ceiling(claims or {}), f"policy.attainable for claims {json.dumps(claims or {})}"


def _schema(output: Path | None, *, markdown: bool = False) -> int:
    text = render_configuration_reference() if markdown else render_schema()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux platforms
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run(compiled: CompiledConfig, path: Path) -> None:
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        runner.run(_serve(compiled, path))


async def _serve(compiled: CompiledConfig, path: Path) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and let open responses finish.
    SIGHUP reloads the policies from the config file."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = compiled.config
    app = create_app(compiled, config_path=path)
    loop.add_signal_handler(signal.SIGHUP, app[RELOADER_KEY].trigger)
    running = await start_gateway(config, app)
    # Everything built so far (config, app, modules) lives as long as the process: out of the
    # collector's sight, a full collection scans only what requests created since. It halved
    # the benchmark's p99 at concurrency 64 (full collections had been the slowest requests).
    gc.collect()
    gc.freeze()
    try:
        base = config.public_base(running.port)
        log.info(
            "gateway_started",
            version=__version__,
            listen=f"{config.server.host}:{running.port}",
            metrics_port=running.metrics_port,
            routes={route.name: base + route.path for route in running.app[ROUTES_KEY]},
        )
        LineWriter.flush_all()  # supervisors and tests wait for this line: no delay
        await stop.wait()
        log.info("gateway_stopping")
    finally:
        await running.stop()
    log.info("gateway_stopped")
