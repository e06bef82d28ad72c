"""Config loading: every problem reported at once, with its YAML path and line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from gateway.compiler import load_text
from gateway.config import ConfigError, load_config, parse_config
from gateway.config.schema import render_schema
from gateway.oauth.users import hash_password
from gateway.policy.decision import Allow
from tests.support.examples import EXAMPLES, example_env

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """
upstreams:
  - {name: files, route: /files/mcp, url: "http://127.0.0.1:3001/mcp", allow_anonymous: true}
"""
AUTH = """
server: {public_url: "https://mcp.example.com"}
auth:
  resource_server:
    authorization_servers:
      - {name: corp, issuer: "https://idp.example.com"}
upstreams:
  - {name: files, route: /files/mcp, url: "http://127.0.0.1:3001/mcp", scopes: [files:read]}
"""


NO_AUTH = (
    "requires tokens, but neither auth.resource_server nor auth.authorization_server is "
    "configured (or set allow_anonymous: true on it)"
)


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    """Every problem both loading passes find, as `check` prints them."""
    with pytest.raises(ConfigError) as caught:
        load_text(textwrap.dedent(text), env=env or {})
    return [str(p) for p in caught.value.problems]


def test_minimal_config_gets_safe_defaults() -> None:
    config = parse_config(MINIMAL, env={})
    assert config.server.host == "127.0.0.1"
    assert config.public_base() == "http://127.0.0.1:8080"
    assert config.public_base(9000) == "http://127.0.0.1:9000"
    [upstream] = config.upstreams
    assert str(upstream.url) == "http://127.0.0.1:3001/mcp"
    assert upstream.timeouts.response == 300


def test_every_problem_is_reported_with_its_path_and_line() -> None:
    problems = problems_of(
        """
        server:
          port: 99999
          colour: blue
        upstreams:
          - name: Files
            route: files/mcp
            url: ftp://x
          - name: ok
            route: /healthz
            url: http://127.0.0.1:1/mcp
            extra: 1
        """
    )
    assert problems == [
        "server.port (line 3): Input should be less than or equal to 65535",
        "server.colour (line 4): unknown key",
        "upstreams[0].name (line 6): must be lowercase letters, digits, '-' or '_' (at most 63)",
        f"upstreams[0] (line 6): {NO_AUTH}",
        "upstreams[0].route (line 7): must be an absolute path like /files/mcp, "
        "without a trailing slash",
        "upstreams[0].url (line 8): URL scheme should be 'http' or 'https'",
        f"upstreams[1] (line 9): {NO_AUTH}",
        "upstreams[1].route (line 10): must not be under a reserved path "
        "('/.well-known', '/healthz', '/readyz', '/metrics', '/oauth')",
        "upstreams[1].extra (line 12): unknown key",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("upstreams: []", "upstreams (line 1): must be a list of at least one upstream"),
        ("- a list", "(top level): the config must be a YAML mapping"),
        ("upstreams: [\n", "(yaml) (line 2)"),
        ("server: {}\nserver: {}\n" + MINIMAL, "(yaml) (line 2): duplicate key 'server'"),
        (
            MINIMAL
            + "  - {name: files, route: /files/mcp, url: 'http://127.0.0.1:1/mcp', "
            + "allow_anonymous: true}\n",
            "upstreams[1].route (line 4): '/files/mcp' is already the route of upstreams[0]",
        ),
        (
            MINIMAL.replace("url:", "headers: {'Bad Name': x}, url:"),
            "not a valid HTTP field name",
        ),
        (MINIMAL.replace("url:", "headers: {Host: x}, url:"), "managed by the gateway"),
        (
            MINIMAL.replace("3001/mcp", "3001/mcp#frag"),
            "must not carry credentials or a fragment",
        ),
        (MINIMAL.replace("/files/mcp", "/files/../mcp"), "must be an absolute path"),
    ],
    ids=[
        "no-upstreams",
        "not-a-mapping",
        "broken-yaml",
        "duplicate-key",
        "duplicate-route",
        "bad-header-name",
        "managed-header",
        "url-fragment",
        "dot-segments",
    ],
)
def test_invalid_configs_are_rejected(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(expected in p for p in problems), problems


def test_environment_variables_are_substituted() -> None:
    text = MINIMAL.replace(
        "url:", 'headers: {X-Api-Key: "${KEY}", X-Lit: "$${KEY}", X-Def: "${NONE:-dflt}"}, url:'
    )
    [upstream] = parse_config(text, env={"KEY": "s3cret"}).upstreams
    values = {k: v.get_secret_value() for k, v in upstream.headers.items()}
    assert values == {"X-Api-Key": "s3cret", "X-Lit": "${KEY}", "X-Def": "dflt"}
    assert "s3cret" not in repr(upstream)


def test_unset_environment_variable_is_a_problem_with_its_path() -> None:
    problems = problems_of(MINIMAL.replace("url:", 'headers: {X-Api-Key: "${KEY}"}, url:'))
    assert problems == [
        "upstreams[0].headers.X-Api-Key (line 3): environment variable KEY is unset"
    ]


def test_secret_file_twins(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    text = MINIMAL.replace("url:", f"headers_file: {{X-Api-Key: {secret}}}, url:")
    [upstream] = parse_config(text, env={}).upstreams
    assert upstream.headers["X-Api-Key"].get_secret_value() == "from-file"

    missing = MINIMAL.replace("url:", f"headers_file: {{X-Api-Key: {tmp_path / 'nope'}}}, url:")
    [problem] = problems_of(missing)
    assert "cannot read secret file" in problem
    assert problem.startswith("upstreams[0]")


def test_process_settings_are_overridden_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCP_GATEWAY_SERVER__PORT", "9123")
    monkeypatch.setenv("MCP_GATEWAY_LOG__LEVEL", "warning")
    monkeypatch.setenv("MCP_GATEWAY_UPSTREAMS", "[]")  # upstreams come from the file only
    config = parse_config(MINIMAL + "server: {port: 8000, host: 0.0.0.0}\n")
    assert config.server.port == 9123
    assert config.server.host == "0.0.0.0"
    assert config.log.level == "warning"
    assert len(config.upstreams) == 1


def test_bad_environment_override_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_GATEWAY_SERVER__PORT", "not-a-port")
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL)
    assert [p.path for p in caught.value.problems] == ["server.port"]


def test_committed_schema_is_current() -> None:
    committed = (REPO / "config" / "schema.json").read_text()
    assert committed == render_schema(), "run: mcp-auth-gateway schema --output config/schema.json"
    assert json.loads(committed)["additionalProperties"] is False


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in example_env().items():
        monkeypatch.setenv(name, value)
    config = load_config(path)
    assert config.upstreams


def test_routes_require_tokens_unless_they_opt_out() -> None:
    problems = problems_of(MINIMAL.replace(", allow_anonymous: true", ""))
    assert problems == [
        "upstreams[0] (line 3): requires tokens, but neither auth.resource_server nor "
        "auth.authorization_server is configured (or set allow_anonymous: true on it)"
    ]


def test_auth_config_keeps_the_issuer_exact() -> None:
    config = parse_config(AUTH, env={})
    assert config.auth.resource_server is not None
    [server] = config.auth.resource_server.authorization_servers
    assert server.issuer == "https://idp.example.com"  # no trailing slash added
    assert "HS256" not in server.algorithms


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('server: {public_url: "https://mcp.example.com"}\n', ""),
            "server.public_url: is required with auth",
        ),
        (
            ("scopes: [files:read]", "authorization_servers: [other]"),
            "upstreams[0].authorization_servers[0] (line 8): no authorization server is named "
            "'other'",
        ),
        (('issuer: "https://idp.example.com"', "issuer: idp.example.com"), "http or https URL"),
        (
            ('issuer: "https://idp.example.com"', "issuer: x, algorithms: [HS256]"),
            "only asymmetric algorithms",
        ),
        (("scopes: [files:read]", "scopes: [offline_access]"), "never a route's baseline"),
    ],
    ids=["no-public-url", "unknown-server", "issuer-not-url", "hmac-algorithm", "offline-access"],
)
def test_invalid_auth_configs(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in AUTH
    problems = problems_of(AUTH.replace(old, new))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ('{tools: {"read_*": [a], "*_file": [b]}}', "so neither wins"),
        ('{tools: {"": [a]}}', "empty names"),
        ("{tools: {x: [has space]}}", "not a valid scope token"),
        ("{tools: {x: maybe}}", "Input should be 'deny'"),
    ],
    ids=["ambiguous-patterns", "empty-name", "bad-scope", "bad-rule"],
)
def test_invalid_policies(policy: str, expected: str) -> None:
    problems = problems_of(
        AUTH.replace("scopes: [files:read]", f"scopes: [files:read], policy: {policy}")
    )
    assert any(expected in p for p in problems), problems


def test_scope_implication_cycles_are_refused() -> None:
    problems = problems_of(AUTH + "scopes: {implies: {a: [b], b: [a]}}\n")
    assert any("scope implication cycle: a -> b -> a" in p for p in problems), problems


def test_facade_users_file_and_signing_key_are_checked_at_load(tmp_path: Path) -> None:
    # A real private key made now, of a kind that cannot sign access tokens (Ed25519).
    unusable = (
        Ed25519PrivateKey.generate()
        .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        .decode()
    )
    text = f"""
        server: {{public_url: "https://mcp.example.com"}}
        auth:
          authorization_server:
            login: {{local: {{users_file: {tmp_path / "missing.yaml"}}}}}
            signing_key: "${{SIGNING_KEY}}"
        upstreams:
          - {{name: files, route: /files/mcp, url: "http://127.0.0.1:3001/mcp"}}
        """
    problems = problems_of(text, env={"SIGNING_KEY": unusable})
    assert len(problems) == 2, problems
    assert any("users_file" in p for p in problems)
    assert any(
        p.startswith("auth.authorization_server.signing_key (line 6): only EC (P-256) and RSA")
        for p in problems
    ), problems
    body = unusable.splitlines()[1]
    assert not any(body in p for p in problems)


def test_refresh_tokens_may_live_longer_than_a_day(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text('users:\n  a: {password_hash: "' + hash_password("pw-for-a-test") + '"}\n')
    text = f"""
        server: {{public_url: "https://mcp.example.com"}}
        auth:
          authorization_server:
            login: {{local: {{users_file: {users}}}}}
            refresh_token_lifetime: 2592000
        upstreams:
          - {{name: files, route: /files/mcp, url: "http://127.0.0.1:3001/mcp"}}
        """
    settings = parse_config(textwrap.dedent(text), env={}).auth.authorization_server
    assert settings is not None
    assert settings.refresh_token_lifetime == 2_592_000
    problems = problems_of(text.replace("2592000", "31622400"))  # over a year: refused
    assert any("refresh_token_lifetime" in p for p in problems), problems


def test_check_reports_seven_planted_problems_of_different_kinds_in_one_run(
    tmp_path: Path,
) -> None:
    """Each kind of problem is found by a different part of loading (YAML, substitution,
    secret files, each section's model, the checks across sections, the compile pass); all are
    reported at once, each at its path and line, and nothing else (no knock-on)."""
    text = f"""
        server:
          public_url: https://mcp.example.com
          prot: 8080
        auth:
          resource_server:
            authorization_servers:
              - {{name: corp, issuer: "https://idp.example.com"}}
          authorization_server:
            login: {{local: {{users_file: {tmp_path / "users.yaml"}}}}}
        sessions:
          keys: ["${{SESSION_KEY}}"]
          idle_timeout: soon
        upstreams:
          - name: files
            route: /files/mcp
            url: http://127.0.0.1:3001/mcp
            authorization_servers: [crop]
            policy:
              tools: {{"read_*": [files:read], "*_file": [files:write]}}
          - name: other
            route: /files/mcp
            url: http://127.0.0.1:3002/mcp
        """
    assert problems_of(text) == [
        "server.prot (line 4): unknown key (did you mean 'port'?)",
        f"auth.authorization_server.login.local.users_file (line 10): cannot read users file "
        f"{tmp_path / 'users.yaml'}: FileNotFoundError",
        "sessions.keys[0] (line 12): environment variable SESSION_KEY is unset",
        "sessions.idle_timeout (line 13): Input should be a valid number, unable to parse "
        "string as a number",
        "upstreams[0].authorization_servers[0] (line 18): no authorization server is named "
        "'crop' (did you mean 'corp'?)",
        "upstreams[0].policy.tools.*_file (line 20): 'read_*' and '*_file' can match the same "
        "name and have equally many literal characters, so neither wins: give the one that "
        "should win more literal characters, or change one so that they cannot both match",
        "upstreams[1].route (line 22): '/files/mcp' is already the route of upstreams[0]",
    ]


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("a section's own check", 'sessions: {keys: ["${KEY}"]}\n'),
        (
            "the compile pass",
            "auth: {authorization_server: {login: {local: {users_file: x}}, "
            'signing_key: "${KEY}"}}\nserver: {public_url: "https://mcp.example.com"}\n',
        ),
        (
            "a check of the enclosing model",
            "auth: {authorization_server: {login: {local: "
            '{users_file: x}}, previous_signing_keys: ["${KEY}"]}}\n',
        ),
    ],
)
def test_an_unset_variable_is_reported_once_without_its_knock_ons(where: str, text: str) -> None:
    problems = problems_of(MINIMAL + text)
    unset = [p for p in problems if "environment variable KEY is unset" in p]
    assert len(unset) == 1, problems
    assert not [p for p in problems if "key" in p.lower() and p not in unset], (where, problems)


def test_an_unreadable_secret_file_is_one_problem_at_its_line(tmp_path: Path) -> None:
    text = MINIMAL + f"store: {{backend: redis, url_file: {tmp_path / 'absent'}}}\n"
    assert problems_of(text) == [
        f"store.url_file (line 4): cannot read secret file '{tmp_path / 'absent'}': No such "
        "file or directory"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sever: {port: 1}\n", "sever (line 4): unknown key (did you mean 'server'?)"),
        (
            "server: {metrics_prot: 9}\n",
            "server.metrics_prot (line 4): unknown key (did you mean 'metrics_port'?)",
        ),
        (
            "store: {backend: redis, url_fiel: x}\n",
            "store.url_fiel (line 4): unknown key (did you mean 'url_file'?)",
        ),
        ("sessions: {zebra: 1}\n", "sessions.zebra (line 4): unknown key"),
    ],
)
def test_an_unknown_key_gets_the_nearest_known_one(text: str, expected: str) -> None:
    assert expected in problems_of(MINIMAL + text)


def test_an_unknown_key_in_an_upstream_is_matched_against_its_kind() -> None:
    problems = problems_of(MINIMAL.replace("url:", "pass_header: [x], url:"))
    assert problems == ["upstreams[0].pass_header (line 3): unknown key (did you mean "
                        "'pass_headers'?)"]  # fmt: skip


def test_a_policy_only_load_needs_no_secret_file_or_variable(tmp_path: Path) -> None:
    """`explain` loads this way: it needs the policy, not the secrets."""
    text = textwrap.dedent(f"""
        server: {{public_url: "https://mcp.example.com"}}
        auth:
          authorization_server:
            login: {{local: {{users_file: {tmp_path / "absent.yaml"}}}}}
            signing_key_file: {tmp_path / "absent.pem"}
        sessions: {{keys_file: {tmp_path / "absent-keys"}}}
        store: {{backend: redis, url: "${{REDIS_URL}}"}}
        upstreams:
          - name: files
            route: /files/mcp
            url: http://127.0.0.1:3001/mcp
            headers: {{X-Api-Key: "${{API_KEY}}"}}
            policy: {{tools: {{write_file: [files:write]}}}}
        """)
    with pytest.raises(ConfigError):
        load_text(text, env={})
    compiled = load_text(text, env={}, policy_only=True)
    policy = compiled.policies["files"]
    assert isinstance(policy.decide(frozenset({"files:write"}), "tools/call", "write_file"), Allow)
    assert not isinstance(policy.decide(frozenset(), "tools/call", "write_file"), Allow)
    assert compiled.signing_keys is None
    assert compiled.users is None


def test_a_policy_only_load_still_reports_policy_problems() -> None:
    text = AUTH.replace("scopes: [files:read]", 'policy: {tools: {"a*": [x], "*a": [y]}}')
    with pytest.raises(ConfigError) as caught:
        load_text(text + 'sessions: {keys: ["${KEY}"]}\n', env={}, policy_only=True)
    assert [p.path for p in caught.value.problems] == ["upstreams[0].policy.tools.*a"]


def test_an_upstream_with_a_problem_still_takes_part_in_the_checks_across_sections() -> None:
    """A bad url in one upstream does not hide its unknown server or the duplicate route of
    the next; a route that is itself invalid is reported once, not also as a duplicate."""
    problems = problems_of(
        AUTH.replace("scopes: [files:read]", "authorization_servers: [crop]").replace(
            "http://127.0.0.1:3001/mcp", "ftp://x"
        )
        + '  - {name: notes, route: /files/mcp, url: "http://127.0.0.1:3002/mcp"}\n'
        + '  - {name: bad, route: "files", url: "ftp://y"}\n'
        + '  - {name: bad2, route: "files", url: "http://127.0.0.1:3003/mcp"}\n'
    )
    assert [p.split(": ", 1)[0] for p in problems] == [
        "upstreams[0].url (line 8)",
        "upstreams[0].authorization_servers[0] (line 8)",
        "upstreams[1].route (line 9)",
        "upstreams[2].route (line 10)",
        "upstreams[2].url (line 10)",
        "upstreams[3].route (line 11)",
    ]
