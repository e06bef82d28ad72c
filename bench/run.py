"""Benchmark the gateway against the same upstreams reached directly.

Run: `.venv/bin/python bench/run.py [--duration 5] [--rounds 2] [--concurrency 1,16,64]
[--out bench/results/latest.json] [--quick] [--record]`. See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LUA = BENCH / "mcp_call.lua"
AUTHORIZATION: dict[str, str] = {}
"""`Authorization` header value per gateway URL (direct upstream URLs get none)."""
VENV_BIN = Path(sys.executable).parent
GATEWAY_CMD = f"{VENV_BIN / 'mcp-auth-gateway'} serve --config {{config}}"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROTOCOL_VERSION = "2026-07-28"
WARMUP_SECONDS = 1
NOISE_CPUS = 0.1  # a run during which other processes used more CPU than this is flagged
# Targets, at concurrency 16 with JSON responses.
TARGET_CONCURRENCY = 16
TARGET_RATIO = {"sdk-json": 0.95, "echo": 0.50}
TARGET_CPU_US = 350.0


class BenchError(Exception):
    """A failure that makes the whole run meaningless (a process died, a target never answered)."""


@dataclass(frozen=True)
class Upstream:
    name: str
    argv: tuple[str, ...]  # "{port}" is replaced by the port
    progress: bool  # send a progressToken so an SSE-mode SDK server really streams
    content_type: str  # the response type the probe must see


UPSTREAMS = (
    Upstream(
        "sdk-json",
        (sys.executable, str(BENCH / "sdk_upstream.py"), "--port", "{port}", "--mode", "json"),
        progress=False,
        content_type="application/json",
    ),
    Upstream(
        "sdk-sse",
        (sys.executable, str(BENCH / "sdk_upstream.py"), "--port", "{port}", "--mode", "sse"),
        progress=True,
        content_type="text/event-stream",
    ),
    Upstream(
        "echo",
        (sys.executable, str(BENCH / "echo_server.py"), "--port", "{port}"),
        progress=False,
        content_type="application/json",
    ),
)


# --- processes ------------------------------------------------------------------------------


class Processes:
    """Every process this run starts, stopped by PID (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.logdir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children ourselves
            )
        self.procs[name] = proc
        return proc

    def check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise BenchError(
                f"{name} (pid {proc.pid}) exited with {proc.returncode}\n{self.tail(name)}"
            )

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return "\n".join(f"  | {line}" for line in text) or "  | (no output)"

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, busy + idle) CPU seconds summed over all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


def busy_cpus(seconds: float = 1.0) -> float:
    """How many CPUs' worth of work the machine did over `seconds`."""
    busy0, total0 = machine_cpu_seconds()
    time.sleep(seconds)
    busy1, total1 = machine_cpu_seconds()
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(1e-9, total1 - total0)


