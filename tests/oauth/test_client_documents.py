"""Client ID Metadata Documents: fetching from a real server (the fences' pure rules are in
test_client_document_fetch.py), the document's checks, caching, and the facade treating an
https client id as its document.

Documents come from a real aiohttp server on 127.0.0.1, so the gateway's side runs with its
tests-only loopback switch on, except where the test is that loopback is refused.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.oauth.client_document_fetch import ClientDocumentError
from gateway.oauth.client_documents import (
    MAX_CACHE_SECONDS,
    MIN_CACHE_SECONDS,
    ClientDocuments,
    cache_lifetime,
    is_client_id_url,
)
from gateway.oauth.error import OAuthError
from gateway.oauth.outcome import ConsentNeeded, Redirect, SignInNeeded
from gateway.oauth.records import SIGN_IN_STAGE, ClientRecord
from gateway.oauth.server import AuthorizationServer
from tests.oauth.test_server import (
    BROWSER,
    REDIRECT,
    authorize_query,
    facade,
    query_of,
    raises_error_page,
    token_form,
)

PATH = "/oauth/client.json"


@dataclass
class Served:
    """What the document server answers on one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    hang: bool = False


class DocumentServer:
    """Serves `Served` answers by path on 127.0.0.1 and counts the requests each path gets."""

    def __init__(self) -> None:
        self.answers: dict[str, Served] = {}
        self.hits: Counter[str] = Counter()
        self.release = asyncio.Event()
        self.base = ""
        self._runner: web.AppRunner | None = None

    def url(self, path: str = PATH) -> str:
        return self.base + path

    def serve(self, path: str = PATH, document: Any = None, **answer: Any) -> str:
        """Answer `path` with `document` as JSON (or `answer`'s raw body); its client id URL."""
        if document is not None:
            answer.setdefault("body", json.dumps(document).encode())
        self.answers[path] = Served(**answer)
        return self.url(path)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        served = self.answers.get(request.path)
        if served is None:
            return web.Response(status=404)
        if served.hang:
            await self.release.wait()
        headers = {"Content-Type": served.content_type, **served.headers}
        if not served.chunked:
            return web.Response(status=served.status, body=served.body, headers=headers)
        response = web.StreamResponse(status=served.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(served.body), 1024):
            await response.write(served.body[start : start + 1024])
        await response.write_eof()
        return response


@pytest.fixture
async def server() -> AsyncIterator[DocumentServer]:
    documents = DocumentServer()
    await documents.start()
    yield documents
    await documents.stop()


