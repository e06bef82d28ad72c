"""Compiling policies: what the config models cannot judge alone is reported as problems."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.compiler import compile_config
from gateway.config import ConfigError, GatewayConfig
from gateway.observability.metrics import GatewayMetrics
from gateway.policy.compiled import PolicyStore, compile_policies
from gateway.web.reload import PolicyReloader
from tests.support.configs import gateway_document, validated, write_yaml

AUTH = {
    "resource_server": {"authorization_servers": [{"name": "a", "issuer": "https://a.example"}]}
}


def config(methods: dict[str, Any], **route: Any) -> GatewayConfig:
    return validated(
        gateway_document(
            {"name": "ok", "route": "/ok/mcp", "url": "http://127.0.0.1:1/mcp"},
            {
                "name": "files",
                "route": "/files/mcp",
                "url": "http://127.0.0.1:1/mcp",
                "policy": {"methods": methods},
                **route,
            },
            public_url="https://gw.example",
            auth=AUTH,
        )
    )


def test_extra_methods_compile_into_the_route_policy() -> None:
    policies = compile_policies(config({"x/vendor": ["vendor:use"], "x/off": "deny"}))
    route = policies["files"]
    assert route.rule_for("x/vendor", None).source == "methods['x/vendor']"
    assert route.rule_for("x/off", None).scopes is None
    assert policies["ok"].rule_for("x/vendor", None).source == "default (baseline scopes)"


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("tools/call", "'tools/call' is an MCP method"),
        ("notifications/initialized", "'notifications/initialized' is an MCP method"),
        ("Tools/List", "'Tools/List' is a look-alike of the MCP method 'tools/list'"),
    ],
    ids=["named-method", "notification", "look-alike"],
)
def test_an_mcp_method_in_methods_is_a_problem(method: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_config(config({method: ["s"], "x/fine": []}), source="gw.yaml")
    [problem] = caught.value.problems
    assert problem.path == f"upstreams[1].policy.methods.{method}"
    assert problem.message.startswith(message)
    assert caught.value.source == "gw.yaml"


def test_anonymous_routes_are_checked_too() -> None:
    with pytest.raises(ConfigError):
        compile_config(config({"ping": []}, allow_anonymous=True))


def test_check_reports_it_like_every_other_problem(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        textwrap.dedent(
            """
            server: {public_url: "https://gw.example"}
            auth:
              resource_server:
                authorization_servers: [{name: a, issuer: "https://a.example"}]
            upstreams:
              - name: files
                route: /files/mcp
                url: "http://127.0.0.1:1/mcp"
                policy: {methods: {tools/call: [files:admin]}}
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[:2] == [
        f"{path}: 1 problem(s)",
        "  - upstreams[0].policy.methods.tools/call (line 10): 'tools/call' is an MCP method: it "
        "needs the route's scopes (named calls are decided under tools, resources and prompts); "
        "list only methods MCP does not define",
    ]


async def test_a_reload_with_such_a_problem_keeps_the_old_policies(tmp_path: Path) -> None:
    def write(methods: dict[str, Any]) -> dict[str, Any]:
        files = {"name": "files", "route": "/files/mcp", "url": "http://127.0.0.1:1/mcp",
                 "policy": {"methods": methods}}  # fmt: skip
        document = gateway_document(files, public_url="https://gw.example", auth=AUTH)
        write_yaml(path, document)
        return document

    path = tmp_path / "gw.yaml"
    running = validated(write({"x/vendor": ["v"]}))
    store = PolicyStore(compile_policies(running))
    before = store.current
    reloader = PolicyReloader(path, running, store, GatewayMetrics(CollectorRegistry()), 0)
    write({"tools/call": ["v"]})
    assert await reloader.reload() is False
    assert store.current is before
    write({"x/vendor": ["w"]})
    assert await reloader.reload() is True
    assert store.current["files"].rule_for("x/vendor", None).scopes == {"w"}
