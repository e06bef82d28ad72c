"""`mcp-auth-gateway audit verify FILE [FILE...]`: check audit files (`gateway.audit.verify`).

The verification keys come from a JWKS (a file, or the gateway's `/oauth/jwks` URL when its
facade signs checkpoints) or from a key file (the `audit.signing_key` file itself, or its
public key in PEM).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from gateway.audit.verify import ChainBrokenError, PublicKeys, verify_files
from gateway.oauth.signing import SigningKey, SigningKeyError

MAX_JWKS_BYTES = 1024 * 1024


def add_audit_command(commands: Any) -> None:
    """The `audit` command and its `verify` subcommand."""
    audit = commands.add_parser("audit", help="work with audit files")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="check the hash chain and checkpoint signatures of audit files (or of log files "
        "holding audit_record lines); exit 0 when intact, else name the first bad record",
    )
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--jwks", help="JWKS file or http(s) URL (e.g. <gateway>/oauth/jwks)")
    source.add_argument("--key", type=Path, help="the signing key file, or its public key (PEM)")


def run_audit(args: argparse.Namespace) -> int:
    try:
        keys = _jwks_keys(args.jwks) if args.jwks else _file_keys(args.key)
    except (OSError, ValueError, JoseError, SigningKeyError) as exc:
        print(f"audit verify: cannot load the verification keys: {exc}", file=sys.stderr)
        return 2
    try:
        summary = verify_files(list(args.files), keys)
    except ChainBrokenError as broken:
        print(f"audit verify: FAILED at {broken}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"audit verify: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(summary.text())
    return 0


def _jwks_keys(source: str) -> PublicKeys:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as response:  # noqa: S310 - http(s) only
            data = response.read(MAX_JWKS_BYTES + 1)
    else:
        data = Path(source).read_bytes()
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError("the JWKS is too large")
    document = json.loads(data)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS (no keys list)")
    keys: dict[str, ECKey | RSAKey] = {}
    imported = KeySet.import_key_set(document)  # type: ignore[arg-type]
    for key in imported.keys:
        if isinstance(key, ECKey | RSAKey):
            keys[key.kid or key.thumbprint()] = key
    return keys


def _file_keys(path: Path) -> PublicKeys:
    text = path.read_text(encoding="utf-8")
    try:
        key: ECKey | RSAKey = SigningKey.from_text(text).key
    except SigningKeyError:
        raw = load_pem_public_key(text.strip().encode())
        key = ECKey.import_key(raw) if hasattr(raw, "curve") else RSAKey.import_key(raw)  # type: ignore[arg-type]
    return {key.thumbprint(): key}
