"""The `mcp-auth-gateway` command: serve, check."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.config.schema import render_schema
from gateway.observability.logging import configure_logging, get_logger
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
    schema = commands.add_parser("schema", help="print the config's JSON Schema")
    schema.add_argument("--output", type=Path, help="write to this file instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    if args.command == "schema":
        return _schema(args.output)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        _print_problems(error)
        return 1
    configure_logging(config.log)
    _run(config, args.config)
    return 0


def _print_problems(error: ConfigError) -> None:
    print(f"{error.source}: {len(error.problems)} problem(s)", file=sys.stderr)
    for problem in error.problems:
        print(f"  - {problem}", file=sys.stderr)


def _check(paths: list[Path]) -> int:
    failed = False
    for path in paths:
        try:
            config = load_config(path)
        except ConfigError as error:
            _print_problems(error)
            failed = True
            continue
        print(f"{path}: ok ({len(config.upstreams)} upstream(s))")
    return 1 if failed else 0


def _schema(output: Path | None) -> int:
    text = render_schema()
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


def _run(config: GatewayConfig, path: Path) -> None:
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        runner.run(_serve(config, path))


async def _serve(config: GatewayConfig, path: Path) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and let open responses finish.
    SIGHUP reloads the policies from the config file."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(config, config_path=path)
    loop.add_signal_handler(signal.SIGHUP, app[RELOADER_KEY].trigger)
    running = await start_gateway(config, app)
    try:
        base = config.public_base(running.port)
        log.info(
            "gateway_started",
            version=__version__,
            listen=f"{config.server.host}:{running.port}",
            metrics_port=running.metrics_port,
            routes={route.name: base + route.config.route for route in running.app[ROUTES_KEY]},
        )
        await stop.wait()
        log.info("gateway_stopping")
    finally:
        await running.stop()
    log.info("gateway_stopped")
