"""The configuration reference: rendered from the JSON Schema, committed, kept current."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config.reference import (
    reference_schema,
    render_configuration_reference,
    render_reference,
)

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "configuration.md"
REGENERATE = "run: mcp-auth-gateway schema --markdown --output docs/configuration.md"


def test_committed_reference_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_configuration_reference(), REGENERATE


def test_cli_writes_the_reference(tmp_path: Path) -> None:
    output = tmp_path / "configuration.md"
    assert main(["schema", "--markdown", "--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == render_configuration_reference()


def _sections(text: str) -> dict[str, list[str]]:
    """Heading -> the keys in its table."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip().strip("`")
            sections[current] = []
        elif current is not None and (key := re.match(r"^\| `([^`]+)` \|", line)):
            sections[current].append(key.group(1))
    return sections


def test_every_key_of_every_section_is_documented() -> None:
    schema = reference_schema()
    text = render_configuration_reference()
    sections = _sections(text)
    assert sections["top level"] == list(schema["properties"])
    documented = [keys for heading, keys in sections.items() if heading != "top level"]
    objects = [d for d in schema["$defs"].values() if "properties" in d]
    assert len(documented) == len(objects)
    for definition in objects:
        assert sorted(definition["properties"]) in [sorted(keys) for keys in documented], (
            definition["title"]
        )


def test_links_point_at_headings() -> None:
    text = render_configuration_reference()
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", line[3:].lower()).replace(" ", "-")
        for line in text.splitlines()
        if line.startswith("## ")
    }
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    assert set(links) <= anchors


def test_defaults_from_factories_are_shown() -> None:
    text = render_configuration_reference()
    row = next(line for line in text.splitlines() if line.startswith("| `algorithms` |"))
    assert '"RS256"' in row
    assert '"EdDSA"' in row


def _row(text: str, key: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| `{key}` |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


TINY: dict[str, Any] = {
    "title": "Tiny",
    "description": "The root.",
    "type": "object",
    "properties": {
        "server": {"$ref": "#/$defs/Server"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
    },
    "required": ["items"],
    "$defs": {
        "Level": {"enum": ["low", "high"], "type": "string"},
        "Server": {
            "type": "object",
            "description": "Listener.\n\nSecond paragraph.",
            "properties": {
                "port": {"type": "integer", "default": 80, "minimum": 1, "maximum": 65535},
                "level": {"$ref": "#/$defs/Level", "default": "low"},
                "key": {
                    "anyOf": [{"type": "string", "format": "password", "writeOnly": True},
                              {"type": "null"}],
                    "default": None,
                    "description": "A | key.",
                },
                "other": {"type": "string", "pattern": "^[a-z]+$"},
                "key_file": {"type": "string", "description": "Read `key` from a file."},
            },
        },
        "Item": {
            "type": "object",
            "properties": {"rules": {"type": "object", "additionalProperties": {
                "anyOf": [{"type": "array", "items": {"type": "string"}},
                          {"const": "deny", "type": "string"}]}}},
        },
    },
}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param(
            "server",
            ["`server`", "object, see [`server`](#server)", "its keys' defaults", "—", "—"],
            id="nested-model-links-to-its-section",
        ),
        pytest.param(
            "items",
            ["`items`", "list of object, see [`items[]`](#items)", "*required*", "not empty", "—"],
            id="required-list-of-models",
        ),
        pytest.param(
            "port",
            ["`port`", "integer", "`80`", ">= 1, <= 65535", "—"],
            id="bounds-and-default",
        ),
        pytest.param(
            "level",
            ["`level`", "one of `low`, `high`", '`"low"`', "—", "—"],
            id="enum-inlined",
        ),
        pytest.param(
            "key",
            ["`key`", "string or null (*secret*)", "`null`", "—", r"A \| key. Or `key_file`."],
            id="secret-names-its-file-twin-and-pipes-are-escaped",
        ),
        pytest.param(
            "key_file",
            ["`key_file`", "string", "—", "—",
             "Read `key` from a file. Instead of `key`, not with it."],
            id="file-twin",
        ),
        pytest.param(
            "other",
            ["`other`", "string", "—", "matches `^[a-z]+$`", "—"],
            id="pattern",
        ),
        pytest.param(
            "rules",
            ["`rules`", "map of string to (list of string or `deny`)", "—", "—", "—"],
            id="map-of-choices",
        ),
    ],
)  # fmt: skip
def test_rows(key: str, expected: list[str]) -> None:
    assert _row(render_reference(TINY), key) == expected


def test_sections_in_document_order_with_twins_after_their_secret() -> None:
    text = render_reference(TINY, env_sections=frozenset({"server"}))
    assert list(_sections(text)) == ["top level", "server", "items[]"]
    assert _sections(text)["server"] == ["port", "level", "key", "key_file", "other"]
    assert "Listener.\n\nSecond paragraph." in text
    assert "`MCP_GATEWAY_SERVER__<FIELD>`" in text
    assert text.startswith("# Tiny reference\n")