def children_cpu_seconds() -> float:
    """CPU used by this script's reaped children (i.e. the wrk processes that have finished)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of `root` and its live descendants, plus the reaped children's cutime+cstime."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            stats[int(entry.name)] = raw[raw.rindex(")") + 2 :].split()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            ticks += sum(int(value) for value in stats[pid][11:15])  # utime stime cutime cstime
            todo.extend(children.get(pid, []))
    return ticks / CLK_TCK


# --- HTTP probes ----------------------------------------------------------------------------


def request_body(progress: bool) -> bytes:
    meta: dict[str, Any] = {
        "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    if progress:
        meta = {"progressToken": 1, **meta}
    params = {"name": "echo", "arguments": {"text": "hello"}, "_meta": meta}
    return json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    ).encode()


def http(url: str, body: bytes | None = None, timeout: float = 5) -> tuple[int, str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL_VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    if url in AUTHORIZATION:
        headers["Authorization"] = AUTHORIZATION[url]
    req = urllib.request.Request(url, data=body, headers=headers if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode(errors="replace")


def check_call(url: str, upstream: Upstream) -> str | None:
    """One `tools/call`; None if it is a 200 carrying the echoed text, else what is wrong."""
    status, ctype, text = http(url, request_body(upstream.progress))
    if status != 200 or not ctype.startswith(upstream.content_type):
        return f"{status} {ctype}: {text[:300]}"
    if ctype.startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = data[-1] if data else ""
    try:
        message = json.loads(text)
    except ValueError:
        return f"unparsable body: {text[:300]}"
    if message.get("id") != 1 or "hello" not in json.dumps(message.get("result")):
        return f"unexpected reply: {text[:300]}"
    return None


def wait_ready(
    procs: Processes, name: str, probe: Callable[[], object], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        procs.check_alive(name)
        try:
            last = probe()
            if last is None:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise BenchError(f"{name} not ready after {timeout:.0f}s: {last}\n{procs.tail(name)}")


# --- wrk ------------------------------------------------------------------------------------


@dataclass
class WrkRun:
    requests: int
    duration_us: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    bad: int
    socket_errors: int
    first_bad: str | None
    cpu_us_per_req: dict[str, float] = field(default_factory=dict)  # process name -> CPU µs/req
    other_cpus: float = 0.0  # CPUs used by the rest of the machine during the run

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    def problem(self) -> str | None:
        if self.bad or self.socket_errors or not self.requests:
            return (
                f"{self.bad} bad responses (non-2xx or no JSON-RPC result), "
                f"{self.socket_errors} socket errors, {self.requests} requests; "
                f"first bad: {self.first_bad}"
            )
        return None


def run_wrk(url: str, concurrency: int, seconds: int, progress: bool) -> WrkRun:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    argv += ["-s", str(LUA), url] + (["--", "progress"] if progress else [])
    # The token goes through the environment, not argv (which `ps` shows).
    env = os.environ | {"BENCH_AUTHORIZATION": AUTHORIZATION.get(url, "")}
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=seconds + 30)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{out}{err}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    socket_errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors"))
    return WrkRun(
        requests=data["requests"],
        duration_us=data["duration_us"],
        p50_us=data["p50_us"],
        p90_us=data["p90_us"],
        p99_us=data["p99_us"],
        max_us=data["max_us"],
        bad=data["bad"],
        socket_errors=socket_errors + data["timeouts"],
        first_bad=data["first_bad"],
    )


# --- the benchmark --------------------------------------------------------------------------


@dataclass
class Row:
    concurrency: int
    upstream: str
    direct: list[WrkRun] = field(default_factory=list)
    gateway: list[WrkRun] = field(default_factory=list)
    gateway_cpu_us_per_req: float | None = None
    error: str | None = None

    def median(self, mode: str, attr: str) -> float | None:
        runs: list[WrkRun] = getattr(self, mode)
        return statistics.median(getattr(r, attr) for r in runs) if runs else None

    @property
    def ratio(self) -> float | None:
        pairs = list(zip(self.direct, self.gateway, strict=False))
        return statistics.median(g.rps / d.rps for d, g in pairs) if pairs else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"concurrency": self.concurrency, "upstream": self.upstream}
        for mode in ("direct", "gateway"):
            out[mode] = {
                "rps": self.median(mode, "rps"),
                "p50_us": self.median(mode, "p50_us"),
                "p99_us": self.median(mode, "p99_us"),
                "rounds": [asdict(r) | {"rps": r.rps} for r in getattr(self, mode)],
            }
        out["ratio_gateway_direct"] = self.ratio
        out["gateway_cpu_us_per_req"] = self.gateway_cpu_us_per_req
        out["ok"] = self.error is None
        out["error"] = self.error
        return out


def measured_run(
    procs: Processes, watch: list[str], url: str, concurrency: int, seconds: int, progress: bool
) -> tuple[WrkRun, dict[str, float]]:
    """Warm up, then one measured wrk run; also returns CPU seconds used by each watched process.

    Also records `other_cpus`: the CPU the rest of the machine used during the run (machine busy
    time minus our servers' and wrk's), in CPUs; above ~0.1 the run shared the machine.
    """
    warm = run_wrk(url, concurrency, WARMUP_SECONDS, progress)
    if warm.problem():
        return warm, {}
    pids = {name: proc.pid for name, proc in procs.procs.items()}
    before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    wrk_before, (busy_before, _), start = children_cpu_seconds(), machine_cpu_seconds(), time.time()
    run = run_wrk(url, concurrency, seconds, progress)
    wrk_cpu, (busy_after, _), wall = (
        children_cpu_seconds() - wrk_before,
        machine_cpu_seconds(),
        time.time() - start,
    )
    cpu = {name: tree_cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    for name in watch:
        procs.check_alive(name)
    run.other_cpus = (busy_after - busy_before - sum(cpu.values()) - wrk_cpu) / wall
    if run.requests:
        run.cpu_us_per_req = {name: 1e6 * cpu[name] / run.requests for name in watch}
        run.cpu_us_per_req["wrk"] = 1e6 * wrk_cpu / run.requests
    return run, cpu


def bench_row(
    procs: Processes, row: Row, upstream: Upstream, urls: dict[str, str], args: argparse.Namespace
) -> None:
    gw_cpu = 0.0
    gw_requests = 0
    for rnd in range(args.rounds):
        for mode, url in urls.items():
            watch = [upstream.name] + (["gateway"] if mode == "gateway" else [])
            run, cpu = measured_run(
                procs, watch, url, row.concurrency, args.duration, upstream.progress
            )
            label = f"c={row.concurrency:<3} {row.upstream:<8} {rnd + 1}/{args.rounds} {mode:<7}"
            if problem := run.problem():
                row.error = f"{mode}: {problem}"
                print(f"{label} FAIL: {problem}", file=sys.stderr, flush=True)
                return
            getattr(row, mode).append(run)
            extra = ""
            if mode == "gateway":
                gw_cpu += cpu["gateway"]
                gw_requests += run.requests
                extra = f"  gateway CPU {run.cpu_us_per_req['gateway']:.0f} µs/req"
            if run.other_cpus > NOISE_CPUS:
                extra += f"  NOISY: other processes used {run.other_cpus:.2f} CPUs"
            print(
                f"{label} {run.rps:8.0f} req/s  p50 {ms(run.p50_us)}  p99 {ms(run.p99_us)}{extra}",
                flush=True,
            )
    if gw_requests:
        row.gateway_cpu_us_per_req = 1e6 * gw_cpu / gw_requests


def write_gateway_config(
    path: Path, port: int, upstream_ports: dict[str, int], issuer: str | None
) -> None:
    """With an issuer, every route requires a token validated against the bench's JWKS server;
    without one (--anonymous), routes are anonymous: the bare proxy path. Built by the test
    suite's config helper, with production logging: one JSON access line per request, written
    to the gateway's log file."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.configs import PRODUCTION_LOG, gateway_document, write_yaml

    access = {} if issuer is None else {"scopes": ["mcp:tools"]}
    upstreams = [
        {"name": name, "route": f"/{name}/mcp", "url": f"http://127.0.0.1:{up_port}/mcp", **access}
        for name, up_port in upstream_ports.items()
    ]
    auth = None
    if issuer is not None:
        trusted = {"name": "bench", "issuer": issuer, "jwks_uri": f"{issuer}/jwks"}
        auth = {"resource_server": {"authorization_servers": [trusted]}}
    write_yaml(path, gateway_document(*upstreams, port=port, log=PRODUCTION_LOG, auth=auth))


