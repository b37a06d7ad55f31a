"""Statements and round trips the bot sends PostgreSQL, counted inside the bot.

`install(env, directory)` writes a `sitecustomize.py` into `directory` and puts it on
the bot's PYTHONPATH: the bot's interpreter loads it at start and wraps psycopg's
cursor and connection methods (no bot code changes). Counting at the driver sees
every statement, whether SQLAlchemy sent it or the bot's store did directly, and
knows what psycopg sends besides: BEGIN before the first statement of a transaction,
COMMIT/ROLLBACK, and pipelines (statements queued and sent together, one round trip
for the lot). `snapshot(env)` sums what the bot's processes counted so far; `delta`
subtracts two snapshots; `report` prints one.

Round trips are counted as psycopg makes them: a statement outside a pipeline waits
for its answer (1), so does the BEGIN psycopg sends before a transaction's first
statement (1), COMMIT or ROLLBACK of an open transaction (1), an executemany (1:
psycopg pipelines it itself), and a pipeline block (1 when it ends: the statements
and a BEGIN queued in it go out together). SQLAlchemy's pre-ping on each pool
checkout was one statement (`;` with psycopg) in autocommit; bot/db.py no longer
pre-pings.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

HOOKS = r'''
import json, os, re, threading, time
from collections import Counter
from contextlib import contextmanager

_out = f"{os.environ['STATEMENTS_OUT']}.{os.getpid()}"  # one file per bot process
_lock = threading.Lock()
_local = threading.local()
_open = {}  # id(connection) -> the transaction in progress on it
_totals = {"statements": 0, "round_trips": 0, "pipelined": 0, "executemany": 0,
           "kinds": Counter()}

def _kind(sql):
    if isinstance(sql, bytes):
        sql = sql.decode(errors="replace")
    sql = sql if isinstance(sql, str) else str(sql)
    words = re.sub(r"\s+", " ", sql.strip()).split(" ")
    verb = words[0].upper()
    if sql.strip().upper() in ("SELECT 1", ";"):
        return "SELECT 1 (pool pre-ping)"
    if verb == "UPDATE":
        return f"UPDATE {words[1]}"
    table = re.search(r"\b(?:INTO|FROM)\s+([A-Za-z_][A-Za-z0-9_]*)", sql, re.IGNORECASE)
    return f"{verb} {table.group(1)}" if table else verb

def _role(kinds):
    """Intake writes alert occurrences or incidents; the outbox reads or updates deliveries."""
    if any(k.startswith(("INSERT alertoccurrence", "UPDATE alertoccurrence", "INSERT incident"))
           for k in kinds):
        return "intake"
    if any(k.startswith(("SELECT delivery", "UPDATE delivery", "SELECT alertoccurrence"))
           for k in kinds):
        return "outbox"
    if kinds and all(k.startswith("SELECT 1") for k in kinds):
        return "pre-ping"
    return "other"

def _finish(unit, how):
    bucket = _totals.setdefault(f"{_role(unit['kinds'])} {how}", {
        "transactions": 0, "statements": 0, "round_trips": 0, "sizes": Counter(),
        "kinds": Counter()})
    bucket["transactions"] += 1
    bucket["statements"] += len(unit["kinds"])
    bucket["round_trips"] += unit["rt"]
    bucket["sizes"][unit["rt"]] += 1
    bucket["kinds"].update(unit["kinds"])
    _totals["round_trips"] += unit["rt"]

def _statement(conn, sql, many):
    from psycopg.pq import TransactionStatus
    kind = _kind(sql) + (" (executemany)" if many else "")
    # Inside a pipeline block its end is the round trip; an executemany outside one
    # (psycopg opens a pipeline of its own for it) is one.
    pipelined = conn._pipeline is not None
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    with _lock:
        _totals["statements"] += 1
        _totals["pipelined"] += pipelined
        _totals["executemany"] += many
        _totals["kinds"][kind] += 1
        unit = _open.get(id(conn))
        if unit is None:
            unit = {"kinds": [], "rt": 0}
            if not conn.autocommit:
                _open[id(conn)] = unit
                unit["rt"] += 0 if pipelined or not idle else 1  # psycopg's BEGIN
        unit["kinds"].append(kind)
        unit["rt"] += 0 if pipelined else 1
        if conn.autocommit and id(conn) not in _open:
            _finish(unit, "autocommit")

def _end(conn, how):
    from psycopg.pq import TransactionStatus
    with _lock:
        unit = _open.pop(id(conn), None)
        if unit is None:
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            unit["rt"] += 1
        _finish(unit, how)

try:
    import psycopg
except ImportError:
    psycopg = None

if psycopg is not None:
    _execute, _executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    _commit, _rollback, _pipeline = (psycopg.Connection.commit, psycopg.Connection.rollback,
                                     psycopg.Connection.pipeline)

    def execute(self, query, params=None, **kwargs):
        if not getattr(_local, "many", False):
            _statement(self.connection, query, False)
        return _execute(self, query, params, **kwargs)

    def executemany(self, query, params_seq, **kwargs):
        _statement(self.connection, query, True)
        _local.many = True
        try:
            return _executemany(self, query, params_seq, **kwargs)
        finally:
            _local.many = False

    def commit(self):
        _end(self, "commit")
        return _commit(self)

    def rollback(self):
        _end(self, "rollback")
        return _rollback(self)

    @contextmanager
    def pipeline(self):
        outer = self._pipeline is None and not getattr(_local, "many", False)
        with _pipeline(self) as p:
            yield p
        if outer:  # its end sends what was queued, with a Sync, and reads every answer
            with _lock:
                unit = _open.get(id(self))
                if unit is not None:
                    unit["rt"] += 1
                else:
                    _totals["round_trips"] += 1

    psycopg.Cursor.execute, psycopg.Cursor.executemany = execute, executemany
    psycopg.Connection.commit, psycopg.Connection.rollback = commit, rollback
    psycopg.Connection.pipeline = pipeline

def _dump():
    while True:
        time.sleep(0.5)
        with _lock:
            text = json.dumps(_totals)
        with open(_out + ".tmp", "w") as f:
            f.write(text)
        os.replace(_out + ".tmp", _out)

threading.Thread(target=_dump, daemon=True).start()
'''


def install(env: dict[str, str], directory: Path, root: Path) -> None:
    """Make the bot started with `env` load the hooks (written into `directory`)."""
    (directory / "sitecustomize.py").write_text(HOOKS)
    env["PYTHONPATH"] = f"{directory}{os.pathsep}{root}"
    env["STATEMENTS_OUT"] = str(directory / "statements.json")


def snapshot(env: dict[str, str]) -> dict:
    """The hooks' totals, summed over the bot processes, once written after this moment."""
    out = Path(env["STATEMENTS_OUT"])
    time.sleep(1.1)  # the hooks write every 0.5 s
    total: dict = {}
    for path in out.parent.glob(f"{out.name}.*"):
        if path.suffix == ".tmp":
            continue
        _add(total, json.loads(path.read_text()))
    return total


