"""Retention bench: intake and /metrics on a big stored record vs an empty database.

Run from the repository root:

    .venv/bin/python bench/retention.py                      # SQLite and PostgreSQL
    .venv/bin/python bench/retention.py --backends sqlite --quick

For each backend, two databases are prepared once: an empty one (just migrated) and a
full one holding 100,000 resolved incidents, 1,000,000 alert occurrences, 300,000
timeline entries and 200,000 sent deliveries, written with bulk SQL (generate_series
on PostgreSQL, a recursive CTE on SQLite) and dated within the last 300 days, so
retention keeps them. Each round copies one of them, starts the real bot on the copy
and runs the same workload as bench/ingest.py phases 1-2 (seed, batched webhooks,
single-alert webhooks, 32 in flight), then times sequential GET /metrics. Rounds
alternate empty, full, empty, full, ... so the empty runs show the run-to-run noise
the full ones are compared with. Also timed, on another copy of the full database: a
prune with the default RETENTION_DAYS (nothing is old: the hourly cost when there is
nothing to do), then one with RETENTION_DAYS=139, which deletes the older half.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.ingest import (  # noqa: E402
    PG_SERVER,
    ROUTING_KEY,
    TOKEN,
    StandIns,
    bodies_for,
    build_workload,
    closed_loop,
    make_poster,
    percentile,
    pg_reachable,
    webhook_body,
)
from bot.db import Database  # noqa: E402
from bot.domain.retention import cutoffs  # noqa: E402
from bot.retention import prune  # noqa: E402
from tests.harness import BotProcess  # noqa: E402

INCIDENTS = 100_000
OCCURRENCES_PER_INCIDENT = 10  # 1,000,000 occurrences
TIMELINE_PER_INCIDENT = 3
DELIVERIES_PER_INCIDENT = 2

# The series 1..:n, and a timestamp `n` units before now, per dialect.
_SERIES = {
    "postgresql": "SELECT n FROM generate_series(1, {n}) AS s(n)",
    "sqlite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) "
              "SELECT n FROM s",
}
_AGO = {  # (n mod 100,000) x 4 minutes: spread over the last 278 days
    "postgresql": "now() - ((({n}) % 100000) * interval '4 minutes')",
    "sqlite": "datetime('now', printf('-%d minutes', (({n}) % 100000) * 4)) || '.000000'",
}


def fill(database_url: str, dialect: str) -> float:
    """Bulk-write the big record into a migrated, empty database; returns seconds."""
    started = time.perf_counter()
    db = Database(database_url)
    series, ago = _SERIES[dialect], _AGO[dialect]
    false = "false" if dialect == "postgresql" else "0"
    statements = [
        f"INSERT INTO incident (id, key, group_key, group_hash, title, state, tier, route, "
        f"source, labels, paged, triggered_at, resolved_at, reopen_count, alert_count, "
        f"last_alert_at, escalation_paged) "
        f"SELECT n, 'bench-' || n, 'alertname=Old' || n, 'oldhash' || n, 'old incident ' || n, "
        f"'resolved', 'L0', 'default', 'alertmanager', '{{}}', {false}, {ago.format(n='n')}, "
        f"{ago.format(n='n')}, 0, {OCCURRENCES_PER_INCIDENT}, {ago.format(n='n')}, {false} "
        f"FROM ({series.format(n=INCIDENTS)}) AS s",
        f"INSERT INTO alertoccurrence (incident_id, fingerprint, status, source, labels, "
        f"annotations, first_seen_at, last_seen_at, repeats) "
        f"SELECT 1 + (n - 1) / {OCCURRENCES_PER_INCIDENT}, 'fp' || n, 'resolved', "
        f"'alertmanager', '{{\"alertname\": \"Old\", \"instance\": \"10.0.0.1:8080\"}}', "
        f"'{{\"summary\": \"an old alert\"}}', {ago.format(n=f'1 + (n - 1) / {OCCURRENCES_PER_INCIDENT}')}, "
        f"{ago.format(n=f'1 + (n - 1) / {OCCURRENCES_PER_INCIDENT}')}, 0 "
        f"FROM ({series.format(n=INCIDENTS * OCCURRENCES_PER_INCIDENT)}) AS s",
        f"INSERT INTO timelineentry (incident_id, at, actor, kind, detail) "
        f"SELECT 1 + (n - 1) / {TIMELINE_PER_INCIDENT}, {ago.format(n=f'1 + (n - 1) / {TIMELINE_PER_INCIDENT}')}, "
        f"'bot', 'opened', 'old timeline entry' "
        f"FROM ({series.format(n=INCIDENTS * TIMELINE_PER_INCIDENT)}) AS s",
        f"INSERT INTO delivery (incident_id, target, action, payload, state, attempts, "
        f"created_at, next_attempt_at, sent_at) "
        f"SELECT 1 + (n - 1) / {DELIVERIES_PER_INCIDENT}, 'slack', 'post', '{{}}', 'sent', 1, "
        f"{ago.format(n=f'1 + (n - 1) / {DELIVERIES_PER_INCIDENT}')}, "
        f"{ago.format(n=f'1 + (n - 1) / {DELIVERIES_PER_INCIDENT}')}, "
        f"{ago.format(n=f'1 + (n - 1) / {DELIVERIES_PER_INCIDENT}')} "
        f"FROM ({series.format(n=INCIDENTS * DELIVERIES_PER_INCIDENT)}) AS s",
    ]
    with db.writer.connect() as connection:
        for statement in statements:
            connection.execute(text(statement))
        if dialect == "postgresql":
            connection.execute(text(
                f"SELECT setval('incident_id_seq', {INCIDENTS})"))
        connection.commit()
    if dialect == "postgresql":  # what autovacuum does after a bulk load, done now
        with db.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    db.dispose()
    return time.perf_counter() - started


@dataclass
class Round:
    kind: str  # empty | full
    batched: float = 0.0  # alerts/s
    singles: float = 0.0  # requests/s
    scrape: list[float] = field(default_factory=list)  # seconds each
    errors: dict[str, int] = field(default_factory=dict)


class Backend:
    """The empty and full templates of one backend, and fresh copies of them."""

    def __init__(self, dialect: str, tmp: Path) -> None:
        self.dialect = dialect
        self.tmp = tmp
        self.created: list[str] = []
        self.templates = {kind: self._new() for kind in ("empty", "full")}
        for url in self.templates.values():
            db = Database(url)
            db.upgrade()
            db.dispose()  # a template must have no session left to be copied

    def _new(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.tmp / f'{uuid.uuid4().hex[:8]}.db'}"
        import psycopg

        name = f"oncall_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return f"{PG_SERVER}/{name}"

    def copy(self, kind: str) -> str:
        source = self.templates[kind]
        if self.dialect == "sqlite":
            target = self.tmp / f"{kind}-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(source.removeprefix("sqlite:///"), target)
            return f"sqlite:///{target}"
        import psycopg

        name = f"oncall_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source.rsplit("/", 1)[1]}"')
        self.created.append(name)
        return f"{PG_SERVER}/{name}"

    def drop(self) -> None:
        if self.dialect == "postgresql":
            import psycopg

            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
                for name in self.created:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run_round(kind: str, database_url: str, standins: StandIns, args,
                    tmp: Path, n: int) -> Round:
    info = standins.info
    env = {
        "DATABASE_URL": database_url, "SLACK_BOT_TOKEN": info["slack_token"],
        "SLACK_API_URL": info["slack_url"], "SLACK_ALERT_CHANNEL": "#ml-alerts",
        "PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "PAGERDUTY_EVENTS_URL": info["pd_events_url"],
        "PAGERDUTY_API_URL": info["pd_api_url"], "PAGERDUTY_API_TOKEN": info["pd_api_token"],
        "ALERT_WEBHOOK_TOKEN": TOKEN, "ONCALL_CA_BUNDLE": info["ca_bundle"],
        "PAGERDUTY_EVENTS_PER_MINUTE": "0",
    }
    bot = BotProcess(env, log_path=tmp / f"bot-{kind}-{n}.log", token=TOKEN)
    result = Round(kind)
    work = build_workload(args.batches, args.singles, 0)
    bot.start()
    try:
        poster = make_poster("raw", bot.url, {"Authorization": f"Bearer {TOKEN}"},
                             args.concurrency)
        try:
            seeded = await closed_loop(poster, "/webhooks/alertmanager",
                                       bodies_for(work.seed, webhook_body), concurrency=1,
                                       deadline=300, ok=202)
            batched = await closed_loop(poster, "/webhooks/alertmanager",
                                        bodies_for(work.batches, webhook_body),
                                        concurrency=args.concurrency, deadline=300, ok=202)
            singles = await closed_loop(poster, "/webhooks/alertmanager",
                                        bodies_for(work.singles, webhook_body),
                                        concurrency=args.concurrency, deadline=300, ok=202)
        finally:
            await poster.close()
        result.batched, result.singles = batched.alerts_per_s, singles.requests_per_s
        for phase in (seeded, batched, singles):
            for status, count in phase.statuses.items():
                if status != 202:
                    result.errors[str(status)] = result.errors.get(str(status), 0) + count
        with httpx.Client(base_url=bot.url, timeout=30) as client:
            for _ in range(args.scrapes):
                started = time.perf_counter()
                response = client.get("/metrics")
                result.scrape.append(time.perf_counter() - started)
                if response.status_code != 200:
                    key = f"/metrics {response.status_code}"
                    result.errors[key] = result.errors.get(key, 0) + 1
    finally:
        bot.stop()
    return result


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def report(dialect: str, rounds: list[Round], fill_seconds: float, prune_seconds: float,
           deleting: tuple[float, int]) -> None:
    empty = [r for r in rounds if r.kind == "empty"]
    full = [r for r in rounds if r.kind == "full"]
    measures = [
        ("batched alerts/s", lambda r: r.batched, ",.0f"),
        ("single-alert requests/s", lambda r: r.singles, ",.0f"),
        ("/metrics p50 ms", lambda r: 1000 * percentile(r.scrape, 50), ".2f"),
        ("/metrics p99 ms", lambda r: 1000 * percentile(r.scrape, 99), ".2f"),
    ]
    head = ["measure"] + [f"{r.kind} #{i // 2 + 1}" for i, r in enumerate(rounds)] + [
        "full / empty"]
    print(f"\n## {dialect}: {INCIDENTS:,} incidents, {INCIDENTS * OCCURRENCES_PER_INCIDENT:,} "
          f"occurrences stored (filled in {fill_seconds:.0f} s; a prune with nothing old: "
          f"{prune_seconds:.2f} s; one deleting the older half, {deleting[1]:,} rows: "
          f"{deleting[0]:.1f} s)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for label, value, spec in measures:
        cells = [format(value(r), spec) for r in rounds]
        ratio = _mean([value(r) for r in full]) / max(_mean([value(r) for r in empty]), 1e-9)
        print(f"| {label} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    errors = {f"{r.kind} #{i // 2 + 1}": r.errors for i, r in enumerate(rounds) if r.errors}
    if errors:
        print(f"\nnon-2xx answers: {errors}")


async def bench(dialect: str, args, tmp: Path) -> None:
    backend = Backend(dialect, tmp)
    standins = StandIns(tmp)
    try:
        fill_seconds = fill(backend.templates["full"], dialect)
        probe = backend.copy("full")
        db = Database(probe)
        started = time.perf_counter()
        pruned = prune(db, cutoffs(datetime.now(UTC), retention_days=400,
                                   incident_retention_days=None))
        prune_seconds = time.perf_counter() - started
        assert not any(pruned.counts.values()), pruned
        # Then half of it old (RETENTION_DAYS=139): the cost of a prune that deletes.
        started = time.perf_counter()
        pruned = prune(db, cutoffs(datetime.now(UTC), retention_days=139,
                                   incident_retention_days=None))
        deleting = (time.perf_counter() - started, sum(pruned.counts.values()))
        db.dispose()
        rounds = []
        for n in range(args.rounds):
            for kind in ("empty", "full"):
                print(f"[{dialect}] round {n + 1}: {kind}", flush=True)
                rounds.append(await run_round(kind, backend.copy(kind), standins, args, tmp, n))
        report(dialect, rounds, fill_seconds, prune_seconds, deleting)
    finally:
        standins.stop()
        backend.drop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of empty + full")
    parser.add_argument("--batches", type=int, default=100, help="batches of 100 alerts")
    parser.add_argument("--singles", type=int, default=6000, help="single-alert webhooks")
    parser.add_argument("--scrapes", type=int, default=200, help="GET /metrics per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="fewer of everything")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.singles, args.scrapes, args.rounds = 30, 600, 50, 1
    with tempfile.TemporaryDirectory(prefix="oncall-retention-bench-") as directory:
        for dialect in args.backends.split(","):
            if dialect == "postgresql" and (problem := pg_reachable()):
                print(f"\n## postgresql: skipped, {PG_SERVER} unreachable ({problem})")
                continue
            asyncio.run(bench(dialect, args, Path(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
