"""What the example configs in config/ need from the environment to load."""

from __future__ import annotations

from pathlib import Path

from gateway.oauth.signing import SigningKey
from gateway.oauth.users import hash_password
from gateway.session.seal import new_key
from tests.support.secrets import remember

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
EXAMPLES = sorted(CONFIG_DIR.glob("*.yaml"))
_DEMO_USERS = Path(__file__).resolve().parents[2] / ".cache" / "examples" / "demo-users.yaml"


def example_env() -> dict[str, str]:
    """The variables config/*.yaml refer to, with harmless values (a fresh session key, a demo
    users file whose one user has a random password)."""
    if not _DEMO_USERS.exists():
        _DEMO_USERS.parent.mkdir(parents=True, exist_ok=True)
        encoded = hash_password(new_key())
        _DEMO_USERS.write_text(f'users:\n  demo: {{password_hash: "{encoded}"}}\n')
    return {
        "FILES_API_KEY": "example",
        "INTROSPECTION_SECRET": "example",
        "SESSION_KEY": remember(new_key()),
        "DEMO_USERS_FILE": str(_DEMO_USERS),
        "SIGNING_KEY_FILE": str(_signing_key()),
        "STS_CLIENT_SECRET": "example",
        "PROVIDER_CLIENT_SECRET": "example",
        "GRANT_KEY": remember(new_key()),
    }


def _signing_key() -> Path:
    """A signing key file for the examples' facade (made once, like the users file)."""
    path = _DEMO_USERS.parent / "signing-key.pem"
    if not path.exists():
        path.write_text(SigningKey.generate("ES256").to_pem())
    return path
