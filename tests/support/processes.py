"""Run real servers as child processes for tests: start, wait until ready, stop by PID.

`ManagedProcess` works as a sync context manager (session-scoped fixtures, plain scripts) and as
an async one (tests on pytest-asyncio's function-scoped loop). Readiness is polled at short
intervals: an HTTP URL that answers with any status line, or a TCP port that accepts. If the
child exits early or is not ready in time, `ProcessStartError` carries its exit status and the
tail of what it wrote to stderr and stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.05
"""Seconds between readiness polls and between exit checks while stopping."""

_PROBE_TIMEOUT = 1.0
_TAIL_BYTES = 4000


class ProcessStartError(RuntimeError):
    """A managed process exited, or never became ready, during start-up."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _http_probe_request(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"ready_url must be http://host:port/..., got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    return parts.hostname, parts.port, request


def _is_status_line(line: bytes) -> bool:
    return line.startswith(b"HTTP/")


def probe_http(url: str) -> bool:
    """Whether ``url`` answers an HTTP GET with a status line (any status)."""
    host, port, request = _http_probe_request(url)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT) as sock:
            sock.sendall(request)
            return _is_status_line(sock.recv(16))
    except OSError:
        return False


def probe_tcp(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


async def probe_http_async(url: str) -> bool:
    """Async `probe_http`: does not block the event loop."""
    host, port, request = _http_probe_request(url)
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                await writer.drain()
                return _is_status_line(await reader.readline())
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False


async def probe_tcp_async(port: int, host: str = LOOPBACK) -> bool:
    """Async `probe_tcp`."""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
    except (OSError, TimeoutError):
        return False


def _tail(path: Path, limit: int = _TAIL_BYTES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return f"[...]{text}" if size > limit else text


class ManagedProcess:
    """A child process that is ready on entry and stopped by PID on exit.

    Args:
        argv: Program and arguments (no shell).
        env: The complete environment for the child; ``None`` inherits this process's.
        cwd: Working directory for the child.
        ready_url: Ready once a GET of this ``http://`` URL gets any HTTP status line.
        ready_port: Ready once 127.0.0.1:ready_port accepts TCP (used if no ready_url).
        ready_timeout: Seconds to wait for readiness before failing.
        stop_timeout: Seconds between SIGTERM and SIGKILL when stopping.
        name: Label for error messages (defaults to the program's file name).

    With neither ``ready_url`` nor ``ready_port``, the process counts as ready once spawned.
    stdout and stderr go to files in a private temporary directory (no pipe can fill up and
    stall the child); `stdout_text` / `stderr_text` read them, also after the child is stopped.
    A stopped process can be started again (same argv, so the same port): an upstream that
    goes away and comes back.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready_url: str | None = None,
        ready_port: int | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        name: str | None = None,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready_url = ready_url
        self.ready_port = ready_port
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.name = name or Path(self.argv[0]).name
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_dir: Path | None = None
        self._final_logs: dict[str, str] = {}

    # -- state ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """PID of the running child."""
        return self._require_popen().pid

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has exited, else ``None``."""
        return self._popen.poll() if self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stdout_text(self) -> str:
        """Everything the child has written to stdout (kept after it is stopped)."""
        return self._read_log("stdout")

    def stderr_text(self) -> str:
        """Everything the child has written to stderr (kept after it is stopped)."""
        return self._read_log("stderr")

    def _read_log(self, stream: str) -> str:
        if self._log_dir is None:
            return self._final_logs.get(stream, "")
        return _tail(self._log_dir / f"{stream}.log", limit=1 << 30)

    def _require_popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._popen

    # -- start ---------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._final_logs = {}
        self._log_dir = Path(tempfile.mkdtemp(prefix=f"managed-{self.name}-"))
        with (
            (self._log_dir / "stdout.log").open("ab") as out,
            (self._log_dir / "stderr.log").open("ab") as err,
        ):
            self._popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                # Our own process group: a Ctrl-C aimed at pytest does not race our shutdown.
                start_new_session=True,
            )

    def _failure(self, reason: str) -> ProcessStartError:
        assert self._log_dir is not None
        stderr = _tail(self._log_dir / "stderr.log").rstrip() or "<empty>"
        stdout = _tail(self._log_dir / "stdout.log").rstrip() or "<empty>"
        return ProcessStartError(
            f"{self.name} {reason}\n  argv: {self.argv}\n  cwd: {self.cwd or os.getcwd()}\n"
            f"--- stderr (tail) ---\n{stderr}\n--- stdout (tail) ---\n{stdout}"
        )

    def _check_alive(self) -> None:
        code = self._require_popen().poll()
        if code is not None:
            raise self._failure(f"exited with status {code} before it was ready")

    def _not_ready(self) -> ProcessStartError:
        target = self.ready_url or f"{LOOPBACK}:{self.ready_port}"
        return self._failure(f"was not ready at {target} within {self.ready_timeout:g}s")

    def start(self) -> Self:
        """Spawn the child and block until it is ready (or raise `ProcessStartError`)."""
        self._spawn()
        try:
            deadline = time.monotonic() + self.ready_timeout
            while True:
                self._check_alive()
                if self._probe():
                    # A child that died (say EADDRINUSE) must not pass on another's answer.
                    self._check_alive()
                    return self
                if time.monotonic() >= deadline:
                    raise self._not_ready()
                time.sleep(POLL_INTERVAL)
        except BaseException:
            self.stop()
            raise

    async def start_async(self) -> Self:
        """`start` for async code: readiness polling does not block the event loop."""
        self._spawn()
        try:
            deadline = time.monotonic() + self.ready_timeout
            while True:
                self._check_alive()
                if await self._probe_async():
                    self._check_alive()
                    return self
                if time.monotonic() >= deadline:
                    raise self._not_ready()
                await asyncio.sleep(POLL_INTERVAL)
        except BaseException:
            await self.stop_async()
            raise

    def _probe(self) -> bool:
        if self.ready_url is not None:
            return probe_http(self.ready_url)
        if self.ready_port is not None:
            return probe_tcp(self.ready_port)
        return True

    async def _probe_async(self) -> bool:
        if self.ready_url is not None:
            return await probe_http_async(self.ready_url)
        if self.ready_port is not None:
            return await probe_tcp_async(self.ready_port)
        return True

    # -- stop ----------------------------------------------------------------------------

    def _signal(self, sig: signal.Signals) -> None:
        popen = self._require_popen()
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, sig)

    def stop(self) -> int | None:
        """SIGTERM the child, wait up to ``stop_timeout``, then SIGKILL; return its status."""
        if self._popen is None:
            return None
        try:
            self._signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._popen.wait()
            return self._popen.returncode
        finally:
            self._cleanup_logs()

    def kill(self) -> int | None:
        """SIGKILL the child at once, with no graceful shutdown (a crash); return its status."""
        if self._popen is None:
            return None
        try:
            self._signal(signal.SIGKILL)
            self._popen.wait()
            return self._popen.returncode
        finally:
            self._cleanup_logs()

    async def stop_async(self) -> int | None:
        """`stop` for async code: waits by polling instead of blocking the event loop."""
        if self._popen is None:
            return None
        try:
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while self._popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(POLL_INTERVAL)
            if self._popen.poll() is None:
                self._signal(signal.SIGKILL)
                while self._popen.poll() is None:
                    await asyncio.sleep(POLL_INTERVAL)
            return self._popen.returncode
        finally:
            self._cleanup_logs()

    def _cleanup_logs(self) -> None:
        if self._log_dir is not None:
            self._final_logs = {stream: self._read_log(stream) for stream in ("stdout", "stderr")}
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    # -- context managers ----------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.start_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()


class HttpServerProcess:
    """A `ManagedProcess` serving HTTP on 127.0.0.1:``port``, with an MCP endpoint at `url`.

    Usable with ``with`` and ``async with``; both yield the handle itself once it is ready.
    """

    def __init__(self, process: ManagedProcess, *, port: int, mcp_path: str = "/mcp") -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://{LOOPBACK}:{port}"
        self.url = f"{self.base_url}{mcp_path}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.process.name} {self.url}>"

    def __enter__(self) -> Self:
        self.process.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.process.stop()

    async def __aenter__(self) -> Self:
        await self.process.start_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.process.stop_async()
