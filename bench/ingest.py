"""Ingest benchmark: the real `oncall-bot serve` fed Alertmanager webhooks on 127.0.0.1.

Run from the repository root:

    .venv/bin/python bench/ingest.py                 # full run, SQLite and PostgreSQL
    .venv/bin/python bench/ingest.py --quick         # smoke run, about a minute
    .venv/bin/python bench/ingest.py --backends sqlite

Measures (see bench/README.md for the workload and how to read the table):
  1. alerts/s accepted (202 = committed) for Alertmanager batches of 100 alerts,
  2. single-alert requests/s,
  3. webhook-to-page latency (PagerDuty stand-in receive time - webhook send time)
     at a paced, open-loop 50 new critical alerts/s,
  4. the bot's RSS (VmRSS) over the run,
  5. the same alerts posted to a real Prometheus Alertmanager (POST /api/v2/alerts).

Every load loop is bounded by a count and a deadline; all traffic stays on 127.0.0.1.
The bench always exits 0 after printing its table, unless setup fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import statements  # noqa: E402

from tests.harness import BotProcess, free_port, wait_for  # noqa: E402

TOKEN = "bench-webhook-token"
ROUTING_KEY = "B3NCHR0UT1NGKEY0123456789ABCDEFG"  # 32 characters, like a real integration key
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- workload -------------------------------------------------------------------
# Per 100 alerts (a batch in phase 1, 100 consecutive requests in phase 2):
REPEATS_PER_100 = 90  # re-sends of an alert already firing in an open incident (cheap path)
JOINS_PER_100 = 5     # a new instance (new fingerprint) joining an open incident (Slack reply)
NEW_GROUPS_PER_100 = 5  # an alert of a new alertname/model group: opens an incident (Slack post)
BASE_ALERTNAMES = ("ModelErrorRateHigh", "ModelLatencyHigh", "PredictionDrift",
                   "FeatureNullRateHigh", "ThroughputDrop")
BASE_MODELS = 20        # 5 alertnames x 20 models = 100 base groups
SEED_INSTANCES = 10     # ...each seeded with 10 firing instances = 1,000 alerts before phase 1
BATCH = 100
STARTS_AT = "2026-05-04T09:00:00.000Z"
AM_ENDS_AT = "2099-01-01T00:00:00.000Z"  # Alertmanager API: firing until then


@dataclass
class AlertSpec:
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]


class Universe:
    """Deterministic alert identities: groups (alertname, model) and their instances."""

    def __init__(self, severity: str = "warning") -> None:
        self.severity = severity
        self.counter = 0
        self.pool: list[AlertSpec] = []  # firing alerts that may be repeated
        self.cursor = 0
        self.groups: list[tuple[str, str]] = [(a, f"m{m:03d}") for a in BASE_ALERTNAMES
                                              for m in range(BASE_MODELS)]
        self.instances: dict[tuple[str, str], int] = defaultdict(int)
        self.join_cursor = 0
        self.new_groups = 0

    def _alert(self, group: tuple[str, str]) -> AlertSpec:
        alertname, model = group
        n = self.instances[group]
        self.instances[group] += 1
        self.counter += 1
        labels = {"alertname": alertname, "model": model, "environment": "production",
                  "job": f"{model}-scorer", "instance": f"10.{n // 65536 % 256}.{n // 256 % 256}."
                  f"{n % 256}:8080", "severity": self.severity}
        annotations = {"summary": f"{alertname} for model {model} on {labels['instance']}",
                       "description": f"bench alert #{self.counter}",
                       "runbook_url": "https://runbooks.example.com/ml/bench"}
        spec = AlertSpec(f"{self.counter:016x}", labels, annotations)
        self.pool.append(spec)
        return spec

    def seed(self) -> list[AlertSpec]:
        return [self._alert(g) for g in self.groups for _ in range(SEED_INSTANCES)]

    def repeat(self) -> AlertSpec:
        spec = self.pool[self.cursor % len(self.pool)]
        self.cursor += 1
        return spec

    def join(self) -> AlertSpec:
        group = self.groups[self.join_cursor % len(self.groups)]
        self.join_cursor += 1
        return self._alert(group)

    def new_group(self) -> AlertSpec:
        self.new_groups += 1
        group = (BASE_ALERTNAMES[self.new_groups % len(BASE_ALERTNAMES)],
                 f"new{self.new_groups:06d}")
        self.groups.append(group)
        return self._alert(group)

    def mixed(self, n: int) -> list[AlertSpec]:
        """n alerts in the documented mix; distinct fingerprints when n <= pool size."""
        out = []
        for i in range(n):
            slot = i % 100
            if slot % (100 // NEW_GROUPS_PER_100) == 0:
                out.append(self.new_group())
            elif slot % (100 // JOINS_PER_100) == 100 // JOINS_PER_100 // 2:
                out.append(self.join())
            else:
                out.append(self.repeat())
        return out


def webhook_body(alerts: list[AlertSpec]) -> bytes:
    """An Alertmanager webhook (v4) notification carrying these alerts."""
    return json.dumps({
        "receiver": "ml-oncall-bot", "status": "firing",
        "alerts": [{"status": "firing", "labels": a.labels, "annotations": a.annotations,
                    "startsAt": STARTS_AT, "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "https://prometheus.example.com/graph?g0.expr=up",
                    "fingerprint": a.fingerprint} for a in alerts],
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "https://alertmanager.example.com", "version": "4",
        "groupKey": "{}:{}", "truncatedAlerts": 0,
    }, separators=(",", ":")).encode()


def am_api_body(alerts: list[AlertSpec]) -> bytes:
    """The same alerts for Alertmanager's own API (POST /api/v2/alerts)."""
    return json.dumps([{"labels": a.labels, "annotations": a.annotations, "startsAt": STARTS_AT,
                        "endsAt": AM_ENDS_AT,
                        "generatorURL": "https://prometheus.example.com/graph?g0.expr=up"}
                       for a in alerts], separators=(",", ":")).encode()


