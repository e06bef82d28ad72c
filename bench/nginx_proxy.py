"""nginx as a plain reverse proxy (no authentication): the comparison row for a lean data plane.

`nginx_config` renders the configuration the benchmark runs nginx with; `nginx_argv` the command
that runs it in the foreground with everything (pid file, logs, temp directories) under one
directory, so it needs no system paths and is stopped by PID like every other process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# One worker (the gateway is one process too); upstream connections kept alive (HTTP/1.1, no
# `Connection: close`, a pool of 64 per worker), and no per-connection request cap on either side
# (nginx's default closes a connection after 1,000 requests). The access log is on, nginx's
# default `combined` line written unbuffered (one write per request): the gateway writes a JSON
# access line per request too.
TEMPLATE = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/nginx-access.log combined;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{upstreams}
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""
UPSTREAM = """\
    upstream {name} {{
        server 127.0.0.1:{port};
        keepalive 64;
        keepalive_requests 1000000;
    }}"""
LOCATION = """\
        location = {route} {{
            proxy_pass http://{name}{path};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:{port};{extra}
        }}"""
# What an SSE route needs: without it nginx holds the upstream's events back in its buffers
# (a stream of small events arrives in bursts, or only at the end).
UNBUFFERED = "\n            proxy_buffering off;"


def nginx_config(
    directory: Path, port: int, routes: dict[str, tuple[int, str]], *, buffering: bool = True
) -> str:
    """nginx.conf listening on 127.0.0.1:`port`, where `routes` maps each exact request path to
    (upstream port, upstream path). The upstream's Host is 127.0.0.1:PORT, as a client reaching it
    directly sends (the MCP SDK server rejects other Host values: DNS rebinding protection).
    `buffering=False` adds `proxy_buffering off` to every route, as SSE routes need."""
    upstreams, locations = [], []
    for index, (route, (up_port, path)) in enumerate(routes.items()):
        name = f"upstream{index}"
        upstreams.append(UPSTREAM.format(name=name, port=up_port))
        extra = "" if buffering else UNBUFFERED
        locations.append(
            LOCATION.format(route=route, name=name, path=path, port=up_port, extra=extra)
        )
    return TEMPLATE.format(
        dir=directory, port=port, upstreams="\n".join(upstreams), locations="\n".join(locations)
    )


def nginx_binary() -> str | None:
    """The nginx executable: on PATH, else where Debian puts it (/usr/sbin is often off PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_argv(binary: str, config: Path, directory: Path, *, test: bool = False) -> list[str]:
    """nginx in the foreground on `config`, its prefix and startup error log in `directory`;
    with `test`, only check the configuration (`nginx -t`)."""
    argv = [binary, "-g", "daemon off;", "-c", str(config), "-p", str(directory)]
    return [*argv, "-e", str(directory / "nginx-error.log"), *(["-t"] if test else [])]