def document_for(url: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "client_id": url,
        "client_name": "Example MCP Client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    } | changes
    return {k: v for k, v in document.items() if v is not None}


def resolver(**options: Any) -> ClientDocuments:
    return ClientDocuments(**({"allow_loopback": True} | options))


# -- a document that is fine ------------------------------------------------------------------


async def test_a_document_becomes_a_public_client(server: DocumentServer) -> None:
    client_id = server.serve(document=document_for(server.url()))
    client = await resolver().resolve(client_id)
    assert client.client_id == client_id
    assert client.client_name == "Example MCP Client"
    assert client.redirect_uris == (REDIRECT,)
    assert client.grant_types == ("authorization_code", "refresh_token")
    assert client.token_endpoint_auth_method == "none"
    assert client.secret_hash is None


@pytest.mark.parametrize(
    ("changes", "content_type"),
    [
        ({"token_endpoint_auth_method": None}, "application/json"),
        ({}, "application/oauth-client+json"),
        ({"logo_uri": "https://app.example/logo.png", "jwks": {"keys": []}}, "application/json"),
    ],
    ids=["auth-method-absent-means-public", "json-subtype", "unused-members-ignored"],
)
async def test_documents_the_draft_allows_are_accepted(
    server: DocumentServer, changes: dict[str, Any], content_type: str
) -> None:
    client_id = server.serve(document=document_for(server.url(), **changes),
                             content_type=content_type)  # fmt: skip
    assert (await resolver().resolve(client_id)).token_endpoint_auth_method == "none"


# -- documents and answers that are refused ---------------------------------------------------


def body_of(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"changes": {"client_id": "https://other.example/client.json"}}, "client_id is not"),
        ({"changes": {"client_id": None}}, "client_id is not"),
        ({"changes": {"client_name": None}}, "client_name: missing"),
        ({"changes": {"redirect_uris": None}}, "redirect_uris: missing"),
        ({"changes": {"redirect_uris": ["http://evil.example/cb"]}}, "http_not_loopback"),
        ({"changes": {"redirect_uris": ["https://*.example/cb"]}}, "wildcard"),
        ({"changes": {"redirect_uris": ["https://app.example/cb#x"]}}, "fragment"),
        ({"changes": {"token_endpoint_auth_method": "client_secret_basic"}}, "only public"),
        ({"changes": {"token_endpoint_auth_method": "client_secret_post"}}, "only public"),
        ({"changes": {"token_endpoint_auth_method": "private_key_jwt"}}, "only public"),
        ({"changes": {"client_secret": "s3cret"}}, "holds a client secret"),
        ({"changes": {"grant_types": ["implicit"]}}, "grant_types: unsupported_value"),
        ({"content_type": "text/html"}, "not served as JSON"),
        ({"content_type": "text/plain"}, "not served as JSON"),
        ({"status": 404}, "HTTP 404"),
        ({"status": 500}, "HTTP 500"),
        ({"body": b"{not json"}, "not JSON"),
        ({"body": b"[]"}, "not a JSON object"),
        ({"body": b'{"client_id": "a", "client_id": "b"}'}, "not JSON"),
        ({"body": b"\xff\xfe{}"}, "not JSON"),
        ({"body": b" " * 6000 + b"{}"}, "too large"),
        ({"body": b" " * 6000 + b"{}", "chunked": True}, "too large"),
    ],
    ids=[
        "client-id-mismatch", "client-id-missing", "no-client-name", "no-redirect-uris",
        "http-redirect-off-loopback", "wildcard-redirect", "redirect-with-fragment",
        "secret-basic", "secret-post", "private-key-jwt", "client-secret-member",
        "unsupported-grant", "html", "text", "not-found", "server-error", "not-json",
        "not-an-object", "duplicate-member", "not-utf8", "too-large", "too-large-chunked",
    ],
)  # fmt: skip
async def test_a_bad_document_or_answer_is_refused(
    server: DocumentServer, answer: dict[str, Any], reason: str
) -> None:
    answer = dict(answer)
    changes = answer.pop("changes", {})
    answer.setdefault("body", body_of(document_for(server.url(), **changes)))
    client_id = server.serve(**answer)
    with pytest.raises(ClientDocumentError, match=reason):
        await resolver().resolve(client_id)


async def test_a_redirect_is_not_followed(server: DocumentServer) -> None:
    target = server.serve("/elsewhere.json", document=document_for(server.url()))
    client_id = server.serve(status=302, headers={"Location": target})
    with pytest.raises(ClientDocumentError, match="HTTP 302"):
        await resolver().resolve(client_id)
    assert server.hits == Counter({PATH: 1})


async def test_a_server_that_never_answers_times_out(server: DocumentServer) -> None:
    client_id = server.serve(document=document_for(server.url()), hang=True)
    with pytest.raises(ClientDocumentError, match="timed out"):
        await resolver(timeout=0.2).resolve(client_id)


async def test_a_smaller_configured_size_limit_applies(server: DocumentServer) -> None:
    client_id = server.serve(document=document_for(server.url(), client_uri="https://a.example"))
    with pytest.raises(ClientDocumentError, match="too large"):
        await resolver(max_bytes=64).resolve(client_id)


# -- where documents may come from ------------------------------------------------------------


