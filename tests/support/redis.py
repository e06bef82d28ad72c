"""A real Redis for tests: Debian's ``redis-server`` on 127.0.0.1 at a free port.

`ensure_redis_server` returns the path of ``redis-server``, installing Debian's package with
apt-get first if it is missing (the test machines run as root). `RedisServer` runs one instance
with no persistence (``--save ''``, no AOF), so a stop and start on the same port is a Redis
that went away and came back empty: an outage, then recovery. It never uses the default port
6379 and never touches a system Redis service: the process is ours, found and stopped by PID.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from .apt import PackageUnavailableError, apt_install
from .processes import LOOPBACK, ManagedProcess, free_port


class RedisUnavailableError(PackageUnavailableError):
    """``redis-server`` is not installed and cannot be installed here."""


def _installed() -> str | None:
    # Debian installs it in /usr/bin, which a minimal PATH may still lack: look there too.
    return shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")


def ensure_redis_server() -> str:
    """The path of ``redis-server``, installed with apt-get (Debian's package) if it is missing."""
    found = _installed()
    if found:
        return found
    apt_install("redis-server", why="the Redis store tests run a real server")
    found = _installed()
    if not found:
        raise RedisUnavailableError("apt-get installed redis-server but it is not on PATH")
    return found


class RedisServer:
    """One ``redis-server`` on 127.0.0.1:`port`, ready once the port accepts TCP.

    `stop` and `start` again keep the port (and password), so a client built from `url` sees an
    outage and then the same server back, empty. Usable with ``with``; the fixture that starts
    it stops it.
    """

    def __init__(self, *, password: str | None = None, executable: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        # Its working directory: redis-server writes nothing with these flags, but keep any
        # stray file (a crash report) out of the checkout.
        self._dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        argv = [
            executable or ensure_redis_server(),
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--dir", str(self._dir),
        ]  # fmt: skip
        if password is not None:
            argv += ["--requirepass", password]
        self.process = ManagedProcess(argv, cwd=self._dir, ready_port=self.port, name="redis")

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0`` (the password percent-encoded)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    def __repr__(self) -> str:
        return f"<RedisServer {LOOPBACK}:{self.port}>"  # never the password

    def start(self) -> Self:
        """Start it (again, on the same port) and wait until it accepts connections."""
        self.process.start()
        return self

    def stop(self) -> None:
        """Stop it by PID (SIGTERM, then SIGKILL)."""
        self.process.stop()

    def is_running(self) -> bool:
        return self.process.is_running()

    def close(self) -> None:
        """Stop it and remove its working directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
