"""Debian packages the tests need (redis-server, chromium), installed on first use.

The test machines run as root with apt-get; anywhere else `apt_install` says what to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

APT_TIMEOUT = 900


class PackageUnavailableError(RuntimeError):
    """A Debian package is not installed and cannot be installed here."""


def apt_install(package: str, *, why: str) -> None:
    """`apt-get update` then `apt-get install -y <package>`, saying first on stderr what it
    installs system-wide and `why`; raises PackageUnavailableError (with the tail of apt's
    output) when that is impossible or fails."""
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        raise PackageUnavailableError(
            f"{package} is missing and cannot be installed here (needs root and apt-get): "
            f"run `apt-get update && apt-get install -y {package}` as root"
        )
    print(f"==> installing {package} (apt-get, system-wide): {why}", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt_get, "update", "-qq"], [apt_get, "install", "-y", "-qq", package]):
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
        )
        if result.returncode != 0:
            raise PackageUnavailableError(
                f"`{' '.join(argv)}` failed with status {result.returncode}:\n"
                f"{(result.stderr or result.stdout)[-2000:]}"
            )