@dataclass
class Workload:
    seed: list[list[AlertSpec]]
    batches: list[list[AlertSpec]]
    singles: list[list[AlertSpec]]
    pages: list[list[AlertSpec]]


def build_workload(batches: int, singles: int, pages: int) -> Workload:
    universe = Universe("warning")
    seeded = universe.seed()
    seed = [seeded[i:i + BATCH] for i in range(0, len(seeded), BATCH)]
    batch_list = [universe.mixed(BATCH) for _ in range(batches)]
    flat = universe.mixed(singles)
    page_universe = Universe("critical")
    page_alerts = []
    for i in range(pages):  # each one a new group, so each opens an L1 incident and pages
        page_universe.groups = [("BenchPageNewIncident", f"page{i:05d}")]
        page_alerts.append([page_universe.join()])
    return Workload(seed, batch_list, [[a] for a in flat], page_alerts)


# --- HTTP clients ---------------------------------------------------------------------
class HttpxPoster:
    """httpx.AsyncClient with keep-alive, at most `connections` open."""

    def __init__(self, base_url: str, headers: dict[str, str], connections: int) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=30,
            limits=httpx.Limits(max_connections=connections,
                                max_keepalive_connections=connections))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        response = await self.client.post(path, content=body)
        return response.status_code, response.content

    async def close(self) -> None:
        await self.client.aclose()


class RawPoster:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (leaner than httpx).

    A connection idle for longer than IDLE_SECONDS is not reused: uvicorn closes
    keep-alive connections after 5 idle seconds, and a request sent on one it is
    closing would fail (IncompleteReadError) through no fault of the server."""

    IDLE_SECONDS = 4.0

    def __init__(self, base_url: str, headers: dict[str, str], connections: int) -> None:
        hostport = base_url.split("://", 1)[1].rstrip("/")
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.head = "".join(f"{k}: {v}\r\n" for k, v in
                            {"Host": hostport, **headers}.items()).encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.slots = asyncio.Semaphore(connections)
        self.open: list[asyncio.StreamWriter] = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self.slots:
            while self.idle and time.monotonic() - self.idle[-1][2] > self.IDLE_SECONDS:
                self.idle.pop()[1].close()
            if self.idle:
                reader, writer, _ = self.idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self.open.append(writer)
            try:
                writer.write(b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
                             % (path.encode(), self.head, len(body), body))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                lines = head.split(b"\r\n")
                status = int(lines[0].split()[1])
                fields = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    fields[name.strip().lower()] = value.strip()
                if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                    content = b""
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        content += chunk[:-2]
                else:
                    content = await reader.readexactly(int(fields.get(b"content-length", b"0")))
            except BaseException:
                writer.close()
                raise
            if fields.get(b"connection", b"").lower() == b"close":
                writer.close()
            else:
                self.idle.append((reader, writer, time.monotonic()))
            return status, content

    async def close(self) -> None:
        for writer in self.open:
            writer.close()


def make_poster(kind: str, base_url: str, headers: dict[str, str], connections: int):
    cls = RawPoster if kind == "raw" else HttpxPoster
    return cls(base_url, {**headers, "Content-Type": "application/json"}, connections)


# --- process accounting ------------------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    """CPU used during a phase by the target, the load generator and the stand-ins."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def __enter__(self) -> CpuMeter:
        self.wall = time.perf_counter()
        self.start = {name: self._cpu(pid) for name, pid in self.pids.items()}
        return self

    @staticmethod
    def _cpu(pid: int) -> float:
        if pid == os.getpid():
            t = os.times()
            return t.user + t.system
        return cpu_seconds(pid)

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall
        self.share = {name: (self._cpu(pid) - self.start[name]) / wall
                      for name, pid in self.pids.items()}


