"""Redaction of recorded arguments (`policy.audit`): table tests of the pure rules."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.audit import AuditPolicy, FieldRules
from gateway.policy.redaction import NO_RULES, Redaction, keyed_hasher

HASHED = keyed_hasher(b"k" * 32)
RULES = Redaction(
    AuditPolicy(
        tools={
            "create_issue": FieldRules(keep=["title"], drop=["token"]),
            "search_*": FieldRules(keep="all", drop=["password"]),
            "search_secret*": FieldRules(drop="all", keep=["page"]),
            "*": FieldRules(hash=["x"], keep="all"),
        },
        prompts={"greet": FieldRules(keep=["name"])},
    )
)


@pytest.mark.parametrize(
    ("method", "name", "arguments", "recorded"),
    [
        pytest.param("tools/call", "create_issue", {"title": "t", "token": "s", "body": "b"},
                     {"title": "t", "body": HASHED("b")}, id="keep-drop-rest-hashed"),
        pytest.param("tools/call", "search_docs", {"q": "x", "password": "p"}, {"q": "x"},
                     id="pattern-keep-all-but-drop"),
        pytest.param("tools/call", "search_secrets", {"q": "x", "page": 2}, {"page": 2},
                     id="more-literal-pattern-wins"),
        pytest.param("tools/call", "other", {"x": 1, "y": [1]}, {"x": HASHED(1), "y": [1]},
                     id="catch-all-pattern"),
        pytest.param("prompts/get", "greet", {"name": "n", "mood": "m"},
                     {"name": "n", "mood": HASHED("m")}, id="prompt-rules"),
        pytest.param("prompts/get", "unknown", {"a": "1"}, {"a": HASHED("1")},
                     id="no-rule-hash-all"),
        pytest.param("tools/call", "create_issue", "not-an-object", HASHED("not-an-object"),
                     id="non-object-arguments-one-value"),
    ],
)  # fmt: skip
def test_arguments_as_recorded(method: str, name: str, arguments: Any, recorded: Any) -> None:
    assert RULES.rule_for(method, name).apply(arguments, HASHED) == recorded


def test_routes_without_rules_hash_everything() -> None:
    rule = NO_RULES.rule_for("tools/call", "anything")
    assert rule.apply({"a": "secret", "b": {"c": 1}}, HASHED) == {
        "a": HASHED("secret"),
        "b": HASHED({"c": 1}),
    }


def test_hashes_are_keyed_and_order_independent() -> None:
    other = keyed_hasher(b"o" * 32)
    assert HASHED("1234") != other("1234")
    assert HASHED({"a": 1, "b": 2}) == HASHED({"b": 2, "a": 1})
    assert HASHED("1234").startswith("hmac-sha256:")
    assert len(HASHED("1234")) == len("hmac-sha256:") + 64
