"""One stdio MCP server process: newline-delimited JSON-RPC on its stdin and stdout.

The child gets exactly the configured environment (never the gateway's own, which holds its
secrets), runs in its own process group so a wrapper's children (`npx` -> `node`) stop with it,
and has its stderr copied line by line into the structured log. What it writes on stdout is
parsed strictly, one message per line (MCP stdio transport); anything else is logged and
dropped, never passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

from gateway.jsonrpc import MessageError, parse_message
from gateway.observability.logging import get_logger

log = get_logger("gateway.stdio")

MAX_LINE_BYTES = 4 * 1024 * 1024
"""Longest line accepted from the child's stdout (one JSON-RPC message)."""
MAX_STDERR_LINE = 2000
"""Characters of one stderr line kept in the log."""


class StdioProcess:
    """A started child; `on_message` gets each JSON-RPC object it writes, `on_exit` runs once
    when it is gone (exited, killed, or its stdout closed)."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        upstream: str,
        on_message: Callable[[dict[str, Any]], None],
        on_exit: Callable[[], None],
    ) -> None:
        self._argv = argv
        self._env = dict(env)
        self._cwd = cwd
        self._upstream = upstream
        self._on_message = on_message
        self._on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.exited = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and not self.exited.is_set()

    async def start(self) -> None:
        """Start the child (raises OSError if it cannot be started)."""
        self._process = process = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            cwd=self._cwd,
            limit=MAX_LINE_BYTES,
            start_new_session=True,
        )
        log.info("stdio_started", upstream=self._upstream, pid=process.pid)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_stdout()),
            loop.create_task(self._read_stderr()),
        ]

    async def send(self, message: Mapping[str, Any]) -> None:
        """Write one message as one line; raises ConnectionError once the child is gone."""
        process = self._process
        if process is None or process.stdin is None or self.exited.is_set():
            raise ConnectionError("the stdio server is not running")
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            process.stdin.write(line.encode())
            await process.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionError("the stdio server closed its input") from exc

    async def _read_stdout(self) -> None:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                self._dispatch(line)
        except ValueError:  # a line over MAX_LINE_BYTES: the stream cannot be trusted further
            log.warning("stdio_line_too_long", upstream=self._upstream, limit=MAX_LINE_BYTES)
        finally:
            with contextlib.suppress(ProcessLookupError):
                if process.returncode is None:
                    os.killpg(process.pid, signal.SIGTERM)
            status = await process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # no orphans: whatever it left running
            self.exited.set()
            log.info("stdio_exited", upstream=self._upstream, pid=process.pid, status=status)
            self._on_exit()

    def _dispatch(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = parse_message(line)
        except MessageError as exc:
            log.warning("stdio_unparseable", upstream=self._upstream, kind=exc.kind)
            return
        if not isinstance(message.payload, dict):  # a batch: not allowed on stdio (2025-11-25)
            log.warning("stdio_unparseable", upstream=self._upstream, kind="batch")
            return
        self._on_message(message.payload)

    async def _read_stderr(self) -> None:
        process = self._process
        assert process is not None
        assert process.stderr is not None
        with contextlib.suppress(ValueError):  # an endless line: stop copying, keep running
            while line := await process.stderr.readline():
                text = line.decode("utf-8", errors="replace").rstrip()
                if text:
                    log.info(
                        "upstream_stderr", upstream=self._upstream, line=text[:MAX_STDERR_LINE]
                    )

    async def stop(self, *, grace: float) -> None:
        """Close its stdin (the MCP stdio shutdown), then SIGTERM its process group, then
        SIGKILL, each after `grace` seconds; returns once it is gone."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.exited.wait()
                    break
        for task in self._tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
