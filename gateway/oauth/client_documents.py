"""Client ID Metadata Documents: an `https://` URL as a `client_id`, its metadata fetched from it.

draft-ietf-oauth-client-id-metadata-document-00, as MCP 2025-11-25 and 2026-07-28 require of an
authorization server that supports it. The client hosts a JSON document at its client id URL;
the gateway fetches it when the client shows up, checks it like an RFC 7591 registration, and
caches it. Nothing is stored: the document is the registration.

Fetching a URL a stranger chose is a server-side request forgery risk (draft section 6.5,
MCP "SSRF Against Authorization Servers"), so the fetch is fenced in:

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
  recommends reading 5 KiB), the whole fetch (DNS included) within `timeout`, no proxy from
  the environment, no compression. At most `MAX_CONCURRENT_FETCHES` different URLs are fetched
  at once; concurrent requests for one URL share one fetch.
- **What.** `client_id` must equal the URL exactly (simple string comparison); `client_name`
  and `redirect_uris` are required (MCP); the rest is checked by `parse_client_metadata`, so
  redirect URIs follow the same strict rules as registered ones. Only public clients are
  accepted: `token_endpoint_auth_method` must be absent or `none` (the draft forbids shared
  secrets, and `private_key_jwt` is not supported), and a `client_secret` member is refused.

Caching follows the document's `Cache-Control`: `no-store` and `no-cache` are honoured exactly
(fetched again every time it is needed); `max-age` (less any `Age`) is kept within
[`MIN_CACHE_SECONDS`, `MAX_CACHE_SECONDS`]: the floor spares the client's server (and the
gateway) a fetch per request when a document says `max-age=0`, the ceiling bounds how long a
withdrawn redirect URI keeps working. Without `max-age`, `DEFAULT_CACHE_SECONDS`. Failures
are never cached (the draft forbids it). The cache holds at most `MAX_CACHED` documents.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import MultiMapping
from yarl import URL

from gateway.oauth.client_metadata import ClientMetadataError, parse_client_metadata
from gateway.oauth.redirects import RedirectUriError, check_https_uri, check_registered_redirect
from gateway.oauth.store import NO_CLIENT_AUTH, ClientRecord
from gateway.observability.logging import get_logger

audit = get_logger("gateway.audit")

MAX_DOCUMENT_BYTES = 5 * 1024
"""The draft's recommended maximum to read (section 6.6)."""
FETCH_TIMEOUT = 5.0
MIN_CACHE_SECONDS = 60.0
MAX_CACHE_SECONDS = 3600.0
DEFAULT_CACHE_SECONDS = 300.0
MAX_CACHED = 1000
MAX_CONCURRENT_FETCHES = 64

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


def is_client_id_url(client_id: str) -> bool:
    """Whether `client_id` is in the URL namespace this module owns.

    Every `http(s)://` client id counts, valid or not, so such an id is never looked up among
    registered clients (the gateway never issues one, draft section 7.1).
    """
    return client_id[:8].lower().startswith(("https://", "http://"))


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


def cache_lifetime(
    headers: MultiMapping[str],
    *,
    floor: float = MIN_CACHE_SECONDS,
    ceiling: float = MAX_CACHE_SECONDS,
    default: float = DEFAULT_CACHE_SECONDS,
) -> float:
    """Seconds a fetched document may be reused, from its response headers (RFC 9111).

    0 for `no-store` or `no-cache` (honoured exactly); `max-age` less `Age`, clamped into
    [floor, ceiling]; `default` (clamped likewise) when there is no usable `max-age`.
    """
    directives: dict[str, str] = {}
    for value in headers.getall("Cache-Control", ()):
        for item in value.split(","):
            name, _, argument = item.strip().partition("=")
            directives.setdefault(name.strip().lower(), argument.strip().strip('"'))
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    lifetime = default
    max_age = directives.get("max-age", "")
    if max_age.isdigit():
        age = headers.get("Age", "0")
        lifetime = int(max_age) - (int(age) if age.isdigit() else 0)
    return min(max(lifetime, floor), ceiling)


