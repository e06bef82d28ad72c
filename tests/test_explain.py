"""`mcp-auth-gateway explain`: a dry-run decision with the rule that made it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.examples import CONFIG_DIR, example_env

EXAMPLE = CONFIG_DIR / "example.yaml"
DEMO = CONFIG_DIR / "demo.yaml"


def explain(
    *args: str, config: Path = EXAMPLE, with_secrets: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "explain", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(example_env() if with_secrets else {})},
    )


@pytest.mark.parametrize(
    ("args", "code", "rule", "decision"),
    [
        (
            ["--scopes", "files:read", "--tool", "read_file"],
            0,
            "tools['read_file']: needs files:read",
            "allow",
        ),
        (
            ["--scopes", "files:admin", "--tool", "read_file"],
            0,
            "tools['read_file']: needs files:read",
            "allow",
        ),
        (
            ["--scopes", "files:read", "--tool", "delete_all"],
            3,
            "tools['delete_*']: needs files:admin",
            "insufficient_scope",
        ),
        (
            ["--scopes", "files:admin", "--tool", "drop_database"],
            3,
            "tools['drop_database']: denied whatever the scopes",
            "deny",
        ),
        (
            ["--scopes", "", "--resource", "file:///public/x"],
            0,
            "resources['file:///public/*']: needs no scope",
            "allow",
        ),
        (
            ["--scopes", "files:admin", "--tool", "unlisted"],
            3,
            "default: deny: denied whatever the scopes",
            "deny",
        ),
        (
            ["--scopes", "files:read", "--method", "tools/list"],
            0,
            "baseline scopes: needs files:read",
            "allow",
        ),
    ],
    ids=[
        "exact",
        "implied",
        "pattern-missing",
        "deny",
        "public-resource",
        "default-deny",
        "other-method",
    ],
)
def test_explain(args: list[str], code: int, rule: str, decision: str) -> None:
    result = explain("--route", "/files/mcp", *args)
    assert result.returncode == code, result.stderr
    assert f"rule:     {rule}" in result.stdout
    assert f"decision: {decision}" in result.stdout


def test_explain_shows_implied_scopes() -> None:
    result = explain("--route", "files", "--scopes", "files:admin", "--tool", "write_file")
    assert "implied:  files:read files:write" in result.stdout


def test_explain_unknown_route() -> None:
    result = explain("--route", "/nope", "--tool", "x")
    assert result.returncode == 1
    assert "no route '/nope'" in result.stderr


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each listed name -> what the listing says of it."""
    out = {}
    for line in result.stdout.splitlines():
        if line.startswith("  "):
            name, _, rest = line.strip().partition("  ")
            out[name] = rest.strip()
    return out


@pytest.mark.parametrize(
    ("claims", "write_file", "delete_all"),
    [
        ('{"groups": ["eng"]}', "attainable: listed, annotated as needing files:write",
         "hidden: needs scopes this caller cannot be granted"),
        ('{"groups": ["admins"]}', "attainable: listed, annotated as needing files:write",
         "attainable: listed, annotated as needing files:admin"),
        ('{"groups": ["sales"]}', "hidden: needs scopes this caller cannot be granted",
         "hidden: needs scopes this caller cannot be granted"),
    ],
    ids=["eng", "admins", "sales"],
)  # fmt: skip
def test_explain_lists_for_another_issuers_token_by_attainable_rules(
    claims: str, write_file: str, delete_all: str
) -> None:
    result = explain("--route", "files", "--scopes", "files:read", "--claims", claims)
    assert result.returncode == 0, result.stderr
    listed = lines(result)
    assert listed["read_file"] == "held: listed as is (tools['read_file'])"
    assert listed["write_file"] == f"{write_file} (tools['write_file'])"
    assert listed["delete_*"] == f"{delete_all} (tools['delete_*'])"
    assert listed["drop_database"] == (
        "hidden: denied whatever the scopes (tools['drop_database'])"
    )
    assert listed["file:///public/*"].startswith("held: ")
    assert f"policy.attainable for claims {claims}" in result.stdout


@pytest.mark.parametrize(
    ("groups", "write_file"),
    [("editors", "attainable: listed, annotated as needing files:write"),
     ("nobody", "hidden: needs scopes this caller cannot be granted")],
    ids=["alice", "bob"],
)  # fmt: skip
def test_explain_lists_for_the_gateways_own_token_by_grant_rules(
    groups: str, write_file: str
) -> None:
    claims = f'{{"groups": ["{groups}"]}}'
    result = explain(
        "--route", "/demo/mcp", "--scopes", "files:read", "--claims", claims, config=DEMO
    )
    assert result.returncode == 0, result.stderr
    listed = lines(result)
    assert listed["write_file"] == f"{write_file} (tools['write_file'])"
    assert listed["delete_file"] == (
        "hidden: needs scopes this caller cannot be granted (tools['delete_file'])"
    )
    assert "auth.authorization_server.grants" in result.stdout


def test_explain_a_call_also_says_how_lists_show_it() -> None:
    result = explain(
        "--route", "files", "--scopes", "files:read", "--claims", '{"groups": ["eng"]}',
        "--tool", "write_file",
    )  # fmt: skip
    assert result.returncode == 3
    assert "decision: insufficient_scope" in result.stdout
    assert "listed:   attainable: listed, annotated as needing files:write" in result.stdout


def test_explain_refuses_an_issuer_the_route_does_not_trust() -> None:
    result = explain("--route", "files", "--issuer", "legacy")
    assert result.returncode == 1
    assert "does not trust 'legacy'" in result.stderr


@pytest.mark.parametrize("config", [EXAMPLE, DEMO], ids=lambda p: p.name)
def test_explain_needs_only_the_policy_not_the_secrets(config: Path) -> None:
    """Neither the variables the configs read secrets from nor the files they name (the demo's
    users file) exist here: explain still decides, as it would with them."""
    assert not set(example_env()) & set(os.environ)
    route = "/files/mcp" if config == EXAMPLE else "/demo/mcp"
    args = ("--route", route, "--scopes", "files:read", "--tool", "read_file")
    without = explain(*args, config=config, with_secrets=False)
    assert without.returncode == 0, without.stderr
    assert without.stdout == explain(*args, config=config).stdout
