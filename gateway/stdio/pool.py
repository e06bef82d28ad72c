"""The processes of one stdio upstream: started one per session, within the configured limits,
each in its own private directory when asked, and stopped without leaving anything behind."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable

from gateway.config.upstreams import SESSION_DIR, StdioUpstream
from gateway.errors import CapacityError, TooManyError, UpstreamError
from gateway.stdio.process import StdioProcess
from gateway.stdio.session import StdioSession

STOP_TIMEOUT = 5.0
"""Seconds a process gets after its stdin closes, and again after SIGTERM, before SIGKILL."""


class _Live:
    """A running process, its private directory and whose limit it counts against."""

    def __init__(self, stdio: StdioSession, directory: str | None) -> None:
        self.stdio = stdio
        self.directory = directory
        self.limit_key: object = None


class StdioProcesses:
    """The live processes of one stdio upstream, by upstream session id."""

    def __init__(self, config: StdioUpstream, on_exit: Callable[[str], None]) -> None:
        """`on_exit(upstream_id)`: a process ended on its own (not through `stop`)."""
        self._config = config
        self._command = config.command
        self._on_exit = on_exit
        self._live: dict[str, _Live] = {}
        self._per_owner: Counter[object] = Counter()

    def program(self) -> str | None:
        """The program's path on the gateway's PATH, or None when it cannot be found."""
        return shutil.which(self._command[0])

    def get(self, upstream_id: str) -> StdioSession | None:
        live = self._live.get(upstream_id)
        return live.stdio if live is not None else None

    async def start(self, upstream_id: str, owner_key: object) -> StdioSession:
        """Start a process for `owner_key`: 503 past the upstream's limit, 429 past the
        principal's, 502 when the program cannot be found or started."""
        if len(self._live) >= self._config.max_processes:
            raise CapacityError("stdio process limit reached")
        if self._per_owner[owner_key] >= self._config.max_processes_per_principal:
            raise TooManyError("stdio process limit per principal reached")
        live = await self._start(upstream_id)
        live.limit_key = owner_key
        self._per_owner[owner_key] += 1
        return live.stdio

    async def _start(self, upstream_id: str) -> _Live:
        config = self._config
        program = self.program()
        if program is None:
            raise UpstreamError(f"stdio server program not found: {self._command[0]}")
        directory = tempfile.mkdtemp(prefix="mcp-stdio-") if config.private_dir else None

        def place(value: str) -> str:
            return value.replace(SESSION_DIR, directory) if directory is not None else value

        env = {name: place(value.get_secret_value()) for name, value in config.env.items()}
        cwd = place(config.cwd) if config.cwd is not None else directory
        stdio = StdioSession(config.name)
        live = _Live(stdio, directory)
        stdio.process = StdioProcess(
            [program, *self._command[1:]],
            env=env,
            cwd=cwd,
            upstream=config.name,
            on_message=stdio.on_message,
            on_exit=lambda: self._exited(upstream_id),
        )
        self._live[upstream_id] = live
        try:
            await stdio.process.start()
        except OSError:
            self._forget(upstream_id)
            raise UpstreamError("stdio server could not be started") from None
        return live

    def _exited(self, upstream_id: str) -> None:
        live = self._live.get(upstream_id)
        if live is None:
            return
        live.stdio.on_exit()
        self._on_exit(upstream_id)
        self._forget(upstream_id)

    def _forget(self, upstream_id: str) -> None:
        live = self._live.pop(upstream_id, None)
        if live is None:
            return
        if live.limit_key is not None:
            self._per_owner[live.limit_key] -= 1
            if self._per_owner[live.limit_key] <= 0:
                del self._per_owner[live.limit_key]
        if live.directory is not None:
            shutil.rmtree(live.directory, ignore_errors=True)

    async def stop(self, upstream_id: str) -> None:
        """Stop the process (see `StdioProcess.stop`) and forget it."""
        live = self._live.get(upstream_id)
        if live is not None and live.stdio.process is not None:
            await live.stdio.process.stop(grace=STOP_TIMEOUT)
        self._forget(upstream_id)

    def stop_soon(self, upstream_id: str) -> None:
        """Stop the process in the background."""
        task = asyncio.get_running_loop().create_task(self.stop(upstream_id))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def close(self) -> None:
        """Stop every process (gateway shutdown): none is left behind."""
        await asyncio.gather(*(self.stop(upstream_id) for upstream_id in list(self._live)))


_background: set[asyncio.Task[None]] = set()