def start_token_issuer(procs: Processes) -> tuple[str, RSAKey]:
    """A signing key made now, its public JWKS served on loopback; returns (issuer, key)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "bench", "use": "sig"})
    jwks = procs.logdir / "jwks.json"
    jwks.write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    port = free_port()
    procs.start(
        "jwks",
        [sys.executable, str(BENCH / "jwks_server.py"), "--port", str(port), "--jwks", str(jwks)],
    )
    issuer = f"http://127.0.0.1:{port}"

    def ready() -> str | None:
        status, _, text = http(f"{issuer}/jwks")
        return None if status == 200 else f"/jwks {status}: {text[:200]}"

    wait_ready(procs, "jwks", ready)
    return issuer, key


def access_token(issuer: str, key: RSAKey, resource: str) -> str:
    """An RFC 9068 access token for `resource`, valid for the whole run."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "bench",
        "aud": resource,
        "client_id": "bench",
        "scope": "mcp:tools",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "bench"}, claims, key)


def run_benchmark(args: argparse.Namespace, procs: Processes) -> tuple[list[Row], dict[str, Any]]:
    upstream_ports = {up.name: free_port() for up in UPSTREAMS}
    for up in UPSTREAMS:
        argv = [a.replace("{port}", str(upstream_ports[up.name])) for a in up.argv]
        procs.start(up.name, argv)
    direct = {up.name: f"http://127.0.0.1:{upstream_ports[up.name]}/mcp" for up in UPSTREAMS}
    for up in UPSTREAMS:
        wait_ready(procs, up.name, partial(check_call, direct[up.name], up))

    gateway: dict[str, str] = {}
    gateway_info: dict[str, Any] = {"enabled": args.gateway_cmd is not None}
    if args.gateway_cmd:
        port = free_port()
        issuer, key = (None, None) if args.anonymous else start_token_issuer(procs)
        config = procs.logdir / "gateway.yaml"
        write_gateway_config(config, port, upstream_ports, issuer)
        argv = shlex.split(args.gateway_cmd.replace("{config}", str(config)))
        gateway_info |= {"argv": argv, "config": config.read_text()}
        procs.start("gateway", argv)
        base = f"http://127.0.0.1:{port}"

        def healthz() -> str | None:
            status, _, text = http(f"{base}/healthz")
            return None if status == 200 else f"/healthz {status}: {text[:200]}"

        wait_ready(procs, "gateway", healthz)
        for up in UPSTREAMS:
            gateway[up.name] = url = f"{base}/{up.name}/mcp"
            if issuer is not None and key is not None:
                AUTHORIZATION[url] = "Bearer " + access_token(issuer, key, url)
            wait_ready(procs, "gateway", partial(check_call, gateway[up.name], up), 10)

    rows = []
    for concurrency in args.concurrency:
        for up in UPSTREAMS:
            row = Row(concurrency, up.name)
            urls = {"direct": direct[up.name]} | ({"gateway": gateway[up.name]} if gateway else {})
            bench_row(procs, row, up, urls, args)
            rows.append(row)
    return rows, gateway_info


