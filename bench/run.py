"""Benchmark the gateway against the same upstreams reached directly, side by side with nginx
and a naive aiohttp proxy in the same interleaved rounds.

Run: `.venv/bin/python bench/run.py [--duration 5] [--rounds 2] [--concurrency 1,16,64]
[--out bench/results/latest.json] [--quick] [--record] [--no-compare]`. See bench/README.md for
the method.
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
from nginx_proxy import nginx_argv, nginx_binary, nginx_config

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
PROXIES = ("nginx", "naive", "gateway")  # measured in this order after `direct` in each round


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
    procs: Processes, gateway_cmd: str, upstream_ports: dict[str, int], issuer: str | None
) -> tuple[str, dict[str, Any]]:
    """The gateway on a free port, answering /healthz; returns (base URL, what to record)."""
    port = free_port()
    config = procs.logdir / "gateway.yaml"
    write_gateway_config(config, port, upstream_ports, issuer)
    argv = shlex.split(gateway_cmd.replace("{config}", str(config)))
    procs.start("gateway", argv)
    base = f"http://127.0.0.1:{port}"

    def healthz() -> str | None:
        status, _, text = http(f"{base}/healthz")
        return None if status == 200 else f"/healthz {status}: {text[:200]}"

    wait_ready(procs, "gateway", healthz)
    return base, {"enabled": True, "argv": argv, "config": config.read_text()}


def start_nginx(procs: Processes, upstream_ports: dict[str, int]) -> tuple[str | None, str]:
    """nginx proxying /NAME/mcp to each upstream, or (None, why not); returns (base URL, note)."""
    binary = nginx_binary()
    if binary is None:
        return None, "nginx is not installed (apt-get install -y nginx): nginx rows skipped"
    directory = procs.logdir / "nginx"
    directory.mkdir()
    port = free_port()
    routes = {f"/{name}/mcp": (up_port, "/mcp") for name, up_port in upstream_ports.items()}
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, port, routes))
    procs.start("nginx", nginx_argv(binary, config, directory))
    version = command_output([binary, "-v"]) or "nginx"
    return f"http://127.0.0.1:{port}", f"{version}, config {config}"


def start_naive_proxy(procs: Processes, upstream_ports: dict[str, int], issuer: str) -> str:
    """bench/naive_proxy.py proxying /NAME/mcp to each upstream; returns its base URL."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "naive_proxy.py"), "--port", str(port)]
    argv += ["--issuer", issuer]
    for name, up_port in upstream_ports.items():
        argv += ["--route", f"/{name}/mcp={direct_url(up_port)}"]
    procs.start("naive", argv)
    return f"http://127.0.0.1:{port}"


def start_proxies(
    args: argparse.Namespace, procs: Processes, upstream_ports: dict[str, int]
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """The proxies this run measures: returns (proxy -> upstream name -> URL, what to record).

    Every proxy that authenticates gets a token per route; each route is checked with one
    `tools/call` before anything is measured."""
    authenticates = {"nginx": False, "naive": True, "gateway": not args.anonymous}
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
        bases["naive"] = (start_naive_proxy(procs, compared, issuer), COMPARED_UPSTREAMS)
    if args.gateway_cmd:
        gateway_issuer = issuer if authenticates["gateway"] else None
        base, info["gateway"] = start_gateway(
            procs, args.gateway_cmd, upstream_ports, gateway_issuer
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
        help=f"no nginx and naive-proxy rows (otherwise run for {', '.join(COMPARED_UPSTREAMS)})",
    )
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
        rows, proxies_info = run_benchmark(args, procs)
    except BenchError as exc:
        print(f"\nBENCHMARK ABORTED: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()

    print_table(rows)
    compared = comparison(rows)
    print_comparison(compared)
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
            "gateway": proxies_info["gateway"],
            "nginx": proxies_info.get("nginx"),
            "compared_upstreams": list(COMPARED_UPSTREAMS) if args.compare else [],
            "skipped": proxies_info["skipped"],
        },
        "rows": [row.summary() for row in rows],
        "comparison": compared,
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
