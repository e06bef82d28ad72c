"""Benchmark the gateway against the same upstreams reached directly, side by side with nginx,
a minimal uvloop + httptools relay and a naive aiohttp proxy in the same interleaved rounds.

Run: `.venv/bin/python bench/run.py [--duration 5] [--rounds 2] [--concurrency 1,16,64]
[--out bench/results/latest.json] [--quick] [--record] [--no-compare]`. See bench/README.md for
the method.
"""

from __future__ import annotations

import argparse
import asyncio
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

import aiohttp
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from nginx_proxy import nginx_argv, nginx_binary, nginx_config
from sse_streams import (
    hold_streams,
    merge_streaming,
    process_rss_kib,
    raise_open_files_limit,
    relay_streams,
)

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
# The comparison rows: other proxies in front of these upstreams, in the same interleaved run.
COMPARED_UPSTREAMS = ("sdk-json", "echo")
PROXIES = ("nginx", "relay", "naive", "gateway")  # measured in this order after `direct`


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
    """One (concurrency, upstream): its runs over every path, direct first, then each proxy."""

    concurrency: int
    upstream: str
    runs: dict[str, list[WrkRun]] = field(default_factory=dict)  # path -> its runs, by round
    cpu_us_per_req: dict[str, float] = field(default_factory=dict)  # proxy -> its own CPU
    error: str | None = None

    def median(self, path: str, attr: str) -> float | None:
        runs = self.runs.get(path, [])
        return statistics.median(getattr(r, attr) for r in runs) if runs else None

    def ratio(self, path: str = "gateway") -> float | None:
        """Median over rounds of `path`'s throughput / the direct run's of the same round."""
        pairs = list(zip(self.runs.get("direct", []), self.runs.get(path, []), strict=False))
        return statistics.median(p.rps / d.rps for d, p in pairs) if pairs else None

    def added(self, path: str, attr: str) -> float | None:
        """How much `path` adds to the direct median of `attr` (a latency percentile)."""
        proxied, direct = self.median(path, attr), self.median("direct", attr)
        return None if proxied is None or direct is None else proxied - direct

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"concurrency": self.concurrency, "upstream": self.upstream}
        for path, runs in self.runs.items():
            out[path] = {
                "rps": self.median(path, "rps"),
                "p50_us": self.median(path, "p50_us"),
                "p99_us": self.median(path, "p99_us"),
                "rounds": [asdict(r) | {"rps": r.rps} for r in runs],
            }
        out["ratio_gateway_direct"] = self.ratio("gateway")
        out["gateway_cpu_us_per_req"] = self.cpu_us_per_req.get("gateway")
        out["ratio_vs_direct"] = {path: self.ratio(path) for path in self.runs if path != "direct"}
        out["cpu_us_per_req"] = dict(self.cpu_us_per_req)
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
    """`--rounds` rounds over `urls` (path -> URL, direct first): each round measures every path
    once, so direct and each proxy share the machine's conditions of that round."""
    cpu: dict[str, float] = {}
    requests: dict[str, int] = {}
    for rnd in range(args.rounds):
        for path, url in urls.items():
            proxy = [] if path == "direct" else [path]
            run, used = measured_run(
                procs,
                [upstream.name, *proxy],
                url,
                row.concurrency,
                args.duration,
                upstream.progress,
            )
            label = f"c={row.concurrency:<3} {row.upstream:<8} {rnd + 1}/{args.rounds} {path:<7}"
            if problem := run.problem():
                row.error = f"{path}: {problem}"
                print(f"{label} FAIL: {problem}", file=sys.stderr, flush=True)
                return
            row.runs.setdefault(path, []).append(run)
            extra = ""
            if proxy:
                cpu[path] = cpu.get(path, 0.0) + used[path]
                requests[path] = requests.get(path, 0) + run.requests
                extra = f"  {path} CPU {run.cpu_us_per_req[path]:.0f} µs/req"
            if run.other_cpus > NOISE_CPUS:
                extra += f"  NOISY: other processes used {run.other_cpus:.2f} CPUs"
            print(
                f"{label} {run.rps:8.0f} req/s  p50 {ms(run.p50_us)}  p99 {ms(run.p99_us)}{extra}",
                flush=True,
            )
    row.cpu_us_per_req = {path: 1e6 * cpu[path] / n for path, n in requests.items() if n}