# --- load ---------------------------------------------------------------------------------
@dataclass
class LoadResult:
    requests: int = 0
    accepted_requests: int = 0
    accepted_alerts: int = 0
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    stopped_early: bool = False
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def alerts_per_s(self) -> float:
        return self.accepted_alerts / self.seconds if self.seconds else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.accepted_requests / self.seconds if self.seconds else 0.0


async def closed_loop(poster, path: str, bodies: list[tuple[bytes, int]], *, concurrency: int,
                      deadline: float, ok: int,
                      progress: Callable[[int], None] | None = None) -> LoadResult:
    """`concurrency` clients each send the next body as soon as their last one is answered."""
    result = LoadResult()
    work = iter(bodies)
    stop_at = time.monotonic() + deadline

    async def client() -> None:
        for body, count in work:
            if time.monotonic() > stop_at:
                result.stopped_early = True
                return
            started = time.perf_counter()
            try:
                status, _ = await poster.post(path, body)
            except Exception as exc:  # noqa: BLE001 - counted and shown in the table
                status = type(exc).__name__
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1
            result.statuses[status] += 1
            if status == ok:
                result.accepted_requests += 1
                result.accepted_alerts += count
                if progress is not None:
                    progress(count)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class PacedResult:
    sent: int = 0
    send_times: dict[int, float] = field(default_factory=dict)  # incident id -> wall send time
    statuses: Counter = field(default_factory=Counter)
    response_latencies: list[float] = field(default_factory=list)
    max_lag: float = 0.0  # how late the open-loop scheduler started a request


async def open_loop(poster, path: str, bodies: list[bytes], *, rate: float) -> PacedResult:
    """Start request i at t0 + i/rate whatever happened to the earlier ones."""
    result = PacedResult()
    loop = asyncio.get_running_loop()

    async def send(body: bytes) -> None:
        sent_wall, started = time.time(), time.perf_counter()
        try:
            status, content = await poster.post(path, body)
        except Exception as exc:  # noqa: BLE001
            status, content = type(exc).__name__, b""
        result.response_latencies.append(time.perf_counter() - started)
        result.statuses[status] += 1
        if status == 202:
            for incident in json.loads(content).get("incidents_opened", []):
                result.send_times[incident] = sent_wall

    tasks = []
    t0 = loop.time() + 0.1
    for i, body in enumerate(bodies):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        result.max_lag = max(result.max_lag, -delay)
        tasks.append(asyncio.create_task(send(body)))
        result.sent += 1
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    return result


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# --- stand-ins in their own process (so their threads do not share our GIL) -----------------
def _standins_main(conn, ca_dir: str) -> None:
    from tests.standins.pagerduty import PagerDutyStandIn
    from tests.standins.slack import SlackStandIn
    from tests.standins.tls import TestCA

    ca = TestCA()
    bundle = ca.ca_bundle_path(ca_dir)
    with SlackStandIn() as slack, PagerDutyStandIn(ca) as pagerduty:
        conn.send({"slack_token": slack.token, "slack_url": slack.base_url,
                   "pd_events_url": pagerduty.events_url, "pd_api_url": pagerduty.api_url,
                   "pd_api_token": pagerduty.api_token, "ca_bundle": bundle})
        while True:
            if not conn.poll(600):
                return  # the bench went away
            command = conn.recv()
            if command == "triggers":
                conn.send([(e["event"]["payload"].get("custom_details", {}).get("incident"),
                            e["time"]) for e in pagerduty.triggers()])
            elif command == "counts":
                with pagerduty.lock, slack.lock:
                    conn.send({"pd_events": len(pagerduty.events),
                               "pd_refused": len(pagerduty.failed_requests),
                               "slack_calls": len(slack.requests),
                               "slack_refused": len(slack.failed_requests),
                               "violations": pagerduty.violations[:3] + slack.violations[:3],
                               "violation_count": len(pagerduty.violations)
                               + len(slack.violations)})
            else:
                conn.send(None)
                return


