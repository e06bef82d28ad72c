"""The canonical serialization every audit hash is computed over, and the chain's genesis.

A record's hash is SHA-256 over its canonical form: JSON text with object keys sorted by code
point, no whitespace at all (`,` and `:` as separators); in strings `"` and `\\` escaped with
a backslash, `\\b \\f \\n \\r \\t` in their short forms, every other character outside
U+0020..U+007E as `\\uXXXX` (lowercase hex; UTF-16 surrogate pairs beyond the BMP); integers
in decimal; floats in the shortest form that reads back to the same double (Python's `repr`,
e.g. `1e+16`, `0.1`); `NaN` and infinities refused; that is,
`json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False)`, as ASCII bytes. The hash is over values, not over the bytes a sink wrote,
so a record verifies whether it comes from the audit file (which holds exactly this text) or
from a log line that embeds it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

GENESIS: Final = "0" * 64
"""`prev` of the first record of a chain (`chain_started`)."""
FORMAT_VERSION: Final = 1


def canonical(record: Any) -> bytes:
    """The canonical JSON bytes of `record` (see the module docstring)."""
    text = json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("ascii")


def record_hash(data: bytes) -> str:
    """SHA-256 of canonical bytes, in lowercase hex: the next record's `prev`."""
    return hashlib.sha256(data).hexdigest()