# --- reporting ------------------------------------------------------------------------------


def ms(us: float | None) -> str:
    return "      -" if us is None else f"{us / 1000:6.2f}ms"


def num(value: float | None, fmt: str, width: int, unit: str = "") -> str:
    return ("-" if value is None else format(value, fmt) + unit).rjust(width)


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'conc':>4}  {'upstream':<8} | {'direct req/s':>12} {'p50':>8} {'p99':>8} | "
        f"{'gateway req/s':>13} {'p50':>8} {'p99':>8} | {'gw/direct':>9} | {'gw CPU/req':>10}"
    )
    print()
    print(head)
    print("-" * len(head))
    for row in rows:
        ratio = None if row.ratio is None else 100 * row.ratio
        cpu = row.gateway_cpu_us_per_req
        line = (
            f"{row.concurrency:>4}  {row.upstream:<8} | "
            f"{num(row.median('direct', 'rps'), '.0f', 12)} {ms(row.median('direct', 'p50_us'))} "
            f"{ms(row.median('direct', 'p99_us'))} | "
            f"{num(row.median('gateway', 'rps'), '.0f', 13)} {ms(row.median('gateway', 'p50_us'))} "
            f"{ms(row.median('gateway', 'p99_us'))} | {num(ratio, '.1f', 9, '%')} | "
            f"{num(cpu, '.0f', 10, ' µs')}"
        )
        print(line + ("   FAIL" if row.error else ""))
    print()


