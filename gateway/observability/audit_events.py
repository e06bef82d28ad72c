"""The `gateway.audit` logger: its events are logged as ever, and also handed to the audit
trail when one runs (`gateway.audit.trail`), whatever the log level.

The modules that log sign-in, token and policy events keep calling
`get_logger("gateway.audit").info(...)`; only this wrapper knows that a trail listens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Observer = Callable[[str, str, dict[str, Any]], None]
"""(level, event, fields) -> None; must not raise."""


class AuditEvents:
    """Where `gateway.audit` events go besides the log: one observer, or none."""

    def __init__(self) -> None:
        self.observer: Observer | None = None


AUDIT_EVENTS = AuditEvents()


class AuditLogger:
    """A structlog logger whose events are also given to `AUDIT_EVENTS.observer`."""

    __slots__ = ("_log",)

    def __init__(self, log: Any) -> None:
        self._log = log

    def _observe(self, level: str, event: str, fields: dict[str, Any]) -> None:
        observer = AUDIT_EVENTS.observer
        if observer is not None:
            observer(level, event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._observe("debug", event, fields)
        self._log.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._observe("info", event, fields)
        self._log.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._observe("warning", event, fields)
        self._log.warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._observe("error", event, fields)
        self._log.error(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._observe("error", event, fields)
        self._log.exception(event, **fields)

    def bind(self, **fields: Any) -> AuditLogger:
        return AuditLogger(self._log.bind(**fields))
