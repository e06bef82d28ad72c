"""Fixtures of the upstream credential tests: the test provider, an outbound HTTP session, a real
Redis, sealing keys, and a recording upstream that answers every call."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from gateway.auth.authenticator import HttpSessionHolder
from gateway.oauth.signing import SigningKey
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.oauth_provider import OAuthProvider
from tests.support.redis import RedisServer
from tests.support.secrets import remember

CALLBACK = "http://127.0.0.1:1/upstream-auth/callback"


def damaged_private_key() -> str:
    """A private key generated now and cut short: PEM-shaped, but it does not load."""
    return remember(SigningKey.generate("ES256").to_pem()[:-80])


def new_key() -> str:
    """A fresh base64url AES-256 key, registered with the log tripwire."""
    return remember(base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())


@pytest.fixture
async def http() -> AsyncIterator[HttpSessionHolder]:
    holder = HttpSessionHolder()
    async with aiohttp.ClientSession() as session:
        holder.session = session
        yield holder


@pytest.fixture
async def provider() -> AsyncIterator[OAuthProvider]:
    async with OAuthProvider(redirect_uris=[CALLBACK]) as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password=remember(f"p@ss/{secrets.token_urlsafe(16)}")) as server:
        yield server


async def answer_call(request: web.Request) -> web.Response:
    """A JSON-RPC result with one text item, for the request's id."""
    body = await request.json()
    result = {"content": [{"type": "text", "text": "ok"}]}
    return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": result})


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    """A recording upstream that answers every call (`answer_call`)."""
    async with recording_upstream(answer_call) as recording:
        yield recording
