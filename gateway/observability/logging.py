"""structlog configuration: JSON lines by default, a console renderer on a terminal.

Log events are past-tense snake_case with data in fields. A last-line-of-defence processor drops
fields whose names say they hold a credential; the code never passes such values in the first place.
Every string a line carries may come from a client (a tool name, a URI, a token's claims), so each
is cut to `MAX_LOGGED_CHARS` with a visible marker, and a line that cannot be serialised as it is
gets its odd values escaped rather than being lost.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Final, Protocol, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.typing import EventDict, Processor, WrappedLogger

from gateway.config.fields import LogFormat
from gateway.config.server import LogSettings
from gateway.observability.audit_events import AuditLogger
from gateway.observability.line_writer import (
    FLUSH_DELAY,
    LineHandler,
    LineLoggerFactory,
    LineWriter,
)

SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "cookie",
        "set_cookie",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "code",
        "client_secret",
        "password",
        "secret",
        "session_id",
        "mcp_session_id",
        "query",
        "query_string",
    }
)


MAX_LOGGED_CHARS: Final = 200
"""Longest string a log field keeps; the rest is replaced by a marker counting it."""
MAX_LOGGED_ITEMS: Final = 50
"""Most items a logged list keeps."""
_MAX_LOGGED_DEPTH: Final = 8
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_UNBOUNDED_KEYS = frozenset({"exc_info", "exception", "stack_info", "_record", "_from_structlog"})
"""Tracebacks (formatted later, kept whole) and structlog's own bookkeeping."""


