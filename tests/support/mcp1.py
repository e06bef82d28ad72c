"""Run the mcp 1.x Python SDK client (``tests/clients/mcp1/client.py``) from tests.

mcp 1.x and 2.x cannot share an environment, so the 1.x client lives in its own venv,
``.venv-mcp1`` at the repository root, built with uv from the pinned
``tests/clients/mcp1/requirements.txt``. A stamp file in the venv holds the hash of that
file (and of the interpreter version); the venv is rebuilt when the stamp does not match.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
MCP1_DIR = REPO_ROOT / "tests" / "clients" / "mcp1"
REQUIREMENTS = MCP1_DIR / "requirements.txt"
CLIENT_SCRIPT = MCP1_DIR / "client.py"
VENV_DIR = REPO_ROOT / ".venv-mcp1"
STAMP = VENV_DIR / ".requirements.sha256"
LOCK_FILE = REPO_ROOT / ".cache" / "venv-mcp1.lock"
HEADERS_ENV = "MCP1_CLIENT_HEADERS"
"""Environment variable holding a JSON object of extra HTTP headers for the 1.x client."""


class Mcp1ClientError(RuntimeError):
    """The 1.x client failed; ``result`` is its parsed JSON output when it printed any."""

    def __init__(
        self, message: str, *, returncode: int | None, result: dict[str, Any] | None, stderr: str
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.result = result
        self.stderr = stderr


def _uv() -> list[str]:
    uv = shutil.which("uv")
    return [uv] if uv is not None else [sys.executable, "-m", "uv"]


def _venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def _wanted_stamp() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"\npython {sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()


def _is_current(stamp: str) -> bool:
    try:
        return _venv_python().is_file() and STAMP.read_text(encoding="ascii").strip() == stamp
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Serialise installs across processes (e.g. pytest-xdist workers)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"command failed ({done.returncode}): {argv}\n{done.stderr.strip() or done.stdout}"
        )


def ensure_mcp1_venv() -> Path:
    """Create or refresh ``.venv-mcp1`` when missing or stale; return its ``python``."""
    stamp = _wanted_stamp()
    if _is_current(stamp):
        return _venv_python()
    with _install_lock():
        if not _is_current(stamp):  # another process may have built it while we waited
            uv = _uv()
            _run([*uv, "venv", "--clear", "--quiet", "--python", sys.executable, str(VENV_DIR)])
            _run(
                [
                    *uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(_venv_python()),
                    "-r",
                    str(REQUIREMENTS),
                ]
            )
            STAMP.write_text(stamp + "\n", encoding="ascii")
    return _venv_python()


async def run_mcp1_client(
    url: str,
    *,
    call: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    check: bool = True,
) -> dict[str, Any]:
    """Run the 1.x client against ``url`` and return its JSON report.

    The report is ``{"protocol_version", "server_name", "tools", "call"}``, with ``call``
    ``{"content", "structured_content", "is_error"}`` or ``None``. When the client fails it
    reports ``{"error": {"type", "message", "status", "code"}}`` (``status`` is the HTTP status
    of an HTTP error); with ``check=True`` (the default) that raises `Mcp1ClientError`, with
    ``check=False`` it is returned. A run over ``timeout`` seconds is killed and raises.
    """
    python = await asyncio.to_thread(ensure_mcp1_venv)
    argv = [str(python), str(CLIENT_SCRIPT), url, "--timeout", str(timeout)]
    if call is not None:
        argv += ["--call", call, "--args", json.dumps(dict(arguments or {}))]
    env = dict(os.environ)
    if headers:
        # Through the environment, not argv: bearer tokens stay out of process listings.
        env[HEADERS_ENV] = json.dumps(dict(headers))

    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )
    try:
        # The client bounds itself by ``timeout``; the margin covers interpreter start-up.
        async with asyncio.timeout(timeout + 15):
            out, err = await process.communicate()
    except TimeoutError:
        raise Mcp1ClientError(
            f"mcp1 client timed out after {timeout}s against {url}",
            returncode=None,
            result=None,
            stderr="",
        ) from None
    finally:
        if process.returncode is None:  # timed out or cancelled: do not leave it behind
            process.kill()
            await process.wait()
    stderr = err.decode(errors="replace")
    try:
        result: dict[str, Any] | None = json.loads(out)
    except json.JSONDecodeError:
        result = None
    if result is None or (check and process.returncode != 0):
        raise Mcp1ClientError(
            f"mcp1 client exited {process.returncode} against {url}: "
            f"{json.dumps(result) if result else out.decode(errors='replace')!r}\n{stderr}",
            returncode=process.returncode,
            result=result,
            stderr=stderr,
        )
    return result