def evaluate_targets(rows: list[Row]) -> list[dict[str, Any]]:
    at = {r.upstream: r for r in rows if r.concurrency == TARGET_CONCURRENCY and r.gateway}
    targets: list[dict[str, Any]] = []
    for name, floor in TARGET_RATIO.items():
        if name in at and (ratio := at[name].ratio) is not None:
            label = f"gateway/direct vs {name} >= {floor:.0%}"
            targets.append({"target": label, "value": ratio, "met": ratio >= floor})
    for name in TARGET_RATIO:
        if name in at and (cpu := at[name].gateway_cpu_us_per_req) is not None:
            label = f"gateway CPU/req ({name}) <= {TARGET_CPU_US:.0f} µs"
            targets.append({"target": label, "value": cpu, "met": cpu <= TARGET_CPU_US})
    if targets:
        print(f"Targets (concurrency {TARGET_CONCURRENCY}, JSON responses):")
        for t in targets:
            value = f"{t['value']:.1%}" if "vs" in t["target"] else f"{t['value']:.0f} µs"
            print(f"  {t['target']:<38} {value:>8}  {'met' if t['met'] else 'MISSED'}")
        print()
    return targets


def command_output(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=10)
    except OSError:
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if out.returncode in (0, 1) and text else None


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with Path("/proc/cpuinfo").open() as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for pkg in ("aiohttp", "mcp", "uvicorn", "uvloop", "mcp-auth-gateway"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": command_output(["wrk", "-v"]),
        "git_commit": command_output(["git", "describe", "--always", "--dirty"]),
    }


# --- main -----------------------------------------------------------------------------------


def gateway_installed() -> bool:
    if not (VENV_BIN / "mcp-auth-gateway").exists():
        return False
    try:
        return importlib.util.find_spec("gateway.cli") is not None
    except ImportError:
        return False


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=2, help="direct/gateway pairs per row")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[1, 16, 64],
        help="comma-separated connection counts",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 s runs, 1 round")
    parser.add_argument(
        "--record",
        action="store_true",
        help="also write bench/results.json (bench/results-anonymous.json with --anonymous)",
    )
    parser.add_argument(
        "--gateway-cmd",
        default=GATEWAY_CMD,
        help="command starting the gateway; {config} is replaced by the generated config path",
    )
    parser.add_argument("--no-gateway", action="store_true", help="direct rows only")
    parser.add_argument(
        "--anonymous",
        action="store_true",
        help="anonymous routes: the bare proxy path, without authentication and policy",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 1, 1
    if args.no_gateway:
        args.gateway_cmd = None
    elif args.gateway_cmd == GATEWAY_CMD and not gateway_installed():
        print("WARNING: mcp-auth-gateway is not installed yet: direct rows only", file=sys.stderr)
        args.gateway_cmd = None
    return args


def on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with: sudo apt-get install -y wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    if (busy := busy_cpus()) > NOISE_CPUS:
        print(f"WARNING: {busy:.1f} CPUs busy before start: figures will be noisy", file=sys.stderr)
    started = datetime.now(UTC)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    procs = Processes(logdir)
    try:
        rows, gateway_info = run_benchmark(args, procs)
    except BenchError as exc:
        print(f"\nBENCHMARK ABORTED: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()

    print_table(rows)
    targets = evaluate_targets(rows)
    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_info() | {"busy_cpus_before_start": round(busy, 3)},
        "settings": {
            "duration_s": args.duration,
            "warmup_s": WARMUP_SECONDS,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "wrk_threads": 1,
            "gateway": gateway_info,
        },
        "rows": [row.summary() for row in rows],
        "targets": targets,
    }
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    args.out.write_text(text)
    print(f"results written to {args.out}")
    if args.record:
        # The two configurations are recorded apart: the bare proxy never overwrites the
        # production-path figures.
        recorded = BENCH / ("results-anonymous.json" if args.anonymous else "results.json")
        recorded.write_text(text)
        print(f"recorded to {recorded}")
    noisy = sum(run.other_cpus > NOISE_CPUS for row in rows for run in row.direct + row.gateway)
    if noisy:
        print(f"WARNING: {noisy} run(s) shared the machine with other busy processes (NOISY above)")
    failed = [f"c={r.concurrency} {r.upstream}: {r.error}" for r in rows if r.error]
    if failed:
        print("\nFAILED ROWS (figures from erroring runs are not reported):", file=sys.stderr)
        print("\n".join(f"  {f}" for f in failed), file=sys.stderr)
        return 1
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
