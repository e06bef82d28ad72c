"""The `tracing` section: off by default, and every value checked before anything starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.compiler import load_text
from gateway.config import ConfigError, parse_config
from tests.support.secrets import remember

MINIMAL = """
upstreams:
  - {name: files, route: /files/mcp, url: "http://127.0.0.1:3001/mcp", allow_anonymous: true}
"""
ENDPOINT = "http://otel-collector:4318/v1/traces"


def with_tracing(section: str) -> str:
    return MINIMAL + f"tracing: {section}\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(textwrap.dedent(text), env={})
    return [str(p) for p in caught.value.problems]


def test_tracing_is_off_by_default_and_trusts_no_client() -> None:
    tracing = parse_config(MINIMAL, env={}).tracing
    assert tracing.enabled is False
    assert tracing.trusted_clients == []
    assert tracing.sample_ratio == 1.0


def test_a_full_section_loads() -> None:
    section = (f"{{enabled: true, endpoint: {ENDPOINT!r}, service_name: gw-eu, sample_ratio: 0.25,"
               " trusted_clients: [10.0.0.0/8, 'fd00::/8'], headers: {X-Api-Key: k},"
               " max_queue_size: 100, max_export_batch_size: 10}")  # fmt: skip
    tracing = load_text(with_tracing(section), env={}).config.tracing
    assert (tracing.endpoint, tracing.service_name, tracing.sample_ratio) == (
        ENDPOINT, "gw-eu", 0.25)  # fmt: skip
    assert [str(n) for n in tracing.trusted_clients] == ["10.0.0.0/8", "fd00::/8"]
    assert tracing.headers["X-Api-Key"].get_secret_value() == "k"
    trusting = parse_config(with_tracing("{trusted_clients: all}"), env={}).tracing
    assert trusting.trusts_all()


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        pytest.param("{enabled: true}", "tracing enabled needs endpoint",
                     id="enabled-without-endpoint"),
        pytest.param("{endpoint: 'ftp://collector/v1/traces'}", "must be an http or https URL",
                     id="endpoint-scheme"),
        pytest.param("{endpoint: 'https://u:p@collector/v1/traces'}", "must not carry credentials",
                     id="endpoint-credentials"),
        pytest.param("{endpoint: 'http://collector:99999/v1/traces'}", "has an invalid port",
                     id="endpoint-port"),
        pytest.param("{sample_ratio: 1.5}", "tracing.sample_ratio", id="ratio-above-one"),
        pytest.param("{trusted_clients: [everyone]}", "tracing.trusted_clients",
                     id="trusted-not-a-network"),
        pytest.param("{trusted_clients: some}", "tracing.trusted_clients", id="trusted-word"),
        pytest.param("{headers: {'Bad Name': x}}", "is not a valid HTTP field name",
                     id="header-name"),
        pytest.param('{headers: {X-Key: "a\\r\\nb"}}', "has a control character",
                     id="header-crlf"),
        pytest.param("{headers: {Content-Type: text/plain}}", "is set by the exporter",
                     id="header-managed"),
        pytest.param("{max_queue_size: 10, max_export_batch_size: 20}",
                     "must not exceed max_queue_size", id="batch-over-queue"),
        pytest.param("{export_timeout: 0}", "tracing.export_timeout", id="timeout-zero"),
        pytest.param("{service_name: ''}", "tracing.service_name", id="service-name-empty"),
        pytest.param("{sampler: always}", "unknown key (did you mean 'sample_ratio'?)",
                     id="unknown-key"),
    ],
)  # fmt: skip
def test_bad_values_are_problems_at_their_path(section: str, problem: str) -> None:
    found = problems_of(with_tracing(section))
    assert any(problem in line for line in found), found


def test_a_header_value_comes_from_a_file_and_is_never_shown(tmp_path: Path) -> None:
    secret = remember("collector-key-5bd1e2")
    (tmp_path / "key").write_text(secret + "\n")
    section = f"{{headers_file: {{X-Api-Key: {tmp_path / 'key'}}}}}"
    tracing = load_text(with_tracing(section), env={}).config.tracing
    assert tracing.headers["X-Api-Key"].get_secret_value() == secret
    assert secret not in repr(tracing)
