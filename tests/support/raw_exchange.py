"""Raw bytes to a server on one fresh connection, and every answer back as h11 reads it.

h11 is an HTTP/1.1 parser independent of the gateway's (httptools) and of aiohttp's (llhttp), so
two servers' answers to the same bytes can be compared as parsed messages, and as bytes where h11
cannot parse them. Blocking sockets: for synchronous tests (hypothesis properties) running beside
the servers' event loop.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import h11

VOLATILE_HEADERS = frozenset({b"date", b"x-request-id"})
"""Headers whose values differ between any two answers (the moment, the per-request id)."""
_VOLATILE_LINE = re.compile(rb"(?im)^(date|x-request-id):[^\r\n]*")


@dataclass(frozen=True)
class Answer:
    """One response (or 1xx interim response) as h11 parsed it."""

    status: int
    http_version: bytes
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    """(lower-case name, value) in the order received."""
    body: bytes

    def values(self, name: bytes) -> list[bytes]:
        return [value for header, value in self.headers if header == name]


@dataclass(frozen=True)
class Exchange:
    """What came back on one connection."""

    answers: tuple[Answer, ...]
    """Complete answers (interim ones included), in order."""
    closed: bool
    """The server ended the connection (EOF or reset) before the client stopped reading."""
    timed_out: bool
    """Nothing arrived for `timeout` seconds while more was expected."""
    error: str | None
    """Why h11 could not parse what came back (then `unparsed` holds the bytes from there)."""
    unparsed: bytes
    """Bytes h11 did not turn into complete answers: after a refusal, after an answer that ended
    the connection (`Connection: close`, HTTP/1.0), or a partial answer."""
    raw: bytes
    """Everything received."""

    def finals(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status >= 200]

    def normalized(self) -> dict[str, object]:
        """What two servers must agree on: the answers without the values of `Date` and
        `X-Request-Id` (and the request ids wherever else they appear), whether the server
        closed, and any bytes h11 could not parse, with the same values taken out."""
        ids = {value for answer in self.answers for value in answer.values(b"x-request-id")}
        ids |= set(re.findall(rb"(?im)^x-request-id:[ \t]*([^\r\n]*?)[ \t]*\r?$", self.raw))

        def scrub(data: bytes) -> bytes:
            for request_id in ids:
                if request_id:
                    data = data.replace(request_id, b"<request-id>")
            return data

        answers = [
            (
                answer.status,
                answer.http_version,
                answer.reason,
                tuple(
                    (name, b"<volatile>" if name in VOLATILE_HEADERS else scrub(value))
                    for name, value in answer.headers
                ),
                scrub(answer.body),
            )
            for answer in self.answers
        ]
        unparsed = scrub(_VOLATILE_LINE.sub(rb"\1: <volatile>", self.unparsed))
        return {
            "answers": answers,
            "closed": self.closed,
            "timed_out": self.timed_out,
            "h11 error": self.error is not None,
            "unparsed": unparsed,
        }


def exchange(
    port: int,
    data: bytes | Sequence[bytes],
    methods: Sequence[str],
    *,
    until_closed: bool,
    timeout: float = 5.0,
) -> Exchange:
    """Send `data` on a new connection to 127.0.0.1:`port` and read the answers.

    `data` is one write, or several: each but the last is sent once the answers to all earlier
    ones, one final answer per write, are complete. `methods` are those of the requests, in
    order (h11 must know a HEAD's answer has no body); answers beyond them are read as answers
    to a GET. Reading stops when the server closes, when nothing arrives for `timeout` seconds,
    or (unless `until_closed`) once `len(methods)` final answers are complete.
    """
    writes = [data] if isinstance(data, bytes) else list(data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        reader = _Reader(sock, methods)
        for index, chunk in enumerate(writes):
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                reader.closed = reader.stopped = True
                break
            if index < len(writes) - 1:
                reader.read(index + 1)
                if reader.stopped:
                    break
        if until_closed:
            reader.read(None)
            reader.drain()
        else:
            reader.read(len(methods))
            if reader.finals < len(methods):  # the server will answer no more
                reader.drain()
    return reader.result(until_closed)


class _Reader:
    """The answers on one connection, read as h11's client role."""

    def __init__(self, sock: socket.socket, methods: Sequence[str]) -> None:
        self.sock = sock
        self.methods = methods
        self.client = h11.Connection(h11.CLIENT)
        self.answers: list[Answer] = []
        self.raw = bytearray()
        self.fed = 0
        self.finals = 0
        self.closed = self.timed_out = False
        self.stopped = False
        """Nothing more will be parsed: closed, timed out, refused, or bound to close."""
        self.error: str | None = None
        self.head: h11.Response | None = None
        self.body = bytearray()
        self._announce()

    def _announce(self) -> None:
        # h11 parses an answer only to a request it sent: tell it one went out.
        methods = self.methods
        method = methods[self.finals] if self.finals < len(methods) else "GET"
        self.client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        self.client.send(h11.EndOfMessage())

    def read(self, finals: int | None) -> None:
        """Until `finals` final answers are complete (None: until the server closes)."""
        client = self.client
        while not self.stopped and (finals is None or self.finals < finals):
            try:
                event = client.next_event()
            except h11.RemoteProtocolError as exc:
                self.error = str(exc)
                self.drain()
                return
            if event is h11.NEED_DATA:
                if self.closed:
                    self.stopped = True
                    return
                chunk, self.closed, self.timed_out = _recv(self.sock)
                if self.timed_out:
                    self.stopped = True
                    return
                self.raw += chunk
                self.fed += len(chunk)
                if (
                    self.closed
                    and client.their_state is h11.SEND_RESPONSE
                    and not client.trailing_data[0]
                ):
                    self.stopped = True  # closed with no answer begun: not a parse error
                    return
                client.receive_data(chunk)  # b"": the connection closed
            elif isinstance(event, h11.InformationalResponse):
                self.answers.append(_answer(event, b""))
            elif isinstance(event, h11.Response):
                self.head, self.body = event, bytearray()
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self.head is not None
                self.answers.append(_answer(self.head, self.body))
                self.finals += 1
                if client.their_state is h11.MUST_CLOSE:
                    # The answer said the connection ends (`Connection: close`, or HTTP/1.0
                    # without keep-alive, which h11 does not follow): whatever comes before the
                    # close is read as more answers, by a fresh parser.
                    rest = client.trailing_data[0]
                    self.client = client = h11.Connection(h11.CLIENT)
                    self._announce()
                    if rest:  # (no data would mean the end of the connection to h11)
                        client.receive_data(bytes(rest))
                    continue
                client.start_next_cycle()
                self._announce()
            else:  # ConnectionClosed (PAUSED cannot be: each cycle is started)
                self.stopped = True
                return

    def drain(self) -> None:
        """Read what is left as bytes, until the server closes (or goes quiet)."""
        self.stopped = True
        while not (self.closed or self.timed_out):
            chunk, self.closed, self.timed_out = _recv(self.sock)
            self.raw += chunk

    def result(self, until_closed: bool) -> Exchange:
        """The answers; what was not parsed counts only when all was read (`until_closed`, or
        h11 refused it): else it is whatever came in the same reads as the last answer."""
        raw = bytes(self.raw)
        if self.error is not None:
            unparsed = raw
        elif until_closed:
            unparsed = bytes(self.client.trailing_data[0]) + raw[self.fed :]
        else:
            unparsed = b""
        return Exchange(tuple(self.answers), self.closed, self.timed_out, self.error, unparsed, raw)


def _recv(sock: socket.socket) -> tuple[bytes, bool, bool]:
    """(bytes, closed, timed out)."""
    try:
        chunk = sock.recv(65536)
    except TimeoutError:
        return b"", False, True
    except ConnectionResetError:
        return b"", True, False
    return chunk, not chunk, False


def _answer(event: h11.Response | h11.InformationalResponse, body: bytes | bytearray) -> Answer:
    return Answer(
        event.status_code,
        bytes(event.http_version),
        bytes(event.reason),
        tuple((bytes(name), bytes(value)) for name, value in event.headers),
        bytes(body),
    )
