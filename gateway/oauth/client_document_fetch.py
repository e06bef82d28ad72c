"""Fetching a Client ID Metadata Document from the URL a stranger chose, fenced in.

A server-side request forgery risk (draft-ietf-oauth-client-id-metadata-document-00 section
6.5, MCP "SSRF Against Authorization Servers"), so:

- **Where.** `https` only, a path required, no userinfo, fragment or dot segments. The host is
  resolved here, and every address it resolves to must be globally routable: private,
  loopback, link-local, shared, multicast, reserved, unspecified and documentation ranges are
  refused (RFC 6890), IPv4 embedded in IPv6 (mapped, NAT64, 6to4, Teredo) included. The
  connection then goes to exactly those vetted addresses (`_PinnedResolver`), so a DNS answer
  that changes between check and connect (rebinding) cannot reach anything else. TLS still
  verifies the certificate against the URL's host name.
- **Tests only.** `allow_loopback` lets documents come from loopback addresses, over plain
  `http` too (a test's server on 127.0.0.1 has no certificate). Never on in production: any
  client could then make the gateway request its own loopback services.
- **How much.** No redirects (the draft forbids following them), a 200 with a JSON content
  type (`application/json` or `application/<x>+json`), at most `max_bytes` (the draft
  recommends reading 5 KiB), the whole fetch (DNS included) `within` the given seconds, no
  proxy from the environment, no compression.

What the document must say, and how long it is kept, is `gateway.oauth.client_documents`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import MultiMapping
from yarl import URL

from gateway.auth.fetch import read_bounded
from gateway.oauth.redirects import RedirectUriError, check_https_uri, check_registered_redirect

MAX_DOCUMENT_BYTES = 5 * 1024
"""The draft's recommended maximum to read (section 6.6)."""
FETCH_TIMEOUT = 5.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges Python's `is_global` lets through that RFC 6890 (and common sense) keep out.
_SPECIAL_USE = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
        "2001::/23", "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10",
        "ff00::/8",
    )
)  # fmt: skip
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_JSON_TYPE = re.compile(r"application/(?:[A-Za-z0-9!#$&^_.+-]+\+)?json")


class ClientDocumentError(Exception):
    """The client id URL or its document cannot be used; `reason` is a fixed phrase (never
    text from the document), safe to log and to show on the error page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    """The host as it goes to DNS (lowercase, IPv6 without brackets)."""
    port: int


def check_client_id_url(client_id: str, *, allow_loopback: bool = False) -> _Target:
    """Where to fetch `client_id` from, if it is a Client Identifier URL (draft section 3).

    `https`, no userinfo or fragment, a syntactically sound host and port (the redirect URI
    rules), a path without `.` or `..` segments. `http` only with `allow_loopback`, and then
    only to a loopback host written as such.
    """
    try:
        if client_id.startswith("http://"):
            if not allow_loopback:
                raise ClientDocumentError("the client id must be an https URL")
            check_registered_redirect(client_id)  # http only on 127.0.0.1, [::1], localhost
        else:
            check_https_uri(client_id)
    except RedirectUriError as exc:
        raise ClientDocumentError(f"the client id is not a usable URL ({exc.reason})") from None
    parts = urlsplit(client_id)
    if not parts.path:
        raise ClientDocumentError("the client id URL has no path")
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        raise ClientDocumentError("the client id URL has dot segments")
    host = parts.hostname
    assert host is not None  # the redirect URI rules require one
    return _Target(host, parts.port or (443 if parts.scheme == "https" else 80))


def address_allowed(address: IpAddress, *, allow_loopback: bool = False) -> bool:
    """Whether the gateway may connect to `address` to fetch a document.

    Only globally routable unicast addresses. IPv4 carried in IPv6 (mapped, NAT64 prefixes)
    is judged as the IPv4 address; 6to4 and Teredo are refused outright. `allow_loopback`
    (tests) admits 127.0.0.0/8 and ::1, and nothing else.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_allowed(address.ipv4_mapped, allow_loopback=allow_loopback)
        if any(address in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            return address_allowed(embedded, allow_loopback=False)
        if address.scope_id:
            return False
    if address.is_loopback:
        return allow_loopback
    return (
        address.is_global
        and not address.is_private
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_link_local
        and not address.is_unspecified
        and not any(address in net for net in _SPECIAL_USE)
    )


async def fetch_document(
    client_id: str,
    *,
    allow_loopback: bool = False,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    within: float = FETCH_TIMEOUT,
) -> tuple[bytes, MultiMapping[str]]:
    """The body and headers of the document at `client_id`, fetched under the rules above;
    else `ClientDocumentError`."""
    target = check_client_id_url(client_id, allow_loopback=allow_loopback)
    try:
        async with asyncio.timeout(within):
            addresses = await _addresses(target, allow_loopback)
            return await _get(client_id, target, addresses, max_bytes)
    except TimeoutError:
        raise ClientDocumentError("fetching the metadata document timed out") from None


async def _addresses(target: _Target, allow_loopback: bool) -> list[IpAddress]:
    """Every address `target.host` resolves to, each one vetted (all or nothing)."""
    try:
        addresses = [ipaddress.ip_address(target.host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM
            )
        except OSError:
            raise ClientDocumentError("the client id's host does not resolve") from None
        addresses = []
        for info in infos:
            try:
                address = ipaddress.ip_address(info[4][0])
            except ValueError:
                raise ClientDocumentError("the client id's host is not reachable") from None
            if address not in addresses:
                addresses.append(address)
    if not addresses or not all(
        address_allowed(a, allow_loopback=allow_loopback) for a in addresses
    ):
        raise ClientDocumentError("the client id's host is a private or special address")
    return addresses


async def _get(
    client_id: str, target: _Target, addresses: list[IpAddress], max_bytes: int
) -> tuple[bytes, MultiMapping[str]]:
    """GET the document from `addresses` only: 200, JSON, at most `max_bytes`."""
    connector = aiohttp.TCPConnector(
        resolver=_PinnedResolver(target.host, addresses), use_dns_cache=False, force_close=True
    )
    try:
        async with (
            aiohttp.ClientSession(connector=connector, trust_env=False) as session,
            session.get(
                URL(client_id, encoded=True),
                allow_redirects=False,
                headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            ) as response,
        ):
            if response.status != 200:
                raise ClientDocumentError(
                    f"the metadata document URL answered HTTP {response.status}"
                )
            if not _JSON_TYPE.fullmatch(response.content_type):
                raise ClientDocumentError("the metadata document is not served as JSON")
            body = await read_bounded(response.content, max_bytes, declared=response.content_length)
            if body is None:
                raise ClientDocumentError("the metadata document is too large")
            return body, response.headers
    except aiohttp.ClientError as exc:
        raise ClientDocumentError(
            f"the metadata document could not be fetched ({type(exc).__name__})"
        ) from None


class _PinnedResolver(AbstractResolver):
    """Answers aiohttp's DNS question with the addresses already vetted, and nothing else."""

    def __init__(self, host: str, addresses: Iterable[IpAddress]) -> None:
        self._host = host
        self._addresses = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"no pinned address for {host}")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self._addresses
        ]

    async def close(self) -> None:
        return None
