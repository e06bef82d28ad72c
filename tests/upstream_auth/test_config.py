"""`upstream_auth` in the config: each problem placed at the value at fault."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from gateway.compiler import load_text
from gateway.config import ConfigError, parse_config
from gateway.oauth.users import hash_password
from tests.upstream_auth.conftest import damaged_private_key

ISSUER = "https://idp.example"


def _problems(upstream: dict[str, object], auth: dict[str, object] | None = None) -> list[str]:
    document = {
        "server": {"public_url": "https://gw.example"},
        "auth": auth
        or {"resource_server": {"authorization_servers": [{"name": "idp", "issuer": ISSUER}]}},
        "upstreams": [
            {"name": "files", "route": "/files/mcp", "url": "http://127.0.0.1:9/mcp", **upstream}
        ],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(document))
    return [f"{problem.path}: {problem.message}" for problem in caught.value.problems]


def test_mint_needs_the_facade() -> None:
    [problem] = _problems({"upstream_auth": {"kind": "mint", "audience": "https://files"}})
    assert problem.startswith("upstreams[0].upstream_auth: kind mint signs with")
    assert "auth.authorization_server" in problem


def test_no_credential_on_an_anonymous_route() -> None:
    upstream = {
        "allow_anonymous": True,
        "upstream_auth": {"kind": "exchange", "token_endpoint": ISSUER + "/token",
                          "audience": "files", "client_id": "gw", "client_secret": "s3cret-value"},
    }  # fmt: skip
    [problem] = _problems(upstream)
    assert (
        problem
        == "upstreams[0].upstream_auth: is for authenticated callers: not with allow_anonymous"
    )


def test_the_credential_header_is_the_gateways_alone() -> None:
    upstream = {
        "headers": {"X-Api-Key": "k"},
        "upstream_auth": {"kind": "mint", "audience": "https://files", "header": "x_api_key"},
    }
    problems = _problems(upstream)
    assert any("upstream_auth sets 'x_api_key', which is also a static" in p for p in problems)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"client_id": "gw", "audience": "a"}, "client_secret_basic needs client_secret"),
        ({"client_id": "gw", "client_secret": "s3cret-value"}, "give audience or resource"),
        (
            {"client_id": "gw", "audience": "a", "client_auth": "private_key_jwt"},
            "private_key_jwt needs private_key",
        ),
    ],
)
def test_exchange_settings_are_complete(settings: dict[str, object], expected: str) -> None:
    upstream = {
        "upstream_auth": {"kind": "exchange", "token_endpoint": ISSUER + "/token", **settings}
    }
    assert any(expected in problem for problem in _problems(upstream))


def test_an_unknown_kind_is_named() -> None:
    problems = _problems({"upstream_auth": {"kind": "magic"}})
    assert any("upstreams[0].upstream_auth" in p and "mint" in p for p in problems)


def test_a_minted_audience_is_never_a_resource_of_the_gateway(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text('users:\n  demo: {password_hash: "' + hash_password("x" * 12) + '"}\n')
    document = {
        "server": {"public_url": "https://gw.example/"},
        "auth": {"authorization_server": {"login": {"local": {"users_file": str(users)}}}},
        "upstreams": [
            {"name": "files", "route": "/files/mcp", "url": "http://127.0.0.1:9/mcp",
             "upstream_auth": {"kind": "mint", "audience": "https://gw.example/files/mcp"}},
        ],
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_text(yaml.safe_dump(document))
    [problem] = caught.value.problems
    assert problem.path == "upstreams[0].upstream_auth.audience"
    assert "one of the gateway's own resource URLs" in problem.message


def test_a_private_key_that_does_not_load_is_a_problem_at_its_place() -> None:
    damaged = damaged_private_key()
    document = {
        "server": {"public_url": "https://gw.example"},
        "auth": {"resource_server": {"authorization_servers": [{"name": "idp", "issuer": ISSUER}]}},
        "upstreams": [
            {"name": "files", "route": "/files/mcp", "url": "http://127.0.0.1:9/mcp",
             "upstream_auth": {"kind": "exchange", "token_endpoint": ISSUER + "/token",
                               "audience": "files", "client_id": "gw",
                               "client_auth": "private_key_jwt",
                               "private_key": damaged}},
        ],
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_text(yaml.safe_dump(document))
    [problem] = caught.value.problems
    assert problem.path == "upstreams[0].upstream_auth.private_key"
    assert damaged.splitlines()[1] not in problem.message


def _user_oauth(tmp_path: Path, **settings: object) -> dict[str, object]:
    return {
        "server": {"public_url": "https://gw.example"},
        "auth": {"resource_server": {"authorization_servers": [{"name": "idp", "issuer": ISSUER}]}},
        "upstreams": [
            {"name": "gh", "route": "/gh/mcp", "url": "http://127.0.0.1:9/mcp",
             "upstream_auth": {"kind": "user_oauth", "issuer": "https://provider.example",
                               "client_id": "gw", **settings}},
        ],
    }  # fmt: skip


def test_secret_file_twins_work_inside_upstream_auth(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(base64.urlsafe_b64encode(b"k" * 32).decode() + "\n")
    secret = tmp_path / "secret"
    secret.write_text("provider-client-secret\n")
    document = _user_oauth(tmp_path, encryption_keys_file=str(keys), client_secret_file=str(secret))
    config = parse_config(yaml.safe_dump(document))
    settings = config.upstreams[0].upstream_auth  # type: ignore[union-attr]
    assert settings.client_secret.get_secret_value() == "provider-client-secret"
    assert len(settings.encryption_keys) == 1


def test_a_problem_inside_upstream_auth_is_placed_at_its_yaml_path(tmp_path: Path) -> None:
    good = base64.urlsafe_b64encode(b"k" * 32).decode()
    document = _user_oauth(tmp_path, encryption_keys=[good, "too-short"])
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(document))
    [problem] = caught.value.problems
    assert problem.path == "upstreams[0].upstream_auth.encryption_keys[1]"
    assert "too-short" not in problem.message
    assert problem.line is not None
