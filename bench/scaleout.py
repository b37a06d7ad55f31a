"""Scale-out benchmark: 1, 2 and 3 `oncall-bot serve` replicas behind HAProxy on one
PostgreSQL database, fed bench/ingest.py's workload through the balancer.

Run from the repository root:

    .venv/bin/python bench/scaleout.py                  # replicas 1, 2, 3
    .venv/bin/python bench/scaleout.py --replicas 1,2 --batches 50 --singles 1000
    .venv/bin/python bench/scaleout.py --statements     # + statements per commit (1 replica)

Prints, per replica count: batched alerts/s, single requests/s, webhook-to-page p50/p99,
and where the CPU went during the batched phase (bot replicas, PostgreSQL, HAProxy, the
load generator, the stand-ins). See bench/README.md ("Scale-out") for how to read it.
`--statements` runs one more replica count with bench/statements.py's hooks (a
sitecustomize on the bot's PYTHONPATH; no bot code changes) and prints statements and
round trips per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "bench"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import statements  # noqa: E402
from ingest import (  # noqa: E402
    CLK_TCK,
    PG_SERVER,
    ROUTING_KEY,
    TOKEN,
    StandIns,
    Workload,
    bodies_for,
    build_workload,
    closed_loop,
    cpu_seconds,
    create_pg_database,
    drop_pg_database,
    make_poster,
    open_loop,
    percentile,
    pg_reachable,
    summarise_log,
    webhook_body,
)

from tests.harness import BotProcess, LoadBalancer, wait_for  # noqa: E402


# --- CPU of process groups --------------------------------------------------------------------
def _pg_processes(dbname: str) -> dict[str, list[int]]:
    """PostgreSQL processes: the bench database's backends, and the server's shared
    auxiliaries (WAL writer, checkpointer, ...: other databases' work lands there too)."""
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3) as conn:
        rows = conn.execute("SELECT pid, datname, backend_type FROM pg_stat_activity").fetchall()
    ours = [pid for pid, datname, kind in rows if datname == dbname and kind == "client backend"]
    shared = [pid for pid, datname, kind in rows if kind != "client backend"]
    return {"postgres (bench db)": ours, "postgres (aux)": shared}


def _machine_busy() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


class GroupCpu:
    """utime+stime deltas of process groups (/proc/PID/stat); pids may come and go."""

    def __init__(self, groups) -> None:
        self.groups = groups  # () -> {name: [pids]}

    def _read(self) -> dict[str, dict[int, float]]:
        mine = os.getpid()
        out = {"machine": {0: _machine_busy()}}
        for name, pids in self.groups().items():
            out[name] = {pid: (sum(os.times()[:2]) if pid == mine else cpu_seconds(pid))
                         for pid in pids}
        return out

    def __enter__(self) -> GroupCpu:
        self.start, self.wall = self._read(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        end, wall = self._read(), time.perf_counter() - self.wall
        self.processes = {name: len(pids) for name, pids in end.items()}
        self.share = {}
        for name, pids in end.items():
            before = self.start.get(name, {})
            # A process that appeared during the phase counts whole (it started in it).
            used = sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in pids.items())
            self.share[name] = used / wall
        # Whatever else ran meanwhile (other test suites on a shared machine).
        self.share["others"] = max(0.0, self.share.pop("machine") - sum(self.share.values()))


# --- one replica count ---------------------------------------------------------------------------
@dataclass
class CountReport:
    replicas: int
    note: str = ""
    batched_alerts_s: float = 0.0
    batched_statuses: Counter = field(default_factory=Counter)
    batched_cpu: dict[str, float] = field(default_factory=dict)
    singles_s: float = 0.0
    singles_statuses: Counter = field(default_factory=Counter)
    singles_cpu: dict[str, float] = field(default_factory=dict)
    page_latency: list[float] = field(default_factory=list)
    pages_sent: int = 0
    pages_arrived: int = 0
    statements: dict | None = None
    connections: int = 0  # the bench database's server backends after the batched phase
    log_summary: list[str] = field(default_factory=list)


