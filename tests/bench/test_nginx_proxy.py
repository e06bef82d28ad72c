"""bench/nginx_proxy.py: the nginx the benchmark compares the gateway with is configured as the
README says (one worker, upstream keep-alive, the upstream's own Host) and really relays so."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.bench.modules import bench_module
from tests.support.apt import apt_install
from tests.support.http_upstream import recording_upstream
from tests.support.processes import ManagedProcess, free_port

nginx = bench_module("nginx_proxy")


def ensure_nginx() -> str:
    found = nginx.nginx_binary()
    if found is None:
        apt_install("nginx", why="the benchmark's comparison rows run it; its config is tested")
        found = nginx.nginx_binary()
    assert found is not None, "apt-get installed nginx but it is not on PATH or in /usr/sbin"
    return str(found)


def blocks(config: str) -> dict[str, list[str]]:
    """Each `name args {` block's own directives (`directive args;`), keyed by its header;
    a parse check that does not need nginx (nested blocks are not flattened into their parent)."""
    found: dict[str, list[str]] = {"": []}
    stack = [""]
    for token in re.findall(r"[^{};]+[{};]|[{};]", config):
        body, end = token[:-1].strip(), token[-1]
        if end == "{":
            stack.append(" ".join(body.split()))
            found[stack[-1]] = []
        elif end == ";":
            found[stack[-1]].append(" ".join(body.split()))
        else:
            assert not body, f"text before a closing brace: {body!r}"
            stack.pop()
    assert stack == [""], f"unbalanced braces, open: {stack[1:]}"
    return found


def test_the_config_keeps_upstream_connections_alive_with_one_worker(tmp_path: Path) -> None:
    routes = {"/echo/mcp": (9003, "/mcp"), "/sdk-json/mcp": (9001, "/mcp")}
    parsed = blocks(nginx.nginx_config(tmp_path, 8088, routes))
    assert "worker_processes 1" in parsed[""]
    assert f"pid {tmp_path}/nginx.pid" in parsed[""]
    assert f"access_log {tmp_path}/nginx-access.log combined" in parsed["http"]
    assert "listen 127.0.0.1:8088" in parsed["server"]
    for index, (route, (port, path)) in enumerate(routes.items()):
        assert parsed[f"upstream upstream{index}"] == [
            f"server 127.0.0.1:{port}",
            "keepalive 64",
            "keepalive_requests 1000000",
        ]
        assert parsed[f"location = {route}"] == [
            f"proxy_pass http://upstream{index}{path}",
            "proxy_http_version 1.1",
            'proxy_set_header Connection ""',
            f"proxy_set_header Host 127.0.0.1:{port}",
        ]


def test_an_sse_config_turns_proxy_buffering_off_on_every_route(tmp_path: Path) -> None:
    routes = {"/sse/mcp": (9004, "/mcp"), "/echo/mcp": (9003, "/mcp")}
    unbuffered = blocks(nginx.nginx_config(tmp_path, 8088, routes, buffering=False))
    buffered = blocks(nginx.nginx_config(tmp_path, 8088, routes))
    for route in routes:
        assert "proxy_buffering off" in unbuffered[f"location = {route}"]
        assert unbuffered[f"location = {route}"][:-1] == buffered[f"location = {route}"]
        assert "proxy_buffering off" not in buffered[f"location = {route}"]


@pytest.mark.parametrize("buffering", [True, False], ids=["buffered", "unbuffered"])
def test_nginx_accepts_the_config(tmp_path: Path, buffering: bool) -> None:
    binary = ensure_nginx()
    config = tmp_path / "nginx.conf"
    routes = {"/echo/mcp": (9003, "/mcp")}
    config.write_text(nginx.nginx_config(tmp_path, free_port(), routes, buffering=buffering))
    checked = subprocess.run(
        nginx.nginx_argv(binary, config, tmp_path, test=True),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


async def test_nginx_relays_over_one_kept_alive_upstream_connection(tmp_path: Path) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    async with recording_upstream(echo) as upstream:
        up_port = int(upstream.url.split(":")[2].split("/")[0])
        port = free_port()
        config = tmp_path / "nginx.conf"
        config.write_text(nginx.nginx_config(tmp_path, port, {"/echo/mcp": (up_port, "/mcp")}))
        argv = nginx.nginx_argv(ensure_nginx(), config, tmp_path)
        process = ManagedProcess(argv, ready_port=port, name="nginx")
        await process.start_async()
        try:
            async with aiohttp.ClientSession() as client:
                for n in range(3):
                    body = f'{{"jsonrpc":"2.0","id":{n},"method":"ping"}}'.encode()
                    url = f"http://127.0.0.1:{port}/echo/mcp"
                    async with client.post(url, data=body) as resp:
                        assert resp.status == 200
                        assert await resp.read() == body
        finally:
            await process.stop_async()
    assert [r.path_qs for r in upstream.requests] == ["/mcp"] * 3
    assert {r.headers["Host"] for r in upstream.requests} == {f"127.0.0.1:{up_port}"}
    assert len(upstream.connection_ports) == 1, "nginx opened a connection per request"
