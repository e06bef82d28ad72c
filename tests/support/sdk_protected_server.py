"""Run ``tests/servers/sdk_protected_server.py`` (an OAuth-protected mcp 2.x server) on loopback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .processes import HttpServerProcess, ManagedProcess, free_port

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
    argv = [sys.executable, str(SERVER_SCRIPT), "--port", str(port), "--issuer", issuer]
    for scope in required_scopes:
        argv += ["--required-scope", scope]
    if json_response:
        argv.append("--json-response")
    env = {key: value for key, value in os.environ.items() if key in {"PATH", "LANG", "LC_ALL"}}
    env["PYTHONUNBUFFERED"] = "1"
    process = ManagedProcess(
        argv,
        env=env,
        cwd=REPO_ROOT,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        ready_timeout=ready_timeout,
        name="sdk-protected-server",
    )
    return HttpServerProcess(process, port=port)
