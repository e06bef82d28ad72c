"""structlog configuration: JSON lines by default, a console renderer on a terminal.

Log events are past-tense snake_case with data in fields. A last-line-of-defence processor drops
fields whose names say they hold a credential; the code never passes such values in the first place.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.typing import EventDict, Processor, WrappedLogger

from gateway.config.model import LogFormat, LogSettings

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


def drop_sensitive_fields(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in SENSITIVE_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Configure structlog and route stdlib logging (aiohttp's own errors) through it."""
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
    logger_factory: Any = (
        structlog.BytesLoggerFactory(file=binary)
        if binary is not None
        else structlog.WriteLoggerFactory(file=stream)
    )
    final: Processor = (
        structlog.processors.JSONRenderer(serializer=orjson.dumps)
        if binary is not None
        else renderer
    )
    level = logging.getLevelNamesMapping()[settings.level.value.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_sensitive_fields,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, final],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    handler.addFilter(_redact_malformed_http)
    ACCESS_LOG.configure(binary, level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    # aiohttp's access log prints query strings (which can hold `code=`): the gateway writes its
    # own access line instead, so silence aiohttp's.
    logging.getLogger("aiohttp.access").disabled = True


class AccessLog:
    """The one log line every request writes (`request_completed`).

    In JSON mode it is serialised straight to the binary stream with orjson, the same shape
    structlog would produce, without running the processor chain: it is on every request's path
    and its fields are fixed and credential-free by construction. Otherwise (console format, or
    a stream without a binary buffer) it goes through structlog like any other event.
    """

    def __init__(self) -> None:
        self._sink: BinaryIO | None = None
        self._level = logging.INFO
        self._fallback = structlog.get_logger("gateway.access")

    def configure(self, sink: BinaryIO | None, level: int) -> None:
        self._sink, self._level = sink, level

    def emit(self, fields: dict[str, Any], *, quiet: bool = False) -> None:
        """Write the line at info level (debug when `quiet`: probes and scrapes)."""
        level = logging.DEBUG if quiet else logging.INFO
        if level < self._level:
            return
        sink = self._sink
        if sink is None:
            (self._fallback.debug if quiet else self._fallback.info)("request_completed", **fields)
            return
        fields["event"] = "request_completed"
        fields["level"] = "debug" if quiet else "info"
        fields["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        sink.write(orjson.dumps(fields) + b"\n")
        sink.flush()


ACCESS_LOG = AccessLog()


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
    return structlog.get_logger(name)
