"""Run ``tests/servers/sdk_protected_server.py`` (an OAuth-protected mcp 2.x server) on loopback."""

from __future__ import annotations

from pathlib import Path

from .processes import HttpServerProcess, free_port
from .sdk_server import python_server

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO_ROOT / "tests" / "servers" / "sdk_protected_server.py"
PROTECTED_TOOLS = frozenset({"echo", "whoami"})


def sdk_protected_server(
    issuer: str,
    port: int | None = None,
    *,
    required_scopes: tuple[str, ...] = (),
    json_response: bool = False,
    ready_timeout: float = 20.0,
) -> HttpServerProcess:
    """An unstarted protected SDK server trusting ``issuer``; enter it (``with``/``async with``).

    Its ``url`` (``http://127.0.0.1:PORT/mcp``) is also the RFC 8707 resource its tokens must
    be issued for; ``required_scopes`` are demanded of every token and advertised in its
    protected resource metadata.
    """
    port = free_port() if port is None else port
    args = ["--issuer", issuer]
    for scope in required_scopes:
        args += ["--required-scope", scope]
    if json_response:
        args.append("--json-response")
    return python_server(
        SERVER_SCRIPT, port, args, name="sdk-protected-server", ready_timeout=ready_timeout
    )
