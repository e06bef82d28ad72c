"""The `audit` section and `policy.audit`, validated strictly, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.compiler import load_text
from gateway.config import ConfigError
from gateway.oauth.signing import SigningKey
from gateway.session.seal import new_key
from tests.support.secrets import remember

UPSTREAM = """
upstreams:
  - name: files
    route: /files/mcp
    url: http://127.0.0.1:9/mcp
    allow_anonymous: true
"""


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as error:
        load_text(text)
    return {problem.path: problem.message for problem in error.value.problems}


def test_problems_of_the_section_are_reported_together() -> None:
    found = problems(
        "audit: {sink: file, rotate_bytes: 10, hash_key: short, bogus: 1}\n" + UPSTREAM
    )
    assert found["audit.rotate_bytes"].startswith("Input should be greater than or equal")
    assert found["audit.hash_key"].startswith("not 32 bytes")
    assert found["audit.bogus"] == "unknown key"


def test_file_sink_needs_a_file_and_a_file_needs_the_file_sink() -> None:
    assert "sink file needs file" in problems("audit: {sink: file}\n" + UPSTREAM)["audit"]
    found = problems("audit: {sink: log, file: /tmp/x}\n" + UPSTREAM)
    assert "file is for sink file" in found["audit"]


def test_without_the_facade_checkpoints_need_a_signing_key(tmp_path: Path) -> None:
    assert "need a signing key" in problems("audit: {}\n" + UPSTREAM)["audit"]
    (tmp_path / "bad.pem").write_text("not a key")
    found = problems(f"audit: {{signing_key_file: {tmp_path / 'bad.pem'}}}\n" + UPSTREAM)
    assert found["audit.signing_key"] == "not a private key in PEM or JWK form"
    key = SigningKey.generate()
    (tmp_path / "key.pem").write_text(remember(key.to_pem()))
    hash_key = remember(new_key())
    text = f"audit: {{signing_key_file: {tmp_path / 'key.pem'}, hash_key: {hash_key}}}\n"
    compiled = load_text(text + UPSTREAM)
    assert compiled.audit_key is not None
    assert compiled.audit_key.kid == key.kid


def test_redaction_rules_are_checked() -> None:
    text = (
        UPSTREAM
        + """    policy:
      audit:
        tools:
          create_issue: {keep: [title], drop: [title]}
          "*": {keep: all, hash: all}
          other: {redact: [x]}
"""
    )
    found = problems("audit: {}\n" + text)
    assert found["upstreams[0].policy.audit.tools.create_issue"] == (
        "'title' is under both keep and drop"
    )
    assert "only one of keep, hash and drop" in found["upstreams[0].policy.audit.tools.*"]
    assert found["upstreams[0].policy.audit.tools.other.redact"].startswith("unknown key")


def test_redaction_patterns_that_tie_are_refused() -> None:
    text = (
        UPSTREAM
        + """    policy:
      audit:
        tools:
          "get_*": {keep: all}
          "*_get": {drop: all}
"""
    )
    found = problems("audit: {}\n" + text)
    assert "neither wins" in found["upstreams[0].policy.audit.tools.*_get"]