def parse_document(client_id: str, body: bytes) -> ClientRecord:
    """The client a fetched document describes, or `ClientDocumentError`.

    Duplicate members are refused (which `client_id` would count?); the metadata goes through
    `parse_client_metadata` with the auth method fixed to `none` once it is known to be absent
    or `none`, since a document can hold no shared secret.
    """
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        raise ClientDocumentError("the metadata document is not JSON") from None
    if not isinstance(document, dict):
        raise ClientDocumentError("the metadata document is not a JSON object")
    if document.get("client_id") != client_id:
        raise ClientDocumentError("the metadata document's client_id is not its URL")
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise ClientDocumentError("the metadata document holds a client secret")
    if document.get("token_endpoint_auth_method", NO_CLIENT_AUTH) != NO_CLIENT_AUTH:
        raise ClientDocumentError("only public clients (token_endpoint_auth_method none)")
    try:
        metadata = parse_client_metadata(document | {"token_endpoint_auth_method": NO_CLIENT_AUTH})
    except ClientMetadataError as exc:
        raise ClientDocumentError(f"invalid client metadata ({exc.description})") from None
    if metadata.client_name is None:
        raise ClientDocumentError("invalid client metadata (client_name: missing)")
    return ClientRecord(
        client_id=client_id,
        redirect_uris=metadata.redirect_uris,
        created_at=time.time(),
        grant_types=metadata.grant_types,
        token_endpoint_auth_method=NO_CLIENT_AUTH,
        client_name=metadata.client_name,
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate member")
    return document


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


@dataclass(frozen=True, slots=True)
class _Cached:
    client: ClientRecord
    expires_at: float


class ClientDocuments:
    """Resolves client id URLs to clients: fetched under the rules above, cached, coalesced."""

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        timeout: float = FETCH_TIMEOUT,
        min_cache: float = MIN_CACHE_SECONDS,
        max_cache: float = MAX_CACHE_SECONDS,
        default_cache: float = DEFAULT_CACHE_SECONDS,
        max_cached: int = MAX_CACHED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._cache_bounds = (min_cache, max_cache, default_cache)
        self._max_cached = max_cached
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[ClientRecord]] = {}

    async def resolve(self, client_id: str) -> ClientRecord:
        """The client `client_id` names, from the cache or a fresh fetch; else
        `ClientDocumentError` (logged once per failed fetch, with the reason)."""
        cached = self._cache.get(client_id)
        if cached is not None and cached.expires_at > self._clock():
            self._cache.move_to_end(client_id)
            return cached.client
        task = self._fetching.get(client_id)
        if task is None:
            if len(self._fetching) >= MAX_CONCURRENT_FETCHES:
                raise ClientDocumentError("too many metadata documents are being fetched")
            task = asyncio.get_running_loop().create_task(self._load(client_id))
            self._fetching[client_id] = task
            task.add_done_callback(lambda done: self._finished(client_id, done))
        # One caller giving up (a closed browser tab) must not cancel the others' fetch.
        return await asyncio.shield(task)

    def _finished(self, client_id: str, task: asyncio.Task[ClientRecord]) -> None:
        self._fetching.pop(client_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    async def _load(self, client_id: str) -> ClientRecord:
        try:
            client, lifetime = await self._fetch(client_id)
        except ClientDocumentError as exc:
            audit.warning("client_document_refused", client_id=client_id[:256], reason=exc.reason)
            raise
        if lifetime > 0:
            self._cache[client_id] = _Cached(client, self._clock() + lifetime)
            self._cache.move_to_end(client_id)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        else:
            self._cache.pop(client_id, None)
        audit.info("client_document_fetched", client_id=client_id[:256], cache_seconds=lifetime)
        return client

    async def _fetch(self, client_id: str) -> tuple[ClientRecord, float]:
        target = check_client_id_url(client_id, allow_loopback=self.allow_loopback)
        try:
            async with asyncio.timeout(self.timeout):
                addresses = await self._addresses(target)
                body, headers = await self._get(client_id, target, addresses)
        except TimeoutError:
            raise ClientDocumentError("fetching the metadata document timed out") from None
        floor, ceiling, default = self._cache_bounds
        lifetime = cache_lifetime(headers, floor=floor, ceiling=ceiling, default=default)
        return parse_document(client_id, body), lifetime

    async def _addresses(self, target: _Target) -> list[IpAddress]:
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
            address_allowed(a, allow_loopback=self.allow_loopback) for a in addresses
        ):
            raise ClientDocumentError("the client id's host is a private or special address")
        return addresses

    async def _get(
        self, client_id: str, target: _Target, addresses: list[IpAddress]
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
                if (response.content_length or 0) > self.max_bytes:
                    raise ClientDocumentError("the metadata document is too large")
                body = await self._read(response)
                return body, response.headers
        except aiohttp.ClientError as exc:
            raise ClientDocumentError(
                f"the metadata document could not be fetched ({type(exc).__name__})"
            ) from None

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > self.max_bytes:
                raise ClientDocumentError("the metadata document is too large")
            chunks.append(chunk)
        return b"".join(chunks)
