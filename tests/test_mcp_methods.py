"""The MCP method set, and the look-alikes the gateway refuses."""

from __future__ import annotations

import re
from pathlib import Path

import mcp_types
import pytest

from gateway.mcp_methods import KNOWN_METHODS, MCP_METHODS, MethodSet


def test_every_method_of_the_sdk_schema_is_known() -> None:
    """The official SDK's wire types (2025-11-25 and 2026-07-28) name no method we lack."""
    package = Path(mcp_types.__file__).parent
    sdk = {
        match
        for source in package.rglob("*.py")
        for match in re.findall(r'method: Literal\["([^"]+)"\]', source.read_text())
    }
    assert len(sdk) > 30
    assert sdk <= KNOWN_METHODS


@pytest.mark.parametrize(
    ("method", "like"),
    [
        ("Tools/Call", "tools/call"),
        ("TOOLS/LIST", "tools/list"),
        ("tools/call ", "tools/call"),
        (" tools/call", "tools/call"),
        ("tools/call\t", "tools/call"),
        ("tools/call\x00", "tools/call"),
        ("tools/\x7fcall", "tools/call"),
        ("\ufefftools/call", "tools/call"),
        ("tools/call\u200b", "tools/call"),
        ("\uff54\uff4f\uff4f\uff4c\uff53/call", "tools/call"),
        ("logging/setlevel", "logging/setLevel"),
        ("Notifications/Initialized", "notifications/initialized"),
        ("tools/call", None),
        ("logging/setLevel", None),
        ("x/vendor", None),
        ("tools/calls", None),
        ("", None),
    ],
    ids=[
        "case",
        "upper",
        "trailing-space",
        "leading-space",
        "tab",
        "nul",
        "del",
        "bom",
        "zero-width-space",
        "full-width",
        "camel-case-lowered",
        "notification",
        "exact",
        "exact-camel-case",
        "unknown",
        "different-name",
        "empty",
    ],
)
def test_variant_of(method: str, like: str | None) -> None:
    assert MCP_METHODS.variant_of(method) == like


def test_a_method_set_of_its_own() -> None:
    listed = MethodSet(["x/Vendor"])
    assert "x/Vendor" in listed
    assert listed.variant_of("X/vendor ") == "x/Vendor"
    assert listed.variant_of("x/Vendor") is None
