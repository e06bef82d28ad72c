"""Where the gateway's time goes: py-spy samples it under the benchmark's echo load.

Run: `./dev profile [--duration 10] [--rate 250] [--concurrency 16]` (as root: py-spy needs
ptrace). Starts the echo upstream, the bench's token issuer and the gateway on the production
path (bench/run.py's config), drives `/echo/mcp` with wrk, and records the gateway with
`py-spy record --nonblocking --format raw` (collapsed stacks) meanwhile. Prints the share of samples
per area (bench/profile_areas.py) and writes that summary to bench/profile.txt; the raw stacks go
to bench/results/profile-raw.txt (gitignored). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import run
from profile_areas import render, summarize

GIT = ["git", "describe", "--always", "--dirty"]
SUMMARY = run.BENCH / "profile.txt"
RAW = run.BENCH / "results" / "profile-raw.txt"
ECHO = next(up for up in run.UPSTREAMS if up.name == "echo")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds of sampling")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--summary", type=Path, default=SUMMARY, help="where the summary goes")
    parser.add_argument("--raw", type=Path, default=RAW, help="where the collapsed stacks go")
    return parser.parse_args()


def py_spy() -> str | None:
    return shutil.which("py-spy", path=f"{run.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def profile(args: argparse.Namespace, procs: run.Processes, spy: str) -> tuple[float, int]:
    """Samples the gateway while wrk drives it; returns (req/s, gateway pid)."""
    ports = run.start_upstreams(procs, (ECHO,))
    issuer, key = run.start_token_issuer(procs)
    base, _ = run.start_gateway(procs, run.GATEWAY_CMD, ports, issuer)
    url = f"{base}/echo/mcp"
    run.AUTHORIZATION[url] = "Bearer " + run.access_token(issuer, key, url)
    run.wait_ready(procs, "gateway", partial(run.check_call, url, ECHO), 10)
    run.run_wrk(url, args.concurrency, run.WARMUP_SECONDS, ECHO.progress)
    pid = procs.procs["gateway"].pid
    argv = [spy, "record", "--pid", str(pid), "--duration", str(args.duration)]
    argv += ["--rate", str(args.rate), "--nonblocking", "--format", "raw"]
    argv += ["--output", str(args.raw)]
    args.raw.parent.mkdir(parents=True, exist_ok=True)
    with (procs.logdir / "py-spy.log").open("wb") as log:
        sampler = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            # The load outlasts the sampling window: py-spy takes a moment to attach.
            load = run.run_wrk(url, args.concurrency, args.duration + 2, ECHO.progress)
            code = sampler.wait(timeout=30)
        finally:
            if sampler.poll() is None:
                sampler.kill()
                sampler.wait()
    if code != 0 or not args.raw.exists():
        log_text = (procs.logdir / "py-spy.log").read_text(errors="replace")
        raise run.BenchError(f"py-spy failed ({code}): {' '.join(argv)}\n{log_text}")
    if problem := load.problem():
        raise run.BenchError(f"the load had errors: {problem}")
    return load.rps, pid


def main() -> int:
    args = parse_args()
    spy = py_spy()
    if spy is None:
        print("py-spy is not installed: run it through ./dev profile", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print(
            "py-spy attaches to the gateway with ptrace, which needs root: "
            "run ./dev profile as root",
            file=sys.stderr,
        )
        return 2
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with: sudo apt-get install -y wrk", file=sys.stderr)
        return 2
    logdir = Path(tempfile.mkdtemp(prefix="mcp-profile-"))
    procs = run.Processes(logdir)
    taken = datetime.now(UTC)
    try:
        rps, _ = profile(args, procs, spy)
    except run.BenchError as exc:
        print(f"\nPROFILE ABORTED: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
    shares, samples = summarize(args.raw.read_text().splitlines())
    header = (
        f"Gateway profile, {taken:%Y-%m-%d %H:%M} UTC, git {run.command_output(GIT) or '?'}: "
        f"py-spy {args.rate} Hz for {args.duration} s (--nonblocking), {samples} samples, "
        f"echo route at concurrency {args.concurrency}, {rps:.0f} req/s through the gateway"
    )
    text = render(shares, header)
    print(text)
    args.summary.write_text(text)
    print(f"summary written to {args.summary}; raw stacks in {args.raw}")
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
