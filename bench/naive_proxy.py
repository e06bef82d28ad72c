"""A naive aiohttp reverse proxy with a JWT cache: the comparison row the gateway should beat.

Run: `python bench/naive_proxy.py --port 9010 --issuer http://127.0.0.1:J
--route /echo/mcp=http://127.0.0.1:P/mcp [--route ...]`.

What a developer writes in an afternoon: one catch-all POST handler on `web.Application`, the
RS256 access token verified once with joserfc against the issuer's JWKS (`ISSUER/jwks`), then
cached by its string; the body read whole and forwarded with one shared `ClientSession` (a
keep-alive pool); the upstream's status, content type and body returned. uvloop, as the gateway
runs, and aiohttp's default access line (one per request, to stderr) as the gateway writes one.
No policy, no MCP inspection, no streaming, no limits: the floor of "aiohttp plus a JWT check".
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator

import uvloop
from aiohttp import ClientSession, TCPConnector, web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

FORWARDED = ("Content-Type", "Accept", "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name")
MAX_CACHED = 10_000  # tokens; the cache is dropped whole when it grows past this


class Settings:
    def __init__(self, issuer: str, keys: KeySet, routes: dict[str, str], public_url: str) -> None:
        self.issuer = issuer
        self.keys = keys
        self.routes = routes  # request path -> upstream URL
        self.public_url = public_url  # the audience of a route is public_url + path
        self.verified: dict[str, tuple[str, float]] = {}  # token -> (audience, expiry)


SETTINGS = web.AppKey("settings", Settings)
SESSION = web.AppKey("session", ClientSession)
UNAUTHORIZED = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def token_audience(settings: Settings, token: str) -> tuple[str, float] | None:
    """(audience, expiry) of a valid token: the cached answer, else a signature check."""
    if (cached := settings.verified.get(token)) is not None:
        return cached
    try:
        decoded = jwt.decode(token, settings.keys, algorithms=["RS256"])
        JWTClaimsRegistry(
            iss={"essential": True, "value": settings.issuer},
            exp={"essential": True},
            aud={"essential": True},
        ).validate(decoded.claims)
    except (JoseError, ValueError):
        return None
    audience = decoded.claims["aud"]
    entry = (audience if isinstance(audience, str) else "", float(decoded.claims["exp"]))
    if len(settings.verified) >= MAX_CACHED:
        settings.verified.clear()
    settings.verified[token] = entry
    return entry


async def proxy(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    target = settings.routes.get(request.path)
    if target is None:
        return web.Response(status=404)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    verified = token_audience(settings, token) if scheme.lower() == "bearer" else None
    if (
        verified is None
        or verified[0] != settings.public_url + request.path
        or verified[1] <= time.time()
    ):
        return web.Response(status=401, headers=UNAUTHORIZED)
    body = await request.read()
    headers = {name: value for name in FORWARDED if (value := request.headers.get(name))}
    async with request.app[SESSION].post(target, data=body, headers=headers) as upstream:
        payload = await upstream.read()
        content_type = upstream.headers.get("Content-Type", "application/octet-stream")
        return web.Response(
            status=upstream.status, body=payload, headers={"Content-Type": content_type}
        )


async def client_session(app: web.Application) -> AsyncIterator[None]:
    async with ClientSession(connector=TCPConnector(limit=100, keepalive_timeout=60)) as session:
        app[SESSION] = session
        yield


def make_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(client_session)
    app.router.add_post("/{tail:.*}", proxy)
    return app


def route(text: str) -> tuple[str, str]:
    path, sep, url = text.partition("=")
    if not sep or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected /path=URL, got {text!r}")
    return path, url


def settings_from_arguments(description: str | None) -> tuple[Settings, int]:
    """(settings, port) from `--port`, `--issuer` (its JWKS fetched now) and `--route`s: the
    command line of this proxy and of bench/lean_relay.py."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True, help="its JWKS is read from ISSUER/jwks")
    parser.add_argument("--route", type=route, action="append", required=True)
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.issuer}/jwks", timeout=5) as resp:
        keys = KeySet.import_key_set(json.loads(resp.read()))
    public_url = f"http://127.0.0.1:{args.port}"
    return Settings(args.issuer, keys, dict(args.route), public_url), args.port


def main() -> None:
    settings, port = settings_from_arguments(__doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = make_app(settings)
    web.run_app(app, host="127.0.0.1", port=port, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
