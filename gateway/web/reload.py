"""Policy hot reload: on SIGHUP and when the config file changes, without a restart.

The new file is validated in full first; only then are the policies swapped, in one assignment.
An invalid file is refused, logged with every problem and counted, and the policies in force
stay in force. Changes outside `policy` and `scopes` (listeners, upstreams, auth) need a restart;
a reload that changes which routes exist is refused rather than half-applied.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from gateway.compiler import load
from gateway.config import ConfigError, GatewayConfig
from gateway.observability.logging import get_logger
from gateway.observability.metrics import GatewayMetrics
from gateway.policy.compiled import PolicyStore

log = get_logger("gateway.reload")


class PolicyReloader:
    def __init__(
        self,
        path: Path,
        running: GatewayConfig,
        store: PolicyStore,
        metrics: GatewayMetrics,
        interval: float,
    ) -> None:
        self.path = path
        self._running = running
        self._store = store
        self._metrics = metrics
        self._interval = interval
        self._stamp = self._file_stamp()
        self._lock = asyncio.Lock()
        self._limited = {name for name, p in store.current.items() if p.limits is not None}
        """Routes whose limit step was installed at start-up (`gateway.web.limiting`)."""

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    async def reload(self) -> bool:
        """Load, validate and swap in the file's policies; False (old ones kept) on any problem."""
        async with self._lock:
            self._stamp = self._file_stamp()
            try:
                compiled = await asyncio.to_thread(load, self.path)
            except ConfigError as error:
                self._refused([str(problem) for problem in error.problems])
                return False
            config, policies = compiled.config, compiled.policies
            routes = {u.name for u in config.upstreams if not u.allow_anonymous}
            if routes != set(self._store.current):
                self._refused(["the set of authenticated routes changed: restart to apply"])
                return False
            added = {n for n, p in policies.items() if p.limits is not None} - self._limited
            if added:
                self._refused([f"limits added to {sorted(added)}: restart to apply"])
                return False
            if config.model_dump(exclude={"upstreams", "scopes"}) != self._running.model_dump(
                exclude={"upstreams", "scopes"}
            ):
                log.warning("config_changes_need_restart", path=str(self.path))
            self._store.current = policies
            self._metrics.policy_reloads.labels("ok").inc()
            log.info("policy_reloaded", path=str(self.path))
            return True

    def _refused(self, problems: list[str]) -> None:
        self._metrics.policy_reloads.labels("invalid").inc()
        log.error("policy_reload_refused", path=str(self.path), problems=problems)

    def trigger(self) -> None:
        """For a signal handler: reload soon, in the event loop."""
        asyncio.get_running_loop().create_task(self.reload())

    async def watch(self) -> None:
        """Poll the file's modification time and size; reload when they change."""
        while True:
            await asyncio.sleep(self._interval)
            if self._file_stamp() != self._stamp:
                await self.reload()


def reload_context(
    reloader: PolicyReloader,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def watching(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(reloader.watch())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return watching
