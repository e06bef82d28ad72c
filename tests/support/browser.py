"""A real headless browser for tests: Debian's Chromium driven by Playwright's async API.

Playwright's own browser download is not used: `ensure_chromium` returns Debian's
``/usr/bin/chromium``, installing the ``chromium`` package with apt-get first if it is missing
(the test machines run as root). `launch_chromium` starts it with a fresh profile and flags that
keep it off the network: no background services, no QUIC, and every host name resolves to
nothing (the tests only ever use ``http://127.0.0.1:<port>`` URLs).

`LoopbackSite` is a tiny aiohttp server on 127.0.0.1 at a port of its own, so a different
origin from the gateway: the OAuth client's redirect URI, or an attacker's page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from playwright.async_api import Browser, async_playwright

from .apt import PackageUnavailableError, apt_install
from .processes import LOOPBACK, free_port

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-proxy-server",
    # Any host name resolves to nothing: only IP-literal loopback URLs can be reached.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


class ChromiumUnavailableError(PackageUnavailableError):
    """Debian's Chromium is not installed and cannot be installed here."""


def ensure_chromium() -> str:
    """The path of Debian's Chromium, installed with apt-get first if it is missing."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    apt_install("chromium", why="the browser tests drive it through Playwright")
    if not CHROMIUM.exists():
        raise ChromiumUnavailableError(f"apt-get installed chromium but {CHROMIUM} is missing")
    return str(CHROMIUM)


@asynccontextmanager
async def launch_chromium(executable: str | None = None) -> AsyncIterator[Browser]:
    """Headless Chromium (a fresh profile, closed on exit) under Playwright's async API."""
    path = executable or ensure_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=path, headless=True, args=list(LAUNCH_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoopbackSite:
    """A small web site on ``http://127.0.0.1:<free port>`` that records every request.

    ``pages`` maps a GET path to its handler; any other path answers a plain page. Start it
    with ``async with``; it stops on exit.
    """

    def __init__(self, pages: dict[str, Handler] | None = None) -> None:
        self.pages = dict(pages or {})
        self.requests: list[tuple[str, str]] = []
        """(method, path with query) of each request, in order."""
        self.port = free_port()
        self.origin = f"http://{LOOPBACK}:{self.port}"
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return self.origin + path

    def requested(self, path: str) -> list[str]:
        """The path-with-query of every request made to ``path``."""
        return [target for _, target in self.requests if target.split("?", 1)[0] == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        handler = self.pages.get(request.path)
        if handler is not None:
            return await handler(request)
        return html_response("<h1>Welcome back</h1>", title="Client")

    async def __aenter__(self) -> LoopbackSite:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def html_response(body: str, *, title: str = "Page") -> web.Response:
    """A minimal HTML page (no security headers: it plays a client's or an attacker's site)."""
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"</head><body>{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html")
