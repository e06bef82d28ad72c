"""`python -m tests.support.without_otel ARGS...`: the `mcp-auth-gateway` command in a process
where OpenTelemetry is not installed, as far as imports can tell.

A `sys.meta_path` finder placed first answers every `opentelemetry` module with the same
`ModuleNotFoundError` the interpreter raises for a package that is not there, so the gateway
without the `otel` extra is tested without uninstalling anything from the shared venv.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = "opentelemetry"


class NotInstalled(MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == BLOCKED or fullname.startswith(BLOCKED + "."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def main() -> int:
    sys.meta_path.insert(0, NotInstalled())
    assert not any(name.split(".")[0] == BLOCKED for name in sys.modules)
    from gateway.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