def bot_env(database_url: str, info: dict) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DATABASE_POOL_SIZE": "20",
        "SLACK_BOT_TOKEN": info["slack_token"],
        "SLACK_API_URL": info["slack_url"],
        "SLACK_ALERT_CHANNEL": "#ml-alerts",
        "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "PAGERDUTY_EVENTS_URL": info["pd_events_url"],
        "PAGERDUTY_API_URL": info["pd_api_url"],
        "PAGERDUTY_API_TOKEN": info["pd_api_token"],
        "ALERT_WEBHOOK_TOKEN": TOKEN,
        "ONCALL_CA_BUNDLE": info["ca_bundle"],
        "PAGERDUTY_EVENTS_PER_MINUTE": "0",  # as in bench/ingest.py: the bot's latency, not PD's
    }


async def bench_count(n: int, work: Workload, args, tmp: Path,
                      counting: bool = False) -> CountReport:
    report = CountReport(n)
    dbname, database_url = create_pg_database()
    standins = StandIns(tmp)
    env = bot_env(database_url, standins.info)
    if counting:
        statements.install(env, tmp, ROOT)
    bots = [BotProcess(env, log_path=tmp / f"replica{i}.log", token=TOKEN) for i in range(n)]
    balancer = LoadBalancer([b.url for b in bots], directory=tmp, threads=args.haproxy_threads)
    try:
        for bot in bots:  # one after another: the first runs the migrations
            bot.start()
        balancer.start()
        print(f"[{n} replica(s)] pids {[b.process.pid for b in bots]} behind {balancer.url}",
              flush=True)

        def groups() -> dict[str, list[int]]:
            return {"bots": [b.process.pid for b in bots], **_pg_processes(dbname),
                    "haproxy": [balancer.process.pid], "loadgen": [os.getpid()],
                    "stand-ins": [standins.process.pid]}

        headers = {"Authorization": f"Bearer {TOKEN}"}
        path = "/webhooks/alertmanager"
        poster = make_poster("raw", balancer.url, headers, args.concurrency)
        try:
            seed = bodies_for(work.seed, webhook_body)
            seeded = await closed_loop(poster, path, seed, concurrency=1, deadline=120, ok=202)
            if seeded.accepted_requests != len(seed):
                raise RuntimeError(f"seeding failed: {dict(seeded.statuses)}")
            before = statements.snapshot(env) if counting else None
            with GroupCpu(groups) as meter:
                batched = await closed_loop(poster, path, bodies_for(work.batches, webhook_body),
                                            concurrency=args.concurrency,
                                            deadline=args.phase_seconds, ok=202)
            if counting:
                report.statements = statements.delta(before, statements.snapshot(env))
            report.batched_alerts_s, report.batched_statuses = (batched.alerts_per_s,
                                                                batched.statuses)
            report.batched_cpu = meter.share
            report.connections = meter.processes.get("postgres (bench db)", 0)
            with GroupCpu(groups) as meter:
                singles = await closed_loop(poster, path, bodies_for(work.singles, webhook_body),
                                            concurrency=args.concurrency,
                                            deadline=args.phase_seconds, ok=202)
            report.singles_s, report.singles_statuses = singles.requests_per_s, singles.statuses
            report.singles_cpu = meter.share
        finally:
            await poster.close()
        if counting:
            return report

        await asyncio.to_thread(wait_for, bots[0].outbox_settled, timeout=args.drain_seconds,
                                interval=0.25, what="the outbox to drain")
        poster = make_poster("raw", balancer.url, headers, 64)
        try:
            paced = await open_loop(poster, path, [webhook_body(g) for g in work.pages],
                                    rate=args.page_rate)
        finally:
            await poster.close()
        report.pages_sent = paced.sent
        expected = set(paced.send_times)

        def arrived():
            got = [(i, t) for i, t in standins.ask("triggers") if i in expected]
            return got if len(got) >= len(expected) else None

        try:
            triggers = await asyncio.to_thread(wait_for, arrived, timeout=60, interval=0.2,
                                               what="the pages")
        except AssertionError:
            triggers = [(i, t) for i, t in standins.ask("triggers") if i in expected]
        first: dict[int, float] = {}
        for incident, at in triggers:
            first.setdefault(incident, at)
        report.pages_arrived = len(first)
        report.page_latency = [at - paced.send_times[i] for i, at in first.items()]
    finally:
        balancer.stop()
        for bot in bots:
            bot.stop()
            report.log_summary += summarise_log(bot.log_path, top=3)
        standins.stop()
        drop_pg_database(dbname)
    return report


# --- output -------------------------------------------------------------------------------------
def fmt_cpu(share: dict[str, float]) -> str:
    return "  ".join(f"{name} {100 * v:.0f}%" for name, v in share.items())


