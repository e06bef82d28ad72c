"""The MCP Inspector CLI 2.x (`@modelcontextprotocol/inspector`, npm), run with the Node 22 that
``tests/node`` pins (the Inspector 2.x needs Node >= 22.19; on Node 20 npm would pick 0.x).

It lives in its own tree, ``tests/node/inspector`` (package.json and lock pinned there), because
it is large and only the step-up tests use it. `run_inspector` runs one ``--cli`` command against
an MCP URL with a home directory of its own, so nothing is read from or written to the user's.

For its own OAuth sign-in, `InspectorBrowser` gives it a browser: without a TTY the CLI signs in
only with ``MCP_AUTO_OPEN_ENABLED=true``, and then opens the authorization URL through
``$BROWSER`` (the ``open`` package's bundled ``xdg-open``), here
`tests.support.inspector_browser`, which signs in on the gateway's pages as a given user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.support import inspector_browser
from tests.support.node import NODE_DIR, ensure_node_packages

INSPECTOR_DIR = NODE_DIR / "inspector"
LAUNCHER = (
    INSPECTOR_DIR / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher"
    / "build" / "index.js"
)  # fmt: skip
NODE22 = NODE_DIR / "node_modules" / "node" / "bin" / "node"
INSTALL_TIMEOUT = 300.0
RUN_TIMEOUT = 60.0
BROWSER_EXIT_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def ensure_inspector() -> Path:
    """Install the pinned Inspector with ``npm ci`` unless it is there; return the launcher."""
    ensure_node_packages()  # the Node 22 binary
    if not LAUNCHER.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH; cannot install the MCP Inspector")
        subprocess.run(
            [npm, "ci", "--prefix", str(INSPECTOR_DIR), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT,
            env={**os.environ, "PATH": f"{NODE22.parent}:{os.environ.get('PATH', '')}"},
        )
    return LAUNCHER


@dataclass(frozen=True)
class InspectorRun:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_inspector(
    url: str | None,
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    answer: str | None = None,
) -> InspectorRun:
    """``inspector --cli URL ARGS...`` with its secrets in memory, ``home`` as HOME, and
    ``env`` added to its (otherwise minimal) environment. Without ``url``, ARGS name the server
    (``--config FILE --server NAME``). ``answer`` is written to its stdin (e.g. ``"y\\n"`` to
    its step-up question); without it, stdin is closed and it declines."""
    launcher = ensure_inspector()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{NODE22.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "NO_COLOR": "1",
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        str(NODE22),
        str(launcher),
        "--cli",
        *([] if url is None else [url]),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL if answer is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            stdout, stderr = await process.communicate(None if answer is None else answer.encode())
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return InspectorRun(process.returncode, stdout.decode(), stderr.decode())


class InspectorBrowser:
    """The browser the Inspector CLI opens for its own sign-in, signing in as one user.

    Pass `env` to `run_inspector`. Each authorization the Inspector opens runs
    `tests.support.inspector_browser` (detached from the Inspector, through ``xdg-open``), which
    records its PID and what it did in ``directory``. `settle` waits for every browser opened so
    far to exit (stopping by PID any still running after ``BROWSER_EXIT_TIMEOUT``) and returns
    the visits; leaving the ``async with`` block does the same.
    """

    def __init__(self, directory: Path, username: str, password: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        sign_in = directory / inspector_browser.SIGN_IN_FILE
        sign_in.touch(mode=0o600)
        sign_in.write_text(json.dumps({"username": username, "password": password}))
        self._settled: set[int] = set()

    @property
    def env(self) -> dict[str, str]:
        return {
            "MCP_AUTO_OPEN_ENABLED": "true",
            "BROWSER": f"{sys.executable} -m {inspector_browser.__name__}",
            "PYTHONPATH": str(REPO_ROOT),
            inspector_browser.DIR_ENV: str(self.directory),
        }

    def _pids(self) -> list[int]:
        pids = self.directory / inspector_browser.PIDS_FILE
        return [int(line) for line in pids.read_text().split()] if pids.exists() else []

    async def settle(self) -> list[dict[str, Any]]:
        """Wait for the browsers opened so far to exit; return every visit, in order."""
        for pid in self._pids():
            if pid not in self._settled:
                await _wait_exit(pid, BROWSER_EXIT_TIMEOUT)
                self._settled.add(pid)
        visits = self.directory / inspector_browser.VISITS_FILE
        if not visits.exists():
            return []
        return [json.loads(line) for line in visits.read_text().splitlines()]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.settle()


async def _wait_exit(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` (not our child: ``xdg-open`` started it) exits; kill it by
    PID if it has not within ``timeout``. A pidfd names the process itself, never a reused PID."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        async with asyncio.timeout(timeout):
            await exited.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
