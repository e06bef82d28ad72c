"""Upstream kinds: `url` makes an HTTP upstream, `command` a stdio one, each with its own keys;
problems keep their plain YAML paths (no kind in them) and their lines."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config import ConfigError, parse_config
from gateway.config.upstreams import HttpUpstream, StdioUpstream

HTTP = "{name: web, route: /web/mcp, url: 'http://127.0.0.1:1/mcp', allow_anonymous: true"
STDIO = "{name: cli, route: /cli/mcp, command: [server, --flag], allow_anonymous: true"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), env={})
    return [str(p) for p in caught.value.problems]


def test_each_upstream_gets_the_type_of_its_kind() -> None:
    config = parse_config(f"upstreams:\n  - {HTTP}}}\n  - {STDIO}}}\n", env={})
    http, stdio = config.upstreams
    assert type(http) is HttpUpstream
    assert str(http.url) == "http://127.0.0.1:1/mcp"
    assert type(stdio) is StdioUpstream
    assert stdio.command == ["server", "--flag"]


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param("url: 'http://127.0.0.1:1/mcp', command: [server]", id="both"),
        pytest.param("", id="neither"),
    ],
)
def test_an_upstream_needs_exactly_one_of_url_or_command(keys: str) -> None:
    entry = f"{{name: x, route: /x/mcp, allow_anonymous: true{', ' if keys else ''}{keys}}}"
    assert problems_of(f"upstreams:\n  - {HTTP}}}\n  - {entry}\n") == [
        "upstreams[1] (line 3): give exactly one of url (an HTTP server) or command (a stdio one)"
    ]


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        pytest.param(
            HTTP + ", env: {A: b}, cwd: /tmp}",
            "cwd, env are for stdio upstreams (command)",
            id="env-and-cwd-on-http",
        ),
        pytest.param(
            HTTP + ", max_processes: 3}",
            "max_processes is for stdio upstreams (command)",
            id="process-limit-on-http",
        ),
        pytest.param(
            STDIO + ", headers: {X-Key: v}}",
            "headers is for HTTP upstreams (url)",
            id="headers-on-stdio",
        ),
        pytest.param(
            STDIO + ", pass_headers: [x-tenant]}",
            "pass_headers is for HTTP upstreams (url)",
            id="pass-headers-on-stdio",
        ),
    ],
)
def test_a_key_of_the_other_kind_is_named_with_its_kind(upstream: str, expected: str) -> None:
    first = HTTP.replace("web", "first")
    assert problems_of(f"upstreams:\n  - {first}}}\n  - {upstream}\n") == [
        f"upstreams[1] (line 3): {expected}"
    ]


def test_problems_inside_an_upstream_keep_their_yaml_path_and_line() -> None:
    problems = problems_of(
        """
        upstreams:
          - name: web
            route: /web/mcp
            url: ftp://x
            allow_anonymous: true
          - name: cli
            route: /cli/mcp
            command: []
            retries: 3
            allow_anonymous: true
        """
    )
    assert problems == [
        "upstreams[0].url (line 5): URL scheme should be 'http' or 'https'",
        "upstreams[1].command (line 9): List should have at least 1 item after validation, not 0",
        "upstreams[1].retries (line 10): unknown key",
    ]


def test_session_dir_needs_a_private_dir() -> None:
    upstream = STDIO + ", cwd: '{session_dir}'}"
    assert problems_of(f"upstreams:\n  - {upstream}\n") == [
        "upstreams[0] (line 2): {session_dir} needs private_dir: true"
    ]