class StandIns:
    def __init__(self, directory: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_standins_main, args=(child, str(directory)),
                                       daemon=True)
        self.process.start()
        if not self.conn.poll(60):
            raise RuntimeError("the Slack/PagerDuty stand-ins did not start")
        self.info = self.conn.recv()

    def ask(self, command: str) -> Any:
        self.conn.send(command)
        if not self.conn.poll(60):
            raise RuntimeError(f"the stand-ins did not answer {command!r}")
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.ask("stop")
        except (RuntimeError, OSError, EOFError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


# --- profiling (optional, py-spy) ---------------------------------------------------------------
class Profiler:
    """`py-spy record` of the bot during a phase; summarised into the report."""

    def __init__(self, directory: Path | None, pid: int, backend: str) -> None:
        self.directory, self.pid, self.backend = directory, pid, backend
        self.binary = (shutil.which("py-spy") or
                       (str(Path(sys.executable).with_name("py-spy"))
                        if Path(sys.executable).with_name("py-spy").exists() else None))
        self.summaries: list[str] = []

    def start(self, phase: str) -> subprocess.Popen | None:
        if self.directory is None or self.binary is None:
            return None
        out = self.directory / f"{self.backend}-{phase}.txt"
        return subprocess.Popen([self.binary, "record", "--pid", str(self.pid), "--rate", "100",
                                 "--format", "raw", "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, process: subprocess.Popen | None, phase: str) -> None:
        if process is None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        out = self.directory / f"{self.backend}-{phase}.txt"
        if out.exists():
            self.summaries.append(summarise_profile(out, f"{self.backend} / {phase}"))


def summarise_profile(path: Path, title: str, top: int = 14) -> str:
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return f"profile {title}: no samples ({path})"
    lines = [f"profile {title}: {total} samples ({path})", "  self%  function"]
    lines += [f"  {100 * n / total:5.1f}  {frame}" for frame, n in own.most_common(top)]
    lines += ["  incl%  function (inclusive)"]
    lines += [f"  {100 * n / total:5.1f}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


# --- one target (the bot on a backend, or Alertmanager) ------------------------------------------
@dataclass
class TargetReport:
    name: str
    note: str = ""
    batched: LoadResult | None = None
    singles: LoadResult | None = None
    drain_seconds: float | None = None
    drain_pending: int | None = None
    page_latency: list[float] = field(default_factory=list)
    pages_sent: int = 0
    pages_arrived: int = 0
    page_statuses: Counter = field(default_factory=Counter)
    page_response: list[float] = field(default_factory=list)
    page_sched_lag: float = 0.0
    rss: list[tuple[str, int, float | None, int | None]] = field(default_factory=list)
    standin_counts: dict[str, Any] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    log_summary: list[str] = field(default_factory=list)
    statements: dict[str, dict] = field(default_factory=dict)  # phase -> counts (--statements)


class RssSampler:
    """Samples the target's RSS each time another `every` alerts were accepted."""

    def __init__(self, report: TargetReport, pid: int, every: int,
                 count_incidents: Callable[[], int | None]) -> None:
        self.report, self.pid, self.every = report, pid, every
        self.count_incidents = count_incidents
        self.alerts = 0
        self.next_mark = every

    def sample(self, label: str) -> None:
        self.report.rss.append((label, self.alerts, rss_mb(self.pid), self.count_incidents()))

    def progress(self, count: int) -> None:
        self.alerts += count
        if self.alerts >= self.next_mark:
            self.next_mark += self.every
            self.sample("during load")


def bodies_for(groups: list[list[AlertSpec]], render) -> list[tuple[bytes, int]]:
    return [(render(g), len(g)) for g in groups]


async def drive_throughput(report: TargetReport, poster, path: str, ok: int,
                           work: Workload, args, pids: dict[str, int], sampler: RssSampler,
                           render, profiler: Profiler | None,
                           mark: Callable[[str], None] = lambda phase: None) -> None:
    """`mark(phase)` is called as each phase ends (and before the first)."""
    seed = bodies_for(work.seed, render)
    result = await closed_loop(poster, path, seed, concurrency=1, deadline=args.phase_seconds,
                               ok=ok, progress=sampler.progress)
    if result.accepted_requests != len(seed):
        raise RuntimeError(f"{report.name}: seeding failed: {dict(result.statuses)}")
    sampler.sample("after seed (1,000 alerts)")
    mark("seed")

    batches = bodies_for(work.batches, render)
    spy = profiler.start("batched") if profiler else None
    with CpuMeter(pids) as meter:
        report.batched = await closed_loop(poster, path, batches, concurrency=args.concurrency,
                                           deadline=args.phase_seconds, ok=ok,
                                           progress=sampler.progress)
    if profiler:
        profiler.stop(spy, "batched")
    report.batched.cpu = meter.share
    sampler.sample("after batched phase")
    mark("batched")

    singles = bodies_for(work.singles, render)
    spy = profiler.start("single") if profiler else None
    with CpuMeter(pids) as meter:
        report.singles = await closed_loop(poster, path, singles, concurrency=args.concurrency,
                                           deadline=args.phase_seconds, ok=ok,
                                           progress=sampler.progress)
    if profiler:
        profiler.stop(spy, "single")
    report.singles.cpu = meter.share
    sampler.sample("after single-alert phase")
    mark("single")


def summarise_log(path: Path, top: int = 6) -> list[str]:
    """The most frequent WARNING/ERROR lines of a bot log, numbers and ids blurred."""
    import re

    if not path.exists():
        return []
    seen: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):  # the bot's JSON log lines (LOG_FORMAT=json, the default here)
            try:
                record = json.loads(line)
            except ValueError:
                record = {}
            if record.get("level") in ("WARNING", "ERROR"):
                message = f"{record['level']} {record.get('logger')}: {record.get('message')}"
                seen[re.sub(r"\d+(\.\d+)?", "N", message)[:160]] += 1
            continue
        if " WARNING " in line or " ERROR " in line or line.startswith(("Traceback", "sqlalchemy",
                                                                         "psycopg")):
            message = line.split(" ", 2)[-1] if line[:4].isdigit() else line
            seen[re.sub(r"\d+(\.\d+)?", "N", message)[:160]] += 1
    return [f"{n:6d}x  {message}" for message, n in seen.most_common(top)]


def create_pg_database() -> tuple[str, str]:
    import psycopg

    name = f"oncall_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{PG_SERVER}/{name}"


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


async def bench_bot(backend: str, work: Workload, args, tmp: Path) -> TargetReport:
    report = TargetReport(backend)
    pg_name = None
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp / 'bench-oncall.db'}"
    else:
        problem = pg_reachable()
        if problem:
            report.note = f"skipped: PostgreSQL at {PG_SERVER} unreachable ({problem})"
            return report
        pg_name, database_url = create_pg_database()
    standins = StandIns(tmp)
    info = standins.info
    env = {
        "DATABASE_URL": database_url,
        "SLACK_BOT_TOKEN": info["slack_token"],
        "SLACK_API_URL": info["slack_url"],
        "SLACK_ALERT_CHANNEL": "#ml-alerts",
        "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "PAGERDUTY_EVENTS_URL": info["pd_events_url"],
        "PAGERDUTY_API_URL": info["pd_api_url"],
        "PAGERDUTY_API_TOKEN": info["pd_api_token"],
        "ALERT_WEBHOOK_TOKEN": TOKEN,
        "ONCALL_CA_BUNDLE": info["ca_bundle"],
        # The bot's own PagerDuty limit (default 120/min, PagerDuty's real per-key limit)
        # would hold 50 pages/s back for minutes: it is turned off for this bench only.
        "PAGERDUTY_EVENTS_PER_MINUTE": "0",
    }
    counting = args.statements and backend == "postgresql"
    if counting:
        statements.install(env, tmp, ROOT)
    counted: dict = {}

    def mark(phase: str) -> None:
        """Counts of the phase that just ended (the outbox's work between phases included)."""
        if not counting:
            return
        now = statements.snapshot(env)
        if phase != "seed":
            report.statements[phase] = statements.delta(counted, now)
        counted.clear()
        counted.update(now)

    bot = BotProcess(env, log_path=tmp / f"bot-{backend}.log", token=TOKEN)
    try:
        bot.start()
        pid = bot.process.pid
        print(f"[{backend}] bot pid {pid} on {bot.url}, log {bot.log_path}", flush=True)

        def count_incidents() -> int | None:
            try:
                return bot.rows("SELECT count(*) FROM incident")[0][0]
            except Exception:  # noqa: BLE001
                return None

        sampler = RssSampler(report, pid, args.rss_every, count_incidents)
        sampler.sample("started, idle")
        pids = {"bot": pid, "loadgen": os.getpid(), "standins": standins.process.pid}
        profiler = Profiler(args.profile, pid, backend) if args.profile else None
        poster = make_poster(args.client, bot.url, {"Authorization": f"Bearer {TOKEN}"},
                             args.concurrency)
        try:
            await drive_throughput(report, poster, "/webhooks/alertmanager", 202, work, args,
                                   pids, sampler, webhook_body, profiler, mark)
        finally:
            await poster.close()

        # Let the outbox catch up (Slack posts owed by phases 1-2) before measuring pages.
        started = time.monotonic()
        mark("seed")  # the drain is counted with neither phase
        try:
            await asyncio.to_thread(wait_for, bot.outbox_settled, timeout=args.drain_seconds,
                                    interval=0.25, what="the outbox to drain")
        except AssertionError:
            report.drain_pending = len(bot.rows(
                "SELECT id FROM delivery WHERE state = 'pending'"))
        report.drain_seconds = time.monotonic() - started
        sampler.sample("after outbox drained")

        # Phase 3: paced new critical alerts; each opens an L1 incident that pages.
        poster = make_poster(args.client, bot.url, {"Authorization": f"Bearer {TOKEN}"}, 64)
        spy = profiler.start("paging") if profiler else None
        try:
            paced = await open_loop(poster, "/webhooks/alertmanager",
                                    [webhook_body(g) for g in work.pages], rate=args.page_rate)
        finally:
            await poster.close()
        report.pages_sent = paced.sent
        report.page_statuses = paced.statuses
        report.page_response = paced.response_latencies
        report.page_sched_lag = paced.max_lag
        expected = set(paced.send_times)

        def arrived() -> list[tuple[int, float]] | None:
            got = [(i, t) for i, t in standins.ask("triggers") if i in expected]
            return got if len(got) >= len(expected) else None

        try:
            triggers = await asyncio.to_thread(wait_for, arrived, timeout=60, interval=0.2,
                                               what="the pages")
        except AssertionError:
            triggers = [(i, t) for i, t in standins.ask("triggers") if i in expected]
        if profiler:
            profiler.stop(spy, "paging")
            report.profiles = profiler.summaries
        first_page: dict[int, float] = {}
        for incident, at in triggers:
            first_page.setdefault(incident, at)
        report.pages_arrived = len(first_page)
        report.page_latency = [at - paced.send_times[i] for i, at in first_page.items()]
        sampler.sample("after paging phase")
        mark("paging")
        report.standin_counts = standins.ask("counts")
    finally:
        bot.stop()
        report.log_summary = summarise_log(bot.log_path)
        standins.stop()
        if pg_name:
            drop_pg_database(pg_name)
    return report


async def bench_alertmanager(work: Workload, args, tmp: Path) -> TargetReport:
    report = TargetReport("alertmanager")
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        report.note = ("skipped: prometheus-alertmanager not installed "
                       "(apt-get install prometheus-alertmanager)")
        return report
    directory = tmp / "alertmanager"
    (directory / "data").mkdir(parents=True)
    config = directory / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    log = (directory / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: see {directory / 'alertmanager.log'}")
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=30, what="alertmanager to start")
        version = subprocess.run([binary, "--version"], capture_output=True, text=True)
        first = (version.stdout or version.stderr).strip().splitlines()
        report.note = first[0] if first else ""
        print(f"[alertmanager] pid {process.pid} on {url}", flush=True)
        sampler = RssSampler(report, process.pid, args.rss_every, lambda: None)
        sampler.sample("started, idle")
        poster = make_poster(args.client, url, {}, args.concurrency)
        try:
            await drive_throughput(report, poster, "/api/v2/alerts", 200, work, args,
                                   {"alertmanager": process.pid, "loadgen": os.getpid()},
                                   sampler, am_api_body, None)
        finally:
            await poster.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    return report


# --- the table -----------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f} ms"


def statuses_text(statuses: Counter, ok: int) -> str:
    bad = {k: v for k, v in statuses.items() if k != ok}
    return "none" if not bad else ", ".join(f"{k}x{v}" for k, v in sorted(bad.items(), key=str))


def print_report(reports: list[TargetReport], args, work: Workload, total_seconds: float) -> None:
    bots = [r for r in reports if r.name != "alertmanager"]
    am = next((r for r in reports if r.name == "alertmanager"), None)
    columns = [r.name for r in reports]
    rows: list[tuple[str, list[str], str]] = []

    def row(label: str, cells: dict[str, str], target: str = "") -> None:
        rows.append((label, [cells.get(c, "") for c in columns], target))

    def throughput(attr: str, metric: str) -> dict[str, str]:
        cells = {}
        for r in reports:
            result = getattr(r, attr)
            if result is None:
                cells[r.name] = "skipped" if r.note.startswith("skipped") else "-"
                continue
            value = result.alerts_per_s if metric == "alerts" else result.requests_per_s
            cells[r.name] = fmt(value) + ("*" if result.stopped_early else "")
        return cells

    n_batched = len(work.batches) * BATCH
    row(f"1. batched: alerts/s (100/request, {n_batched:,} alerts)",
        throughput("batched", "alerts"), ">= 5,000 (sqlite)")
    row("   batched: requests/s", throughput("batched", "requests"))
    row("   batched: request p50 / p99",
        {r.name: f"{ms(percentile(r.batched.latencies, 50))} / "
                 f"{ms(percentile(r.batched.latencies, 99))}" for r in reports if r.batched})
    row("   batched: non-2xx / errors",
        {r.name: statuses_text(r.batched.statuses, 200 if r is am else 202)
         for r in reports if r.batched})
    row("   batched: CPU target / loadgen / stand-ins",
        {r.name: " / ".join(f"{100 * v:.0f}%" for v in r.batched.cpu.values())
         for r in reports if r.batched})
    row(f"2. single: requests/s (1 alert each, {len(work.singles):,} requests)",
        throughput("singles", "requests"), ">= 1,000 (sqlite)")
    row("   single: request p50 / p99",
        {r.name: f"{ms(percentile(r.singles.latencies, 50))} / "
                 f"{ms(percentile(r.singles.latencies, 99))}" for r in reports if r.singles})
    row("   single: non-2xx / errors",
        {r.name: statuses_text(r.singles.statuses, 200 if r is am else 202)
         for r in reports if r.singles})
    row("   single: CPU target / loadgen / stand-ins",
        {r.name: " / ".join(f"{100 * v:.0f}%" for v in r.singles.cpu.values())
         for r in reports if r.singles})
    if am and am.batched:
        for attr, metric, label in (("batched", "alerts", "bot/AM ratio, batched alerts/s"),
                                    ("singles", "requests", "bot/AM ratio, single req/s")):
            base = getattr(am, attr)
            base_v = base.alerts_per_s if metric == "alerts" else base.requests_per_s
            cells = {}
            for r in bots:
                mine = getattr(r, attr)
                if mine and base_v:
                    v = mine.alerts_per_s if metric == "alerts" else mine.requests_per_s
                    cells[r.name] = f"{v / base_v:.2f}x"
            row(f"   {label}", cells)
    row("   outbox drain after phases 1-2",
        {r.name: (f"{r.drain_seconds:.1f} s" if r.drain_pending is None
                  else f"NOT drained in {r.drain_seconds:.0f} s ({r.drain_pending} pending)")
         for r in bots if r.drain_seconds is not None})
    row(f"3. page latency p50 ({args.page_rate:g} alerts/s open loop)",
        {r.name: ms(percentile(r.page_latency, 50)) for r in bots if r.pages_sent})
    row("   page latency p99",
        {r.name: ms(percentile(r.page_latency, 99)) for r in bots if r.pages_sent},
        "<= 100 ms")
    row("   page latency max",
        {r.name: ms(max(r.page_latency) if r.page_latency else None)
         for r in bots if r.pages_sent})
    row("   pages arrived / alerts sent",
        {r.name: f"{r.pages_arrived} / {r.pages_sent}"
                 + ("" if r.pages_arrived == r.pages_sent else "  MISMATCH")
         for r in bots if r.pages_sent}, "equal")
    row("   webhook 202 p50 / p99 (paced)",
        {r.name: f"{ms(percentile(r.page_response, 50))} / "
                 f"{ms(percentile(r.page_response, 99))}" for r in bots if r.pages_sent})
    row("   paced: non-202 / scheduler max lag",
        {r.name: f"{statuses_text(r.page_statuses, 202)} / {ms(r.page_sched_lag)}"
         for r in bots if r.pages_sent})

    def rss_cell(r: TargetReport) -> str:
        values = [v for _, _, v, _ in r.rss if v is not None]
        if not values:
            return "-"
        after_seed = next((v for label, _, v, _ in r.rss if label.startswith("after seed")),
                          values[0])
        return f"{values[0]:.0f} -> {values[-1]:.0f} MB (max {max(values):.0f}, " \
               f"+{values[-1] - after_seed:.0f} after seed)"
    row("4. RSS idle -> end", {r.name: rss_cell(r) for r in reports if r.rss}, "flat")

    label_width = max(len(r[0]) for r in rows)
    widths = [max(len(c), *(len(r[1][i]) for r in rows)) for i, c in enumerate(columns)]
    header = f"{'metric'.ljust(label_width)} | " + " | ".join(
        c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " | target"
    print()
    print("=" * len(header))
    print(f"oncall-bot ingest bench  ({'quick' if args.quick else 'full'} run, "
          f"client={args.client}, concurrency={args.concurrency}, "
          f"{os.cpu_count()} CPUs, {total_seconds:.0f} s)")
    print("=" * len(header))
    print(header)
    print("-" * len(header))
    for label, cells, target in rows:
        print(f"{label.ljust(label_width)} | "
              + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
              + f" | {target}")
    print("-" * len(header))
    print("* = phase stopped at its deadline (--phase-seconds); rate is over what was sent.")

    for r in reports:
        if r.note:
            print(f"{r.name}: {r.note}")
    print()
    print("RSS series (VmRSS of the target process; alerts = accepted so far, incl. seed):")
    for r in reports:
        if not r.rss:
            continue
        print(f"  {r.name}:")
        for label, alerts, value, incidents in r.rss:
            extra = f", {incidents:,} incidents" if incidents is not None else ""
            print(f"    {fmt(value, '8.1f')} MB  after {alerts:>7,} alerts{extra}  ({label})")
    for r in bots:
        if r.standin_counts:
            c = r.standin_counts
            print(f"stand-ins ({r.name}): PagerDuty events {c['pd_events']} "
                  f"(refused {c['pd_refused']}), Slack calls {c['slack_calls']} "
                  f"(refused {c['slack_refused']}), API violations {c['violation_count']}"
                  + (f": {c['violations']}" if c["violations"] else ""))
    for r in bots:
        if r.log_summary:
            print(f"bot log ({r.name}), most frequent warnings/errors:")
            for line in r.log_summary:
                print(f"  {line}")
    for r in reports:
        for summary in r.profiles:
            print()
            print(summary)
    print()
    print("Notes:")
    print(f"- Mix per 100 alerts: {REPEATS_PER_100} repeats of alerts already firing in open "
          f"incidents, {JOINS_PER_100} new instances joining open incidents, "
          f"{NEW_GROUPS_PER_100} alerts of new alertname/model groups (each opens an incident);"
          " phases 1-2 use severity=warning (L0: Slack, no page). Seeded first (untimed): "
          f"{len(BASE_ALERTNAMES) * BASE_MODELS} groups x {SEED_INSTANCES} instances.")
    print(f"- Phases 1-2 keep {args.concurrency} requests in flight (closed loop). The bot commits "
          "the requests that arrive during a commit together (one fsync), so its rate grows "
          "with the requests in flight; Alertmanager sends every alert group's notification "
          "on its own, so a storm keeps many in flight.")
    print("- The bot answers 202 only after the alerts are committed (SQLite: WAL, "
          "synchronous=FULL). Alertmanager keeps alerts in memory only and makes nothing "
          "durable before answering 200: the ratio compares unequal work.")
    print("- PAGERDUTY_EVENTS_PER_MINUTE=0 for this bench: the bot's own limit (default 120/min,"
          " PagerDuty's real per-key limit) is off, since 50 pages/s is far above it.")
    print("- The load generator, the stand-ins (own process) and the target share this "
          f"machine's {os.cpu_count()} CPUs; the CPU row shows who used what (100% = 1 core).")
    print("- Page latency = PagerDuty stand-in receive time (after its TLS handshake and body "
          "read) - time the webhook request was sent; both wall clocks of this machine.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run in ~1 min")
    p.add_argument("--backends", default="sqlite,postgresql",
                   help="comma-separated: sqlite,postgresql (default both)")
    p.add_argument("--no-alertmanager", action="store_true", help="skip the Alertmanager peer")
    p.add_argument("--batches", type=int, help="phase 1: batches of 100 (default 300; quick 30)")
    p.add_argument("--singles", type=int, help="phase 2: requests (default 6000; quick 600)")
    p.add_argument("--page-rate", type=float, default=50.0, help="phase 3 alerts/s (default 50)")
    p.add_argument("--page-seconds", type=float, help="phase 3 duration (default 10; quick 3)")
    p.add_argument("--concurrency", type=int, default=32,
                   help="requests in flight in phases 1-2 (default 32)")
    p.add_argument("--client", choices=("httpx", "raw"), default="raw",
                   help="load generator HTTP client (default raw: a minimal keep-alive client "
                        "that leaves the CPU to the target; httpx: httpx.AsyncClient)")
    p.add_argument("--phase-seconds", type=float,
                   help="deadline per load phase (default 300; quick 60)")
    p.add_argument("--drain-seconds", type=float,
                   help="max wait for the outbox before phase 3 (default 300; quick 60)")
    p.add_argument("--rss-every", type=int, help="RSS sample every N alerts (default 10000)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="record the bot with py-spy during each phase into DIR and summarise")
    p.add_argument("--statements", action="store_true",
                   help="PostgreSQL: count the bot's statements and round trips per "
                        "transaction in each phase (hooks in the bot's psycopg; they cost "
                        "some CPU, so take rates from a run without them)")
    args = p.parse_args(argv)
    quick = args.quick
    args.batches = args.batches or (30 if quick else 300)
    args.singles = args.singles or (600 if quick else 6000)
    args.page_seconds = args.page_seconds or (3 if quick else 10)
    args.phase_seconds = args.phase_seconds or (60 if quick else 300)
    args.drain_seconds = args.drain_seconds or (60 if quick else 300)
    args.rss_every = args.rss_every or (1000 if quick else 10000)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgresql"}
    if unknown:
        p.error(f"unknown backends: {', '.join(sorted(unknown))}")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


async def main_async(args) -> int:
    pages = max(1, round(args.page_rate * args.page_seconds))
    work = build_workload(args.batches, args.singles, pages)
    reports: list[TargetReport] = []
    started = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory(prefix="oncall-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in args.backends:
            print(f"[{backend}] running ...", flush=True)
            (tmp / backend).mkdir()
            try:
                reports.append(await bench_bot(backend, work, args, tmp / backend))
            except Exception as exc:  # noqa: BLE001 - setup failure: report and go on
                failed = True
                log = tmp / backend / f"bot-{backend}.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                reports.append(TargetReport(backend, note=f"FAILED: {type(exc).__name__}: {exc}"))
                print(f"[{backend}] failed: {exc}\n{tail}", file=sys.stderr, flush=True)
        if not args.no_alertmanager:
            print("[alertmanager] running ...", flush=True)
            try:
                reports.append(await bench_alertmanager(work, args, tmp))
            except Exception as exc:  # noqa: BLE001
                failed = True
                reports.append(TargetReport("alertmanager",
                                            note=f"FAILED: {type(exc).__name__}: {exc}"))
        print_report(reports, args, work, time.monotonic() - started)
        for report in reports:
            for phase, counts in report.statements.items():
                statements.report(counts, f"{report.name}, {phase} phase")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