def write_gateway_config(
    path: Path,
    port: int,
    upstream_ports: dict[str, int],
    issuer: str | None,
    sessions: dict[str, Any] | None = None,
    tracing: dict[str, Any] | None = None,
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
    document = gateway_document(
        *upstreams, port=port, log=PRODUCTION_LOG, auth=auth, sessions=sessions, tracing=tracing
    )
    write_yaml(path, document)


def start_otlp_sink(procs: Processes) -> dict[str, Any]:
    """An OTLP/HTTP sink for the gateway's spans (`--tracing`); the gateway's `tracing`
    section, every trace recorded and exported with the default batching."""
    port = free_port()
    procs.start("otlp-sink", [sys.executable, str(BENCH / "otlp_sink.py"), "--port", str(port)])
    endpoint = f"http://127.0.0.1:{port}/v1/traces"

    def ready() -> str | None:
        status, _, text = http(endpoint)
        return None if status == 404 else f"otlp sink {status}: {text[:200]}"

    wait_ready(procs, "otlp-sink", ready)
    return {"enabled": True, "endpoint": endpoint, "sample_ratio": 1.0}


def start_token_issuer(procs: Processes, name: str = "jwks") -> tuple[str, RSAKey]:
    """A signing key made now, its public JWKS served on loopback; returns (issuer, key)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "bench", "use": "sig"})
    jwks = procs.logdir / f"{name}.json"
    jwks.write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    port = free_port()
    procs.start(
        name,
        [sys.executable, str(BENCH / "jwks_server.py"), "--port", str(port), "--jwks", str(jwks)],
    )
    issuer = f"http://127.0.0.1:{port}"

    def ready() -> str | None:
        status, _, text = http(f"{issuer}/jwks")
        return None if status == 200 else f"/jwks {status}: {text[:200]}"

    wait_ready(procs, name, ready)
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


def start_upstreams(procs: Processes, upstreams: tuple[Upstream, ...]) -> dict[str, int]:
    """Every upstream started and answering a `tools/call`; returns name -> port."""
    ports = {up.name: free_port() for up in upstreams}
    for up in upstreams:
        procs.start(up.name, [a.replace("{port}", str(ports[up.name])) for a in up.argv])
    for up in upstreams:
        wait_ready(procs, up.name, partial(check_call, direct_url(ports[up.name]), up))
    return ports


def direct_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/mcp"


def start_gateway(
    procs: Processes,
    gateway_cmd: str,
    upstream_ports: dict[str, int],
    issuer: str | None,
    name: str = "gateway",
    sessions: dict[str, Any] | None = None,
    tracing: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The gateway on a free port, answering /healthz; returns (base URL, what to record)."""
    port = free_port()
    config = procs.logdir / f"{name}.yaml"
    write_gateway_config(config, port, upstream_ports, issuer, sessions, tracing)
    argv = shlex.split(gateway_cmd.replace("{config}", str(config)))
    procs.start(name, argv)
    base = f"http://127.0.0.1:{port}"

    def healthz() -> str | None:
        status, _, text = http(f"{base}/healthz")
        return None if status == 200 else f"/healthz {status}: {text[:200]}"

    wait_ready(procs, name, healthz)
    return base, {"enabled": True, "argv": argv, "config": config.read_text()}


def start_nginx(
    procs: Processes, upstream_ports: dict[str, int], name: str = "nginx", buffering: bool = True
) -> tuple[str | None, str]:
    """nginx proxying /NAME/mcp to each upstream, or (None, why not); returns (base URL, note)."""
    binary = nginx_binary()
    if binary is None:
        return None, "nginx is not installed (apt-get install -y nginx): nginx rows skipped"
    directory = procs.logdir / name
    directory.mkdir()
    port = free_port()
    routes = {f"/{up}/mcp": (up_port, "/mcp") for up, up_port in upstream_ports.items()}
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, port, routes, buffering=buffering))
    procs.start(name, nginx_argv(binary, config, directory))
    version = command_output([binary, "-v"]) or "nginx"
    return f"http://127.0.0.1:{port}", f"{version}, config {config}"


