"""Fixtures of the `user_oauth` core tests: the test provider, an outbound HTTP session, a real
Redis, sealing keys."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from gateway.auth.authenticator import HttpSessionHolder
from tests.support.oauth_provider import OAuthProvider
from tests.support.redis import RedisServer
from tests.support.secrets import remember

CALLBACK = "http://127.0.0.1:1/upstream-auth/callback"


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