def _add(into: dict, more: dict) -> None:
    for key, value in more.items():
        if isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value


def delta(before: dict, after: dict) -> dict:
    out = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out[key] = delta(before.get(key, {}), value)
        elif value - before.get(key, 0):
            out[key] = value - before.get(key, 0)
    return out


def report(s: dict, title: str) -> None:
    """Print one phase's counts: per transaction kind, statements and round trips each."""
    if not s.get("statements"):
        print(f"\n{title}: no statements recorded (hooks not loaded, or not PostgreSQL)")
        return
    print(f"\n{title}: {s['statements']:,} statements ({s.get('executemany', 0):,} executemany, "
          f"{s.get('pipelined', 0):,} pipelined), {s.get('round_trips', 0):,} round trips")
    print("  by transaction (intake: writes alert occurrences or incidents; outbox: reads or "
          "writes deliveries; autocommit: one statement, no BEGIN/COMMIT), round trips each:")
    for name in sorted(k for k, v in s.items() if isinstance(v, dict) and "transactions" in v):
        b = s[name]
        if not b.get("transactions"):
            continue
        n = b["transactions"]
        sizes = ", ".join(f"{k}: {v}x" for k, v in sorted((int(k), v) for k, v in
                                                            b.get("sizes", {}).items()))
        print(f"  {name}: {n:,} transactions, {b.get('statements', 0) / n:.1f} statements and "
              f"{b.get('round_trips', 0) / n:.1f} round trips each "
              f"({b.get('round_trips', 0):,} in all); round trips: {sizes}")
        for kind, count in sorted(b.get("kinds", {}).items(), key=lambda kv: -kv[1])[:12]:
            print(f"      {count:7,}  {kind}")