def start_python_proxy(
    procs: Processes, name: str, upstream_ports: dict[str, int], issuer: str
) -> str:
    """bench/naive_proxy.py (`naive`) or bench/lean_relay.py (`relay`) proxying /NAME/mcp to
    each upstream; returns its base URL."""
    script = {"naive": "naive_proxy.py", "relay": "lean_relay.py"}[name]
    port = free_port()
    argv = [sys.executable, str(BENCH / script), "--port", str(port)]
    argv += ["--issuer", issuer]
    for upstream, up_port in upstream_ports.items():
        argv += ["--route", f"/{upstream}/mcp={direct_url(up_port)}"]
    procs.start(name, argv)
    return f"http://127.0.0.1:{port}"


def start_proxies(
    args: argparse.Namespace, procs: Processes, upstream_ports: dict[str, int]
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """The proxies this run measures: returns (proxy -> upstream name -> URL, what to record).

    Every proxy that authenticates gets a token per route; each route is checked with one
    `tools/call` before anything is measured."""
    authenticates = {"nginx": False, "relay": True, "naive": True, "gateway": not args.anonymous}
    wants_tokens = args.compare or (args.gateway_cmd and authenticates["gateway"])
    issuer, key = start_token_issuer(procs) if wants_tokens else (None, None)
    bases: dict[str, tuple[str, tuple[str, ...]]] = {}  # proxy -> (base URL, upstream names)
    info: dict[str, Any] = {"gateway": {"enabled": False}, "skipped": []}
    if args.compare and issuer is not None:
        compared = {name: upstream_ports[name] for name in COMPARED_UPSTREAMS}
        nginx_base, note = start_nginx(procs, compared)
        if nginx_base is None:
            print(f"NOTE: {note}", file=sys.stderr, flush=True)
            info["skipped"].append(note)
        else:
            bases["nginx"] = (nginx_base, COMPARED_UPSTREAMS)
            info["nginx"] = note
        for name in ("relay", "naive"):
            bases[name] = (start_python_proxy(procs, name, compared, issuer), COMPARED_UPSTREAMS)
    if args.gateway_cmd:
        gateway_issuer = issuer if authenticates["gateway"] else None
        tracing = start_otlp_sink(procs) if args.tracing else None
        base, info["gateway"] = start_gateway(
            procs, args.gateway_cmd, upstream_ports, gateway_issuer, tracing=tracing
        )
        bases["gateway"] = (base, tuple(upstream_ports))
    urls: dict[str, dict[str, str]] = {}
    by_name = {up.name: up for up in UPSTREAMS}
    for proxy in PROXIES:
        if proxy not in bases:
            continue
        base, names = bases[proxy]
        urls[proxy] = {name: f"{base}/{name}/mcp" for name in names}
        for name, url in urls[proxy].items():
            if authenticates[proxy] and issuer is not None and key is not None:
                AUTHORIZATION[url] = "Bearer " + access_token(issuer, key, url)
            wait_ready(procs, proxy, partial(check_call, url, by_name[name]), 10)
    return urls, info


def run_benchmark(args: argparse.Namespace, procs: Processes) -> tuple[list[Row], dict[str, Any]]:
    upstream_ports = start_upstreams(procs, UPSTREAMS)
    proxied, info = start_proxies(args, procs, upstream_ports)
    rows = []
    for concurrency in args.concurrency:
        for up in UPSTREAMS:
            row = Row(concurrency, up.name)
            urls = {"direct": direct_url(upstream_ports[up.name])}
            urls |= {proxy: by_up[up.name] for proxy, by_up in proxied.items() if up.name in by_up}
            bench_row(procs, row, up, urls, args)
            rows.append(row)
    return rows, info


# --- streaming: SSE relay cost and memory per open stream -------------------------------------

SSE_EVENTS = 1000  # events per relayed stream
TARGET_SSE_CPU_RATIO = 1.3  # gateway CPU per stream / nginx's
TARGET_KIB_PER_STREAM = 12.0  # gateway RSS growth per open stream
TARGET_RSS_AFTER = 1.10  # gateway RSS after the streams closed / before they opened
OPEN_STREAMS_ROUNDS = 2
OPEN_STREAMS_WARMUP = 16
RELEASE_WAIT = 2.0
"""Seconds to let pass before reading RSS at rest: the gateway gives freed memory back one second
after a burst of connections ends (gateway.web.memory.RELEASE_DELAY)."""


def stream_check(url: str, authorization: str | None) -> str | None:
    """One short `stream` call (10 events); None if it came back whole, else what is wrong."""
    try:
        asyncio.run(relay_streams(url, authorization, 1, 10))
    except (RuntimeError, aiohttp.ClientError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def settled_rss_kib(pid: int, timeout: float = 10) -> int:
    """The process's VmRSS once two readings 0.25 s apart differ by under 1% (or at `timeout`)."""
    last = process_rss_kib(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = process_rss_kib(pid)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def sse_relay_cost(
    args: argparse.Namespace, procs: Processes, urls: dict[str, str], auth: dict[str, str]
) -> dict[str, Any]:
    """Per round (`--sse-rounds`), `--sse-streams` streams of SSE_EVENTS events one after another
    over each path (direct first); the CPU each proxy's process tree spends, per stream."""
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    upstream_cpu: dict[str, list[float]] = {}
    n = args.sse_streams
    upstream_pid = procs.procs["sse-upstream"].pid
    for rnd in range(args.sse_rounds):
        for path, url in urls.items():
            asyncio.run(relay_streams(url, auth.get(path), 2, SSE_EVENTS))  # warm-up
            proxy = procs.procs.get(f"sse-{path}")
            before = tree_cpu_seconds(proxy.pid) if proxy else 0.0
            up_before, start = tree_cpu_seconds(upstream_pid), time.perf_counter()
            asyncio.run(relay_streams(url, auth.get(path), n, SSE_EVENTS))
            elapsed = time.perf_counter() - start
            up_used = tree_cpu_seconds(upstream_pid) - up_before
            wall.setdefault(path, []).append(1e3 * elapsed / n)
            upstream_cpu.setdefault(path, []).append(1e6 * up_used / n)
            extra = ""
            if proxy:
                procs.check_alive(f"sse-{path}")
                used = 1e6 * (tree_cpu_seconds(proxy.pid) - before) / n
                cpu.setdefault(path, []).append(used)
                extra = f"  {path} CPU {used:.0f} µs/stream"
            print(
                f"sse-stream {rnd + 1}/{args.sse_rounds} {path:<7} {n} streams of {SSE_EVENTS} "
                f"events: {1e3 * elapsed / n:6.2f} ms/stream{extra}",
                flush=True,
            )
    medians = {path: statistics.median(values) for path, values in cpu.items()}
    ratio = (
        medians["gateway"] / medians["nginx"] if {"gateway", "nginx"} <= medians.keys() else None
    )
    return {
        "events_per_stream": SSE_EVENTS,
        "streams_per_run": n,
        "rounds": args.sse_rounds,
        "cpu_us_per_stream": medians,
        "cpu_us_per_stream_rounds": cpu,
        "ms_per_stream": {path: statistics.median(v) for path, v in wall.items()},
        "upstream_cpu_us_per_stream": {
            path: statistics.median(v) for path, v in upstream_cpu.items()
        },
        "ratio_gateway_nginx": ratio,
    }


def rss_while_held(pid: int, release: str, count: int) -> int:
    """The gateway's settled VmRSS, once the upstream confirms it holds `count` streams."""
    held = http(release.removesuffix("/release") + "/held")[2]
    if held.strip() != str(count):
        raise BenchError(f"the upstream holds {held} streams, expected {count}")
    return settled_rss_kib(pid)


def open_stream_memory(
    args: argparse.Namespace, procs: Processes, url: str, authorization: str | None, release: str
) -> dict[str, Any]:
    """`--open-streams-count` SSE calls held open at once through the gateway: its VmRSS before,
    while they are all open, and after they finished and their connections closed."""
    pid = procs.procs["sse-gateway"].pid
    count = args.open_streams_count
    asyncio.run(hold_streams(url, authorization, OPEN_STREAMS_WARMUP, release, lambda: None))
    rounds = []
    for rnd in range(OPEN_STREAMS_ROUNDS):
        time.sleep(RELEASE_WAIT)
        before = settled_rss_kib(pid)
        opened = asyncio.run(
            hold_streams(
                url, authorization, count, release, partial(rss_while_held, pid, release, count)
            )
        )
        procs.check_alive("sse-gateway")
        time.sleep(RELEASE_WAIT)
        after = settled_rss_kib(pid)
        measured = {
            "before_kib": before,
            "open_kib": opened,
            "after_kib": after,
            "kib_per_stream": (opened - before) / count,
            "after_over_before": after / before,
        }
        rounds.append(measured)
        print(
            f"open-streams {rnd + 1}/{OPEN_STREAMS_ROUNDS} {count} streams: gateway RSS "
            f"{before / 1024:.1f} -> {opened / 1024:.1f} -> {after / 1024:.1f} MiB, "
            f"{measured['kib_per_stream']:.1f} KiB/stream, after/before "
            f"{measured['after_over_before']:.3f}",
            flush=True,
        )
    return {"streams": count, "warmup_streams": OPEN_STREAMS_WARMUP, **rounds[0], "rounds": rounds}


def run_streaming(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    """The SSE upstream, a gateway routing /sse/mcp to it with the stream limits raised, nginx
    with `proxy_buffering off`; then the parts asked for."""
    raise_open_files_limit(4 * args.open_streams_count + 1024)  # inherited by what starts next
    port = free_port()
    argv = [sys.executable, str(BENCH / "sse_upstream.py"), "--port", str(port)]
    procs.start("sse-upstream", argv)
    urls = {"direct": direct_url(port)}
    wait_ready(procs, "sse-upstream", partial(stream_check, urls["direct"], None))
    out: dict[str, Any] = {"skipped": []}
    if args.sse_stream:
        nginx_base, note = start_nginx(procs, {"sse": port}, "sse-nginx", buffering=False)
        if nginx_base is None:
            print(f"NOTE: {note}", file=sys.stderr, flush=True)
            out["skipped"].append(note)
        else:
            urls["nginx"] = f"{nginx_base}/sse/mcp"
            wait_ready(procs, "sse-nginx", partial(stream_check, urls["nginx"], None))
    issuer, key = (None, None) if args.anonymous else start_token_issuer(procs, "sse-jwks")
    limit = args.open_streams_count + 64
    sessions = {"max_streams_per_principal": limit, "max_streams": max(10_000, limit)}
    base, _ = start_gateway(procs, args.gateway_cmd, {"sse": port}, issuer, "sse-gateway", sessions)
    urls["gateway"] = f"{base}/sse/mcp"
    auth: dict[str, str] = {}
    if issuer is not None and key is not None:
        auth["gateway"] = "Bearer " + access_token(issuer, key, urls["gateway"])
    wait_ready(procs, "sse-gateway", partial(stream_check, urls["gateway"], auth.get("gateway")))
    out["gateway_sessions"] = sessions
    if args.sse_stream:
        out["sse_stream"] = sse_relay_cost(args, procs, urls, auth)
    if args.open_streams:
        release = f"http://127.0.0.1:{port}/release"
        out["open_streams"] = open_stream_memory(
            args, procs, urls["gateway"], auth.get("gateway"), release
        )
    return out


def streaming_targets(streaming: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    sse = streaming.get("sse_stream")
    if sse and (ratio := sse["ratio_gateway_nginx"]) is not None:
        label = f"SSE relay CPU gateway/nginx <= {TARGET_SSE_CPU_RATIO}"
        targets.append({"target": label, "value": ratio, "met": ratio <= TARGET_SSE_CPU_RATIO})
    held = streaming.get("open_streams")
    if held:
        per = held["kib_per_stream"]
        label = f"gateway RSS per open stream <= {TARGET_KIB_PER_STREAM:.0f} KiB"
        targets.append({"target": label, "value": per, "met": per <= TARGET_KIB_PER_STREAM})
        after = held["after_over_before"]
        label = f"gateway RSS after/before <= {TARGET_RSS_AFTER}"
        targets.append({"target": label, "value": after, "met": after <= TARGET_RSS_AFTER})
    return targets


def print_streaming(streaming: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    if sse := streaming.get("sse_stream"):
        print(f"SSE relay, one stream of {sse['events_per_stream']} events (medians over rounds):")
        for path, wall in sse["ms_per_stream"].items():
            cpu = sse["cpu_us_per_stream"].get(path)
            own = "" if cpu is None else f"  proxy CPU {cpu:8.0f} µs/stream"
            print(f"  {path:<8} {wall:7.2f} ms/stream{own}")
    if held := streaming.get("open_streams"):
        print(
            f"{held['streams']} open SSE streams through the gateway: RSS "
            f"{held['before_kib']} -> {held['open_kib']} -> {held['after_kib']} KiB"
        )
    for t in targets:
        print(f"  {t['target']:<44} {t['value']:8.2f}  {'met' if t['met'] else 'MISSED'}")
    if sse or held:
        print()


# --- reporting ------------------------------------------------------------------------------


def ms(us: float | None) -> str:
    return "      -" if us is None else f"{us / 1000:6.2f}ms"


def num(value: float | None, fmt: str, width: int, unit: str = "") -> str:
    return ("-" if value is None else format(value, fmt) + unit).rjust(width)


def print_table(rows: list[Row]) -> None:
    """One line per path of each row; `vs direct` and `CPU/req` are the proxy's."""
    head = (
        f"{'conc':>4}  {'upstream':<8}  {'path':<7} | {'req/s':>8} {'p50':>8} {'p99':>8} | "
        f"{'vs direct':>9} | {'CPU/req':>8}"
    )
    print()
    print(head)
    print("-" * len(head))
    for row in rows:
        for index, path in enumerate(row.runs):
            ratio = None if path == "direct" else row.ratio(path)
            first = f"{row.concurrency:>4}  {row.upstream:<8}" if index == 0 else " " * 14
            print(
                f"{first}  {path:<7} | {num(row.median(path, 'rps'), '.0f', 8)} "
                f"{ms(row.median(path, 'p50_us'))} {ms(row.median(path, 'p99_us'))} | "
                f"{num(None if ratio is None else 100 * ratio, '.1f', 9, '%')} | "
                f"{num(row.cpu_us_per_req.get(path), '.0f', 8, ' µs')}"
            )
        if row.error:
            print(f"{'':>14}  FAIL: {row.error}")
    print()


def comparison(rows: list[Row]) -> list[dict[str, Any]]:
    """Per upstream and proxy, the issue's comparison figures: throughput vs direct and the
    proxy's CPU per request at concurrency 16, added p50 at 1, p99 at 64 (direct's alongside)."""
    at = {(r.concurrency, r.upstream): r for r in rows}
    out = []
    for upstream in dict.fromkeys(r.upstream for r in rows):
        loaded, single, crowded = (at.get((c, upstream)) for c in (TARGET_CONCURRENCY, 1, 64))
        for proxy in PROXIES:
            if not any(r is not None and proxy in r.runs for r in (loaded, single, crowded)):
                continue
            out.append(
                {
                    "upstream": upstream,
                    "proxy": proxy,
                    "ratio_vs_direct_c16": loaded and loaded.ratio(proxy),
                    "cpu_us_per_req_c16": loaded and loaded.cpu_us_per_req.get(proxy),
                    "added_p50_us_c1": single and single.added(proxy, "p50_us"),
                    "p99_us_c64": crowded and crowded.median(proxy, "p99_us"),
                    "direct_p99_us_c64": crowded and crowded.median("direct", "p99_us"),
                }
            )
    return out


def print_comparison(compared: list[dict[str, Any]]) -> None:
    if not compared:
        return
    head = (
        f"{'upstream':<8}  {'proxy':<7} | {'vs direct c=16':>14} | {'CPU/req c=16':>12} | "
        f"{'+p50 c=1':>9} | {'p99 c=64':>8} (direct)"
    )
    print("Side by side (medians over rounds; CPU is the proxy's own):")
    print(head)
    print("-" * len(head))
    for c in compared:
        added = c["added_p50_us_c1"]
        print(
            f"{c['upstream']:<8}  {c['proxy']:<7} | {num(c['ratio_vs_direct_c16'], '.2f', 14)} | "
            f"{num(c['cpu_us_per_req_c16'], '.0f', 12, ' µs')} | "
            f"{num(None if added is None else added / 1000, '+.2f', 9, 'ms')} | "
            f"{ms(c['p99_us_c64'])} ({ms(c['direct_p99_us_c64']).strip()})"
        )
    print()


def evaluate_targets(rows: list[Row]) -> list[dict[str, Any]]:
    at = {
        r.upstream: r for r in rows if r.concurrency == TARGET_CONCURRENCY and "gateway" in r.runs
    }
    targets: list[dict[str, Any]] = []
    for name, floor in TARGET_RATIO.items():
        if name in at and (ratio := at[name].ratio("gateway")) is not None:
            label = f"gateway/direct vs {name} >= {floor:.0%}"
            targets.append({"target": label, "value": ratio, "met": ratio >= floor})
    for name in TARGET_RATIO:
        if name in at and (cpu := at[name].cpu_us_per_req.get("gateway")) is not None:
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
    parser.add_argument("--no-gateway", action="store_true", help="no gateway rows")
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="no nginx, relay and naive-proxy rows "
        f"(otherwise run for {', '.join(COMPARED_UPSTREAMS)})",
    )
    parser.add_argument(
        "--anonymous",
        action="store_true",
        help="anonymous routes: the bare proxy path, without authentication and policy",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="the gateway with tracing on, every request traced and exported to a local OTLP "
        "sink (compare with a run without it: the cost of tracing)",
    )
    streams = parser.add_argument_group(
        "streaming parts (in a full run by default; --quick runs them only when named)"
    )
    streams.add_argument(
        "--sse-stream",
        action="store_true",
        help=f"SSE relay cost: CPU per stream of {SSE_EVENTS} events, nginx vs gateway",
    )
    streams.add_argument(
        "--open-streams",
        action="store_true",
        help="gateway RSS per open SSE stream (--open-streams-count held at once)",
    )
    streams.add_argument("--sse-streams", type=int, default=200, help="streams per SSE run")
    streams.add_argument(
        "--sse-rounds", type=int, default=3, help="SSE runs per path (1 with --quick)"
    )
    streams.add_argument("--open-streams-count", type=int, default=1000)
    streams.add_argument(
        "--streams-only", action="store_true", help="only the streaming parts (no wrk rows)"
    )
    streams.add_argument("--no-streams", action="store_true", help="no streaming parts")
    args = parser.parse_args()
    if args.tracing and args.record:
        parser.error("--tracing runs are compared by hand, never recorded")
    if not (args.sse_stream or args.open_streams) and (args.streams_only or not args.quick):
        args.sse_stream = args.open_streams = True  # neither named: both
    if args.no_streams:
        args.sse_stream = args.open_streams = False
    if args.quick:
        args.duration, args.rounds, args.sse_rounds = 1, 1, 1
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
    if shutil.which("wrk") is None and not args.streams_only:
        print("wrk is not installed; install it with: sudo apt-get install -y wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    if (busy := busy_cpus()) > NOISE_CPUS:
        print(f"WARNING: {busy:.1f} CPUs busy before start: figures will be noisy", file=sys.stderr)
    started = datetime.now(UTC)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    procs = Processes(logdir)
    rows: list[Row] = []
    proxies_info: dict[str, Any] = {"gateway": {"enabled": False}, "skipped": []}
    streaming: dict[str, Any] = {}
    try:
        if not args.streams_only:
            rows, proxies_info = run_benchmark(args, procs)
        if args.gateway_cmd and (args.sse_stream or args.open_streams):
            streaming = run_streaming(args, procs)
    except BenchError as exc:
        print(f"\nBENCHMARK ABORTED: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()

    if rows:
        print_table(rows)
    compared = comparison(rows)
    print_comparison(compared)
    targets = evaluate_targets(rows)
    stream_targets = streaming_targets(streaming)
    print_streaming(streaming, stream_targets)
    targets += stream_targets
    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_info() | {"busy_cpus_before_start": round(busy, 3)},
        "settings": {
            "duration_s": args.duration,
            "warmup_s": WARMUP_SECONDS,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "wrk_threads": 1,
            "gateway": proxies_info["gateway"],
            "nginx": proxies_info.get("nginx"),
            "compared_upstreams": list(COMPARED_UPSTREAMS) if args.compare else [],
            "skipped": proxies_info["skipped"] + streaming.get("skipped", []),
            "sse_stream": args.sse_stream,
            "open_streams": args.open_streams,
        },
        "rows": [row.summary() for row in rows],
        "comparison": compared,
        "targets": targets,
        "sse_stream": streaming.get("sse_stream"),
        "open_streams": streaming.get("open_streams"),
    }
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    args.out.write_text(text)
    print(f"results written to {args.out}")
    if args.record:
        # The two configurations are recorded apart: the bare proxy never overwrites the
        # production-path figures.
        recorded = BENCH / ("results-anonymous.json" if args.anonymous else "results.json")
        if args.streams_only and recorded.exists():
            # Only the streaming figures are new: the recorded wrk rows stay as they were.
            merged = merge_streaming(json.loads(recorded.read_text()), result)
            text = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
        recorded.write_text(text)
        print(f"recorded to {recorded}")
    noisy = sum(
        run.other_cpus > NOISE_CPUS for row in rows for runs in row.runs.values() for run in runs
    )
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