async def test_without_the_test_switch_loopback_is_never_fetched(server: DocumentServer) -> None:
    """http is refused outright; https to 127.0.0.1 or to a name resolving to loopback is
    refused before any connection (the server sees no request at all)."""
    port = server.base.rsplit(":", 1)[1]
    server.serve(document=document_for(server.url()))
    production = ClientDocuments()
    for client_id, reason in [
        (server.url(), "must be an https URL"),
        (f"https://127.0.0.1:{port}{PATH}", "private or special address"),
        (f"https://localhost:{port}{PATH}", "private or special address"),
        (f"https://[::1]:{port}{PATH}", "private or special address"),
        (f"https://[::ffff:127.0.0.1]:{port}{PATH}", "private or special address"),
    ]:
        with pytest.raises(ClientDocumentError, match=reason):
            await production.resolve(client_id)
    assert not server.hits


async def test_the_test_switch_admits_loopback_only() -> None:
    with pytest.raises(ClientDocumentError, match="private or special address"):
        await resolver().resolve("https://10.0.0.1/client.json")
    with pytest.raises(ClientDocumentError, match="http_not_loopback"):
        await resolver().resolve("http://10.0.0.1/client.json")


def test_only_http_urls_are_client_id_urls() -> None:
    assert is_client_id_url("https://app.example/client.json")
    assert is_client_id_url("HTTP://app.example/client.json")
    assert not is_client_id_url("Xq2vF8-random-id")
    assert not is_client_id_url("urn:example:client")


# -- caching ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ({}, 300.0),
        ({"Cache-Control": "max-age=600"}, 600.0),
        ({"Cache-Control": "public, max-age=600", "Age": "100"}, 500.0),
        ({"Cache-Control": "max-age=0"}, MIN_CACHE_SECONDS),
        ({"Cache-Control": "max-age=31536000"}, MAX_CACHE_SECONDS),
        ({"Cache-Control": 'max-age="900"'}, 900.0),
        ({"Cache-Control": "max-age=soon"}, 300.0),
        ({"Cache-Control": "no-store"}, 0.0),
        ({"Cache-Control": "max-age=600, no-cache"}, 0.0),
        ({"Cache-Control": "No-Store"}, 0.0),
    ],
)
def test_cache_lifetime_follows_cache_control_within_bounds(
    headers: dict[str, str], lifetime: float
) -> None:
    assert cache_lifetime(CIMultiDict(headers)) == lifetime


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_document_is_reused_until_its_max_age(server: DocumentServer) -> None:
    clock = Clock()
    documents = resolver(clock=clock)
    client_id = server.serve(document=document_for(server.url()),
                             headers={"Cache-Control": "max-age=120"})  # fmt: skip
    first = await documents.resolve(client_id)
    clock.now += 119
    assert await documents.resolve(client_id) is first
    assert server.hits[PATH] == 1
    clock.now += 2
    await documents.resolve(client_id)
    assert server.hits[PATH] == 2


async def test_no_store_is_fetched_every_time(server: DocumentServer) -> None:
    documents = resolver()
    client_id = server.serve(document=document_for(server.url()),
                             headers={"Cache-Control": "no-store"})  # fmt: skip
    await documents.resolve(client_id)
    await documents.resolve(client_id)
    assert server.hits[PATH] == 2


async def test_a_failure_is_not_cached(server: DocumentServer) -> None:
    documents = resolver()
    client_id = server.serve(status=503)
    with pytest.raises(ClientDocumentError):
        await documents.resolve(client_id)
    server.serve(document=document_for(server.url()))
    assert (await documents.resolve(client_id)).client_id == client_id
    assert server.hits[PATH] == 2


async def test_the_cache_is_bounded(server: DocumentServer) -> None:
    documents = resolver(max_cached=2)
    ids = [server.serve(f"/c{i}.json", document=document_for(server.url(f"/c{i}.json")))
           for i in range(3)]  # fmt: skip
    for client_id in ids:
        await documents.resolve(client_id)
    await documents.resolve(ids[0])  # evicted, the oldest
    await documents.resolve(ids[2])  # still cached
    assert server.hits == Counter({"/c0.json": 2, "/c1.json": 1, "/c2.json": 1})