def print_report(reports: list[CountReport], args, counted: CountReport | None) -> None:
    base = next((r.batched_alerts_s for r in reports if r.replicas == 1 and r.batched_alerts_s),
                None)
    print()
    print(f"scale-out on PostgreSQL behind HAProxy: {args.batches} batches of 100, "
          f"{args.singles} single requests, {args.concurrency} in flight; pages at "
          f"{args.page_rate:g}/s for {args.page_seconds:g} s; {os.cpu_count()} CPUs")
    print("| replicas | batched alerts/s | x 1 replica | single requests/s | page p50 / p99 "
          "| pages arrived | non-202 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in reports:
        if r.note:
            print(f"| {r.replicas} | {r.note} | | | | | |")
            continue
        ratio = f"{r.batched_alerts_s / base:.2f}x" if base else "-"
        p50, p99 = percentile(r.page_latency, 50), percentile(r.page_latency, 99)
        latency = (f"{1000 * p50:.0f} / {1000 * p99:.0f} ms" if p50 is not None else "-")
        bad = {k: v for k, v in (r.batched_statuses + r.singles_statuses).items() if k != 202}
        print(f"| {r.replicas} | {r.batched_alerts_s:,.0f} | {ratio} | {r.singles_s:,.0f} | "
              f"{latency} | {r.pages_arrived}/{r.pages_sent} | "
              f"{', '.join(f'{k}x{v}' for k, v in bad.items()) or '-'} |")
    print()
    print("CPU during the batched phase (100% = one core):")
    for r in reports:
        if not r.note:
            print(f"  {r.replicas} replica(s): {fmt_cpu(r.batched_cpu)}")
    print("PostgreSQL connections to the bench database after the batched phase: "
          + ", ".join(f"{r.replicas} replica(s) {r.connections}" for r in reports if not r.note))
    print("CPU during the single-request phase:")
    for r in reports:
        if not r.note:
            print(f"  {r.replicas} replica(s): {fmt_cpu(r.singles_cpu)}")
    if counted is not None:
        if counted.note:
            print(counted.note)
        else:
            statements.report(counted.statements or {},
                              f"batched phase, {counted.replicas} replica(s)")
    lines = sorted({line for r in reports for line in r.log_summary})
    if lines:
        print("bot log WARNING/ERROR lines (most frequent):")
        print("\n".join(lines))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", default="1,2,3", help="replica counts (default 1,2,3)")
    p.add_argument("--batches", type=int, default=150, help="batched phase: batches of 100")
    p.add_argument("--singles", type=int, default=3000, help="single-alert requests")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    p.add_argument("--page-rate", type=float, default=50.0)
    p.add_argument("--page-seconds", type=float, default=6.0)
    p.add_argument("--phase-seconds", type=float, default=180.0, help="deadline per phase")
    p.add_argument("--drain-seconds", type=float, default=180.0)
    p.add_argument("--haproxy-threads", type=int, default=1)
    p.add_argument("--statements", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="also count statements and round trips per commit, on N replicas "
                        "(default 1)")
    args = p.parse_args(argv)
    args.replicas = [int(n) for n in args.replicas.split(",") if n.strip()]
    return args


async def main_async(args) -> int:
    problem = pg_reachable()
    if problem:
        print(f"PostgreSQL at {PG_SERVER} unreachable: {problem}", file=sys.stderr)
        return 1
    if shutil.which("haproxy") is None:
        print("haproxy not found: apt-get install haproxy", file=sys.stderr)
        return 1
    work = build_workload(args.batches, args.singles,
                          max(1, round(args.page_rate * args.page_seconds)))
    reports = []
    counted = None
    failed = False
    with tempfile.TemporaryDirectory(prefix="oncall-scaleout-") as name:
        runs = [(n, False) for n in args.replicas] + (
            [(args.statements, True)] if args.statements else [])
        for n, counting in runs:
            tmp = Path(name) / f"{n}{'-statements' if counting else ''}"
            tmp.mkdir()
            print(f"[{n} replica(s){' with statement hooks' if counting else ''}] running ...",
                  flush=True)
            try:
                report = await bench_count(n, work, args, tmp, counting)
            except Exception as exc:  # noqa: BLE001 - report and go on
                failed = True
                report = CountReport(n, note=f"FAILED: {type(exc).__name__}: {exc}")
            if counting:
                counted = report
            else:
                reports.append(report)
        print_report(reports, args, counted)
    return 1 if failed else 0


def main(argv=None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
