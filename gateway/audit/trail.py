"""The running audit trail: records handed over on the event loop, chained, checkpointed and
written by one thread.

On the loop a record costs building its dict and one queue put (`append`); canonical JSON,
SHA-256, signing and every write happen in the writer thread, which takes whatever is queued
as one batch. A checkpoint follows every `checkpoint_records` records, and
`checkpoint_seconds` after the first record since the last one; `close` (the app's cleanup)
writes what is queued and a final checkpoint, then syncs. One trail per process
(`AUDIT.trail`): the `gateway.audit` events of any module reach it through
`AUDIT_EVENTS`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from gateway.audit.canonical import FORMAT_VERSION, canonical, record_hash
from gateway.audit.chain import Chain, KeySource, Sealed
from gateway.audit.sinks import FileSink, LogSink, Sink, last_record
from gateway.observability.audit_events import AUDIT_EVENTS
from gateway.observability.logging import SENSITIVE_KEYS, UtcClock, get_logger
from gateway.policy.redaction import NO_RULES, Hasher, Redaction

error_log = get_logger("gateway.error")
_STOP: Final = object()


class AuditTrail:
    """Start with `start()` (on the loop, at app start-up), stop with `close()`."""

    def __init__(
        self,
        sink: Sink,
        key: KeySource,
        hasher: Hasher,
        *,
        checkpoint_records: int = 1000,
        checkpoint_seconds: float = 60.0,
    ) -> None:
        self.sink = sink
        self.hasher = hasher
        self._key = key
        self._every = checkpoint_records
        self._interval = checkpoint_seconds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._clock = UtcClock()
        self._writer_clock = UtcClock()
        self._chain = Chain()
        self._first: list[Sealed] = []
        self.write_failures = 0
        self.redaction: Callable[[str], Redaction] = lambda route: NO_RULES
        """A route's redaction rules in force (set by the app: they reload with the policy)."""
        self.count: Callable[[str, int], None] = lambda outcome, records: None
        """Counts records written (`outcome`: their kind) or lost (`write_failed`)."""

    def now(self) -> str:
        return self._clock.now()

    def append(self, body: dict[str, Any]) -> None:
        """Queue a record (its chain fields are added by the writer thread)."""
        self._queue.put(body)

    def event(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """A `gateway.audit` event as a record (credential-named fields redacted, as in logs)."""
        safe = {
            key: "[redacted]" if key in SENSITIVE_KEYS else _plain(value)
            for key, value in fields.items()
        }
        body = {"v": FORMAT_VERSION, "kind": "event", "time": self._clock.now(),
                "event": event, "level": level, "fields": safe}  # fmt: skip
        self._queue.put(body)

    def start(self) -> None:
        """Begin the chain and open the file (so a file that cannot be written stops the
        gateway's start-up with an `OSError`), then start the writer thread."""
        if AUDIT.trail is not None:
            raise RuntimeError("an audit trail is already running in this process")
        self._first = self._begin(self._writer_clock)
        if isinstance(self.sink, FileSink):
            self.sink.open()
        AUDIT.trail = self
        AUDIT_EVENTS.observer = self.event
        self._thread.start()

    def close(self) -> None:
        """Write everything queued and a final checkpoint; wait for the writer thread."""
        if AUDIT.trail is self:
            AUDIT.trail = None
            AUDIT_EVENTS.observer = None
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._write_until_stopped()
        except Exception:  # the thread's last word: requests go on, unaudited
            error_log.exception("audit_writer_failed")

    def _write_until_stopped(self) -> None:
        clock = self._writer_clock
        pending, self._first = self._first, []
        due: float | None = None
        while True:
            items = self._next(due)
            stop = any(item is _STOP for item in items)
            batch = pending
            pending = []
            for item in items:
                if item is not _STOP:
                    try:
                        batch.append(self._chain.seal(item))
                    except (ValueError, TypeError):  # not JSON (NaN): never stop the writer
                        error_log.error("audit_record_unserializable", kind=item.get("kind"))
                        continue
                    if self._chain.since_checkpoint >= self._every:
                        batch.append(self._checkpoint(clock))
            if due is None and self._chain.since_checkpoint:
                due = time.monotonic() + self._interval
            if stop or (due is not None and time.monotonic() >= due):
                if stop or self._chain.since_checkpoint:
                    batch.append(self._checkpoint(clock, final=stop))
                due = None
            self._write(batch)
            if stop:
                self.sink.close()
                return
            if isinstance(self.sink, FileSink) and self.sink.full:
                pending = self._rotate(clock)

    def _next(self, due: float | None) -> list[Any]:
        """Block for the next item (until `due` at most), then take all that is queued."""
        timeout = None if due is None else max(0.0, due - time.monotonic())
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _checkpoint(self, clock: UtcClock, *, final: bool = False) -> Sealed:
        return self._chain.checkpoint(self._key(), clock.now(), final=final)

    def _write(self, batch: list[Sealed]) -> None:
        if not batch:
            return
        sync = any(record.get("kind") == "checkpoint" for record, _ in batch)
        try:
            self.sink.write(batch, sync=sync)
        except OSError as exc:
            self.write_failures += 1  # `verify` shows these records missing (a sequence gap)
            self.count("write_failed", len(batch))
            error_log.error("audit_write_failed", records=len(batch), reason=exc.strerror)
            return
        kinds: dict[str, int] = {}
        for record, _ in batch:
            kind = str(record.get("kind"))
            kinds[kind] = kinds.get(kind, 0) + 1
        for kind, records in kinds.items():
            self.count(kind, records)

    def _begin(self, clock: UtcClock) -> list[Sealed]:
        """The first record: a new chain, or for a file that exists, a link to its last
        record (the file is rotated away first: it may end in a partial line)."""
        sink = self.sink
        if isinstance(sink, FileSink) and _has_content(sink.path):
            last = last_record(sink.path)
            previous = sink.rotate()
            if last is not None:
                self._chain = Chain(last["seq"] + 1, record_hash(canonical(last)))
                return [self._chain.seal(_link(clock, previous, last))]
        return [self._chain.start(clock.now())]

    def _rotate(self, clock: UtcClock) -> list[Sealed]:
        """End the full file with a final checkpoint, rename it, and begin the next file with
        a record that links to it."""
        if self._chain.since_checkpoint:
            self._write([self._checkpoint(clock, final=True)])
        assert isinstance(self.sink, FileSink)
        previous = self.sink.rotate()
        body = {"v": FORMAT_VERSION, "kind": "file_started", "time": clock.now(),
                "previous_file": previous}  # fmt: skip
        return [self._chain.seal(body)]


def _link(clock: UtcClock, previous: str, last: dict[str, Any]) -> dict[str, Any]:
    """The record a restarted gateway begins its file with; `previous_tail_signed` says
    whether the file before ended in a final checkpoint (else it was cut off, or its gateway
    did not stop cleanly: its last records are covered only from here on)."""
    signed = last.get("kind") == "checkpoint" and last.get("final") is True
    return {"v": FORMAT_VERSION, "kind": "file_started", "time": clock.now(),
            "previous_file": previous, "previous_tail_signed": signed}  # fmt: skip


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON value for an event field (other types as text)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if depth < 8 and isinstance(value, list | tuple | set | frozenset):
        return [_plain(item, depth + 1) for item in value]
    if depth < 8 and isinstance(value, dict):
        return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    return str(value)


class AuditHub:
    """The process's running trail, if any (read on every request: one attribute)."""

    def __init__(self) -> None:
        self.trail: AuditTrail | None = None


AUDIT = AuditHub()


def build_sink(kind: str, file: str | None, rotate_bytes: int) -> Sink:
    if kind == "file":
        assert file is not None  # validated: sink file needs file
        return FileSink(Path(file), rotate_bytes)
    return LogSink()
