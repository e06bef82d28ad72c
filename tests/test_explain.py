"""`mcp-auth-gateway explain`: a dry-run decision with the rule that made it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.examples import CONFIG_DIR, example_env

EXAMPLE = CONFIG_DIR / "example.yaml"


def explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "explain", "--config", str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **example_env()},
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
