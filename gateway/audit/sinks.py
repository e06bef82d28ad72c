"""Where sealed audit records go: the log stream, or an append-only file rotated by size.

Both are written from the trail's writer thread only (`gateway.audit.trail`), never from the
event loop.

File sink durability: records are appended with `write(2)` a batch at a time (whatever the
thread found queued), `fsync(2)` follows every checkpoint, the last record of a file before it
is rotated, and the final checkpoint at shutdown. A crashed process loses at most the records
still queued in memory; a crashed machine, at most those since the last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from gateway.audit.chain import Sealed
from gateway.observability.logging import RAW_LINES, UtcClock

MAX_TAIL_SEARCH = 64 * 1024 * 1024
"""Bytes read backwards from a file's end to find its last record, at most."""


class Sink(Protocol):
    def write(self, batch: list[Sealed], *, sync: bool) -> None:
        """Write sealed records in order; `sync`: make them durable before returning."""

    def close(self) -> None: ...


class LogSink:
    """Each record as a JSON line in the log stream: `{"event": "audit_record", "level":
    "info", "timestamp": ..., "record": <the record's canonical JSON>}`."""

    def __init__(self) -> None:
        self._clock = UtcClock()

    def write(self, batch: list[Sealed], *, sync: bool) -> None:
        stamp = self._clock.now().encode("ascii")
        head = b'{"event":"audit_record","level":"info","timestamp":"' + stamp + b'","record":'
        RAW_LINES.write(b"".join(head + data + b"}\n" for _, data in batch))

    def close(self) -> None:
        pass


class FileSink:
    """An append-only audit file: each line one record's canonical JSON."""

    def __init__(self, path: Path, rotate_bytes: int) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self._fd: int | None = None
        self.size = 0

    def open(self) -> None:
        """Open (create) the file for appending, owner-only permissions."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self._fd).st_size

    def write(self, batch: list[Sealed], *, sync: bool) -> None:
        if self._fd is None:
            self.open()
        assert self._fd is not None
        data = b"".join(data + b"\n" for _, data in batch)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)
        if sync:
            os.fsync(self._fd)

    @property
    def full(self) -> bool:
        return self.size >= self.rotate_bytes

    def rotate(self) -> str:
        """Close the file and rename it `<file>.<UTC time>`; the next write opens a new one."""
        self.close()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        os.replace(self.path, target)
        return target.name

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


def last_record(path: Path) -> dict[str, Any] | None:
    """The last complete line of `path` that is a JSON record with `seq` and a hash-sized
    `prev` (None: no such line, or no file): where a restarted gateway continues the chain."""
    try:
        with path.open("rb") as file:
            end = file.seek(0, os.SEEK_END)
            block, tail = 64 * 1024, b""
            position = end
            while position > 0 and end - position < MAX_TAIL_SEARCH:
                step = min(block, position)
                position -= step
                file.seek(position)
                tail = file.read(step) + tail
                lines = tail.split(b"\n")
                for line in reversed(lines[1:-1] if position > 0 else lines[:-1]):
                    record = _record(line)
                    if record is not None:
                        return record
    except OSError:
        return None
    return None


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    seq, prev = value.get("seq"), value.get("prev")
    if type(seq) is not int or not isinstance(prev, str) or len(prev) != 64:
        return None
    return value