def drop_sensitive_fields(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in SENSITIVE_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def truncated(value: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """`value` cut to `limit` characters, followed by `…[+N chars]` when anything was cut."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}…[+{len(value) - limit} chars]"


def loggable(value: Any, depth: int = 0) -> Any:
    """A log-safe copy of a field value: strings truncated and lone surrogates (which no UTF-8
    line can hold) written as visible `\\udxxx` text; lists capped at `MAX_LOGGED_ITEMS`."""
    if isinstance(value, str):
        if not value.isascii() and _SURROGATE.search(value) is not None:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return truncated(value)
    if depth >= _MAX_LOGGED_DEPTH:
        return value if isinstance(value, int | float | bool | None) else "…[nested]"
    if isinstance(value, dict):
        return {loggable(str(k), depth + 1): loggable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [loggable(item, depth + 1) for item in list(value)[:MAX_LOGGED_ITEMS]]
        if len(value) > MAX_LOGGED_ITEMS:
            items.append(f"…[+{len(value) - MAX_LOGGED_ITEMS} items]")
        return items
    return value


def bound_field_values(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Make every field log-safe (see `loggable`); runs before tracebacks are formatted, which
    are kept whole."""
    for key, value in event.items():
        if key in _UNBOUNDED_KEYS or value is None or isinstance(value, int | float):
            continue
        if not isinstance(value, str) or len(value) > MAX_LOGGED_CHARS or not value.isascii():
            event[key] = loggable(value)
    return event


def dumps_escaping(value: Any, **kwargs: Any) -> bytes:
    """orjson, or, for a value orjson refuses (lone surrogates, integers over 64 bits, odd
    types), the standard library's encoder over a log-safe copy: the line is escaped, never
    lost."""
    try:
        return orjson.dumps(value, **kwargs)
    except TypeError:
        text = json.dumps(loggable(value), default=repr, ensure_ascii=False)
        return text.encode("utf-8", "backslashreplace")


def configure_logging(
    settings: LogSettings, stream: TextIO | None = None, *, flush_delay: float = FLUSH_DELAY
) -> None:
    """Configure structlog and route stdlib logging (aiohttp's own errors) through it.

    JSON lines to a stream with a binary buffer (production) all go through one `LineWriter`
    (written in batches, at most `flush_delay` seconds late; see `line_writer`)."""
    stream = stream or sys.stderr
    use_console = settings.format == LogFormat.CONSOLE or (
        settings.format == LogFormat.AUTO and stream.isatty()
    )
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    # The access line is on every request's path: JSON goes out as orjson bytes when the stream
    # has a binary buffer (about half the cost of json.dumps to text).
    binary = None if use_console else getattr(stream, "buffer", None)
    LineWriter.flush_all()  # lines of an earlier configuration go out before any new one
    writer = None if binary is None else LineWriter(binary, flush_delay=flush_delay)
    logger_factory: Any = (
        LineLoggerFactory(writer) if writer is not None else structlog.WriteLoggerFactory(stream)
    )
    final: Processor = (
        structlog.processors.JSONRenderer(serializer=dumps_escaping)
        if writer is not None
        else renderer
    )
    level = logging.getLevelNamesMapping()[settings.level.value.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_sensitive_fields,
        bound_field_values,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, final],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream) if writer is None else LineHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    handler.addFilter(_redact_malformed_http)
    ACCESS_LOG.configure(writer, level)
    RAW_LINES.configure(writer, stream)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    # aiohttp's access log prints query strings (which can hold `code=`): the gateway writes its
    # own access line instead, so silence aiohttp's.
    logging.getLogger("aiohttp.access").disabled = True


class LineSink(Protocol):
    """Where whole JSON lines go: the process's `LineWriter` (or a test's `BytesIO`)."""

    def write(self, line: bytes, /) -> object: ...


class AccessLog:
    """The one log line every request writes (`request_completed`).

    In JSON mode it is serialised with orjson, the same shape structlog would produce, without
    running the processor chain, and handed to the line sink (the `LineWriter` every JSON line
    goes through, so no write system call per request): it is on every request's path and its
    fields are fixed and credential-free by construction; strings and lists in them are made
    log-safe (`loggable`) all the same. Otherwise (console format, or a stream without a binary
    buffer) it goes through structlog like any other event.
    """

    def __init__(self) -> None:
        self._sink: LineSink | None = None
        self._level = logging.INFO
        self._fallback = structlog.get_logger("gateway.access")
        self._clock = UtcClock()

    def configure(self, sink: LineSink | None, level: int) -> None:
        self._sink, self._level = sink, level

    def emit(self, fields: dict[str, Any], *, quiet: bool = False) -> None:
        """Write the line at info level (debug when `quiet`: probes and scrapes)."""
        level = logging.DEBUG if quiet else logging.INFO
        if level < self._level:
            return
        for key, value in fields.items():  # on every request: exact type checks, no copies
            kind = type(value)
            if kind is str:
                if len(value) > MAX_LOGGED_CHARS or not value.isascii():
                    fields[key] = loggable(value)
            elif kind is list:
                if len(value) > MAX_LOGGED_ITEMS or not _plain_strings(value):
                    fields[key] = loggable(value)
            elif kind is not int and kind is not float and value is not None:
                fields[key] = loggable(value)
        sink = self._sink
        if sink is None:
            (self._fallback.debug if quiet else self._fallback.info)("request_completed", **fields)
            return
        fields["event"] = "request_completed"
        fields["level"] = "debug" if quiet else "info"
        fields["timestamp"] = self._clock.now()
        sink.write(dumps_escaping(fields) + b"\n")


def _plain_strings(items: list[Any]) -> bool:
    """Every item an exact `str` that `loggable` would leave as it is (short, ASCII)."""
    for item in items:
        if type(item) is not str or len(item) > MAX_LOGGED_CHARS or not item.isascii():
            return False
    return True


class UtcClock:
    """ISO 8601 UTC timestamps as structlog's `TimeStamper(fmt="iso", utc=True)` writes them
    (`datetime.isoformat()`, `Z` for `+00:00`, no fraction at a whole second), for a third of
    the cost: the part up to the second is formatted once a second."""

    def __init__(self) -> None:
        self._second = (-1, "")

    def now(self) -> str:
        return self.at(time.time_ns() // 1000)

    def at(self, micros: int) -> str:
        """The timestamp `micros` microseconds after the epoch."""
        second, micro = divmod(micros, 1_000_000)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        return f"{cached[1]}.{micro:06d}Z" if micro else f"{cached[1]}Z"


ACCESS_LOG = AccessLog()


class RawLines:
    """Whole JSON lines written to the log stream as they are, past every processor: audit
    records, whose hash covers every character of every value (a field cut to
    `MAX_LOGGED_CHARS` would break it). Any log level: the trail is not a debug aid."""

    def __init__(self) -> None:
        self._writer: LineWriter | None = None
        self._stream: TextIO = sys.stderr

    def configure(self, writer: LineWriter | None, stream: TextIO) -> None:
        self._writer, self._stream = writer, stream

    def write(self, lines: bytes) -> None:
        """Write whole lines (each ending in a newline); from any thread."""
        if self._writer is not None:
            self._writer.write(lines)
            return
        try:
            self._stream.write(lines.decode("utf-8"))
            self._stream.flush()
        except (OSError, ValueError):  # a closed stream: as the line writer, drop it
            pass


RAW_LINES = RawLines()


_client_log = structlog.get_logger("gateway.client")


def _redact_malformed_http(record: logging.LogRecord) -> bool:
    """Re-log what aiohttp logs at error level about a client's own fault, below error.

    aiohttp logs a request it cannot parse (bad request line, oversized or malformed header,
    broken chunked body) and a client that went away mid-response at error level, with the
    first bytes of the offending line, which can be a bearer token or cookie. Anyone who can
    open a connection could fill the error log at will, so such a record is dropped and logged
    again as an info event that names the kind of problem and never the bytes.
    """
    error = record.exc_info[1] if record.exc_info else None
    if not record.name.startswith("aiohttp.") or not isinstance(
        error, HttpProcessingError | ConnectionResetError
    ):
        return True
    log = _client_log.debug if record.levelno < logging.INFO else _client_log.info
    if isinstance(error, HttpProcessingError):
        log("malformed_http_request_rejected", reason=_snake(type(error).__name__))
    else:
        log("client_connection_lost")
    return False


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def get_logger(name: str) -> Any:
    if name == "gateway.audit":
        return AuditLogger(structlog.get_logger(name))
    return structlog.get_logger(name)
