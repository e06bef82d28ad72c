"""What the example configs in config/ need from the environment to load."""

from __future__ import annotations

from pathlib import Path

from gateway.session.seal import new_key
from tests.support.secrets import remember

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
EXAMPLES = sorted(CONFIG_DIR.glob("*.yaml"))


def example_env() -> dict[str, str]:
    """The variables config/*.yaml refer to, with harmless values (a fresh session key)."""
    return {
        "FILES_API_KEY": "example",
        "INTROSPECTION_SECRET": "example",
        "SESSION_KEY": remember(new_key()),
    }
