"""Create the compose stack's secrets in one go; existing files are kept, never overwritten.

Run it with the gateway's own image (it imports the gateway), after `docker compose build`:

    docker run --rm --network none --user "$(id -u):$(id -g)" \
        -v "$PWD/deploy/compose:/compose" --entrypoint python \
        mcp-auth-gateway:0.1.0 /compose/init_secrets.py /compose/secrets

or from a checkout: `.venv/bin/python deploy/compose/init_secrets.py deploy/compose/secrets`.

It writes, for docker-compose.yml's `secrets:`:

- session-keys     a session sealing key (`mcp-auth-gateway keygen`), shared by the replicas
- signing-key.pem  an EC P-256 key (PKCS#8 PEM) for the access tokens the gateways mint
- users.yaml       local users alice (group editors) and bob, with fresh random passwords,
                   printed once here; add users with `mcp-auth-gateway hash-password`
- redis-url        redis://gateway:<password>@redis:6379/0, for the replicas
- redis.acl        Redis's users: `gateway` (that password, stored as its SHA-256) may run only
                   the commands the gateway's store uses, on its own keys; `default` (no
                   password) may only PING, for the health check

The directory is made mode 0700 and the files 0644: compose bind-mounts each file as it is, and
the containers read them as their own users (10001, redis), not as yours. Nothing here is ever
committed (secrets/.gitignore).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.oauth.users import hash_password
from gateway.session.seal import new_key

REDIS_HOST = "redis:6379"
KEY_PREFIX = "mcp-gateway:"  # store.key_prefix in gateway-replicated.yaml
DEMO_USERS = {"alice": ["editors"], "bob": []}
# What RedisKV sends (gateway/store/redis.py): GET, SET, GETDEL, DEL, PING, its two scripts
# (EVALSHA, and SCRIPT LOAD/EVAL when Redis has not cached them; the scripts themselves run
# SET, GET, INCR and PEXPIRE), and SELECT on connect. Its CLIENT SETINFO on connect is left
# out on purpose: refused, it is skipped, and Redis < 7.2 would not even start with it listed.
GATEWAY_COMMANDS = "+ping +get +set +getdel +del +incr +pexpire +eval +evalsha +script|load +select"


def _signing_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _users(passwords: dict[str, str]) -> str:
    lines = ["users:"]
    for user, groups in DEMO_USERS.items():
        encoded = hash_password(passwords[user])
        claims = json.dumps({"groups": groups})
        lines.append(f'  {user}: {{password_hash: "{encoded}", claims: {claims}}}')
    return "\n".join(lines) + "\n"


def _redis_acl(password: str) -> str:
    digest = hashlib.sha256(password.encode()).hexdigest()
    return (
        "user default on nopass -@all +ping\n"
        f"user gateway on #{digest} ~{KEY_PREFIX}* resetchannels -@all {GATEWAY_COMMANDS}\n"
    )


def _write(path: Path, content: Callable[[], str]) -> bool:
    """Write `path` (mode 0644) unless it exists; True when it was written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(content())
    os.chmod(path, 0o644)  # whatever the umask
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("directory", type=Path, help="where to write (deploy/compose/secrets)")
    directory = parser.parse_args(argv).directory
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)

    _write(directory / "session-keys", lambda: new_key() + "\n")
    _write(directory / "signing-key.pem", _signing_key)
    passwords = {user: secrets.token_urlsafe(12) for user in DEMO_USERS}
    wrote_users = _write(directory / "users.yaml", lambda: _users(passwords))
    # The URL and the ACL hold the same password: write both or neither.
    if not (directory / "redis-url").exists() and not (directory / "redis.acl").exists():
        redis_password = secrets.token_urlsafe(24)
        _write(directory / "redis.acl", lambda: _redis_acl(redis_password))
        url = f"redis://gateway:{redis_password}@{REDIS_HOST}/0\n"
        _write(directory / "redis-url", lambda: url)
    elif not ((directory / "redis-url").exists() and (directory / "redis.acl").exists()):
        print("redis-url and redis.acl go together: remove the one left", file=sys.stderr)
        return 1

    print(f"secrets in {directory}")
    if wrote_users:
        print("demo users (these passwords are shown only now):")
        for user, password in passwords.items():
            print(f"  {user:<6} {password}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