async def test_concurrent_resolves_share_one_fetch(server: DocumentServer) -> None:
    documents = resolver()
    client_id = server.serve(document=document_for(server.url()), hang=True)
    waiting = [asyncio.create_task(documents.resolve(client_id)) for _ in range(5)]
    while not server.hits[PATH]:
        await asyncio.sleep(0.01)
    waiting[0].cancel()  # one caller giving up does not cancel the others' fetch
    server.release.set()
    results = await asyncio.gather(*waiting[1:])
    assert all(result is results[0] for result in results)
    assert server.hits[PATH] == 1


# -- the facade --------------------------------------------------------------------------------


def facade_with(documents: ClientDocuments | None) -> AuthorizationServer:
    server = facade()
    server.documents = documents
    return server


async def test_the_metadata_says_whether_documents_are_supported() -> None:
    assert facade_with(resolver()).metadata()["client_id_metadata_document_supported"] is True
    assert facade_with(None).metadata()["client_id_metadata_document_supported"] is False


async def test_a_document_client_signs_in_consents_and_gets_a_token(
    server: DocumentServer,
) -> None:
    client_id = server.serve(document=document_for(server.url()))
    auth = facade_with(resolver())
    client, request = await auth.check_authorization(authorize_query(client_id))
    assert client.client_id == request.client_id == client_id
    outcome = await auth.authorize(request, None, BROWSER)  # consent first
    assert isinstance(outcome, ConsentNeeded)
    host = server.base.removeprefix("http://")
    assert outcome.described.client_name == f"Example MCP Client (from {host})"
    assert outcome.described.client_origin == f"is described by {host}"
    approved = await auth.consent(outcome.state, True, BROWSER, None)
    assert isinstance(approved, SignInNeeded)
    state = await auth.begin(approved.request, stage=SIGN_IN_STAGE, browser=BROWSER)
    signed_in = await auth.sign_in_local(state, "alice", "pw", BROWSER)
    assert isinstance(signed_in, Redirect)
    answer = await auth.token(token_form(client_id, query_of(signed_in.location)["code"]), None)
    assert answer["token_type"] == "Bearer"
    assert "refresh_token" in answer


async def test_a_failed_document_is_an_error_page_never_a_redirect(
    server: DocumentServer,
) -> None:
    client_id = server.serve(document=document_for("https://someone.else/client.json"))
    auth = facade_with(resolver())
    with raises_error_page(match="metadata document cannot be used"):
        await auth.check_authorization(authorize_query(client_id))


async def test_a_failed_document_at_the_token_endpoint_is_invalid_client(
    server: DocumentServer,
) -> None:
    client_id = server.serve(status=404)
    auth = facade_with(resolver())
    with pytest.raises(OAuthError, match="invalid_client"):
        await auth.token(token_form(client_id, "some-code"), None)


async def test_a_url_client_id_is_never_a_stored_registration() -> None:
    """Even a record stored under a URL (the gateway never issues one) is not found: a URL
    client id is its metadata document or nothing."""
    auth = facade_with(None)
    client_id = "https://app.example/client.json"
    await auth.store.save_client(ClientRecord(client_id, (REDIRECT,), created_at=0.0))
    assert await auth.client(client_id) is None
    with raises_error_page(match="not registered"):
        await auth.check_authorization(authorize_query(client_id))


async def test_a_configured_url_client_wins_over_fetching() -> None:
    client_id = "https://app.example/client.json"
    auth = facade_with(ClientDocuments())
    auth.clients = {client_id: ClientRecord(client_id, (REDIRECT,), created_at=0.0)}
    client, _ = await auth.check_authorization(authorize_query(client_id))
    assert client is auth.clients[client_id]
