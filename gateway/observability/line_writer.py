"""Log lines gathered in memory and written to the binary stream a batch at a time.

A request should not cost a write system call for its access line. Every JSON line of the
process (the access line, structlog's events, the standard library's records) goes through one
`LineWriter`, so batching never reorders them. A batch is written when it passes
`FLUSH_BYTES`, `FLUSH_DELAY` seconds after its first line (one timer on the running event loop,
armed when the buffer goes from empty to non-empty), at once for a line at warning level or
above (an operator sees errors as they happen), when the gateway stops, and at interpreter exit.
Without a running event loop (start-up, another thread) a line is written through at once,
after whatever is still buffered.

A process killed outright (SIGKILL, OOM) loses the lines written in its last `FLUSH_DELAY`
seconds (longer if the event loop was busy past the deadline), at most `FLUSH_BYTES` of them.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from typing import BinaryIO, ClassVar, Final

FLUSH_DELAY: Final = 0.005
"""Seconds a line may wait in the buffer."""
FLUSH_BYTES: Final = 64 * 1024
"""A buffer this large is written at once."""


class LineWriter:
    """Whole lines (newline included) for one binary stream, written in batches.

    A write error (a closed stream, EPIPE from a reader that went away) drops the batch: a
    log line is never worth failing or stalling a request, and nothing retries in a loop.
    Lines may come from any thread; the buffer is guarded by a lock.
    """

    _live: ClassVar[weakref.WeakSet[LineWriter]] = weakref.WeakSet()

    def __init__(
        self,
        sink: BinaryIO,
        *,
        flush_delay: float = FLUSH_DELAY,
        flush_bytes: int = FLUSH_BYTES,
    ) -> None:
        self._sink = sink
        self._delay = flush_delay
        self._limit = flush_bytes
        self._pending: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.dropped_lines = 0
        """Lines lost to write errors."""
        LineWriter._live.add(self)

    @property
    def pending_lines(self) -> int:
        return len(self._pending)

    def write(self, line: bytes, *, urgent: bool = False) -> None:
        """Buffer `line`; `urgent` writes it (and everything before it) now."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append(line)
            self._size += len(line)
            if not urgent and loop is not None and self._size < self._limit:
                if self._timer is None:
                    self._timer = loop.call_later(self._delay, self._flush_due)
                    self._timer_loop = loop
                    return
                if self._timer_loop is loop:
                    return
            # Urgent, full, no loop, or the timer sits on another (possibly closed) loop.
            self._write_pending()

    def flush(self) -> None:
        """Write everything buffered now."""
        with self._lock:
            self._write_pending()

    @classmethod
    def flush_all(cls) -> None:
        """Flush every writer of the process (the gateway's stop path, interpreter exit)."""
        for writer in list(cls._live):
            writer.flush()

    def _flush_due(self) -> None:
        with self._lock:
            self._timer = self._timer_loop = None
            self._write_pending()

    def _write_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_loop = None
        if not self._pending:
            return
        data = b"".join(self._pending)
        count = len(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            self._sink.write(data)
            self._sink.flush()
        except (OSError, ValueError):  # EPIPE, EBADF, a closed file
            self.dropped_lines += count


atexit.register(LineWriter.flush_all)


class LineLogger:
    """structlog's wrapped logger over a `LineWriter`: the method name is the level, and a line
    at warning or above is written at once."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def debug(self, message: bytes) -> None:
        self._writer.write(message + b"\n")

    def warning(self, message: bytes) -> None:
        self._writer.write(message + b"\n", urgent=True)

    msg = info = debug
    warn = error = err = exception = critical = fatal = failure = warning


class LineLoggerFactory:
    """One `LineLogger` for every structlog logger: they share the writer and its order."""

    def __init__(self, writer: LineWriter) -> None:
        self._logger = LineLogger(writer)

    def __call__(self, *args: object) -> LineLogger:
        return self._logger


class LineHandler(logging.Handler):
    """A standard library handler writing formatted records as lines through a `LineWriter`
    (a record at warning or above at once)."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            self.writer.write(line, urgent=record.levelno >= logging.WARNING)
        except Exception:
            self.handleError(record)
