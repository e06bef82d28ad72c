"""Client ID Metadata Documents: an `https://` URL as a `client_id`, its metadata fetched from it.

draft-ietf-oauth-client-id-metadata-document-00, as MCP 2025-11-25 and 2026-07-28 require of an
authorization server that supports it. The client hosts a JSON document at its client id URL;
the gateway fetches it when the client shows up, checks it like an RFC 7591 registration, and
caches it. Nothing is stored: the document is the registration.

Fetching a URL a stranger chose is fenced in by `gateway.oauth.client_document_fetch` (where
the gateway may connect, how much it reads, how long it waits). At most
`MAX_CONCURRENT_FETCHES` different URLs are fetched at once; concurrent requests for one URL
share one fetch.

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
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from gateway.oauth.client_document_fetch import (
    FETCH_TIMEOUT,
    MAX_DOCUMENT_BYTES,
    ClientDocumentError,
    fetch_document,
)
from gateway.oauth.client_metadata import ClientMetadataError, parse_client_metadata
from gateway.oauth.records import NO_CLIENT_AUTH, ClientRecord
from gateway.observability.logging import get_logger

audit = get_logger("gateway.audit")

MIN_CACHE_SECONDS = 60.0
MAX_CACHE_SECONDS = 3600.0
DEFAULT_CACHE_SECONDS = 300.0
MAX_CACHED = 1000
MAX_CONCURRENT_FETCHES = 64


def is_client_id_url(client_id: str) -> bool:
    """Whether `client_id` is in the URL namespace this module owns.

    Every `http(s)://` client id counts, valid or not, so such an id is never looked up among
    registered clients (the gateway never issues one, draft section 7.1).
    """
    return client_id[:8].lower().startswith(("https://", "http://"))


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
        body, headers = await fetch_document(
            client_id,
            allow_loopback=self.allow_loopback,
            max_bytes=self.max_bytes,
            within=self.timeout,
        )
        floor, ceiling, default = self._cache_bounds
        lifetime = cache_lifetime(headers, floor=floor, ceiling=ceiling, default=default)
        return parse_document(client_id, body), lifetime
