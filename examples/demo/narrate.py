"""`oncall-bot demo`: runs the story in examples/demo/scenario.py and narrates it.

bot/cli.py finds this module in a checkout (the current directory, or the source tree of
an editable install) and calls `run`; the installed package has no demo of its own.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from examples.demo.scenario import ALIAS, MODEL, Demo, DemoError


def run(*, keep: bool, timeout: float) -> int:
    """The whole story, printed as it happens; 0 when it ran to the end. Everything it
    started is stopped on the way out (also on Ctrl-C or SIGTERM); `keep` keeps the
    temporary directory (logs, databases)."""
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="oncall-demo-"))

    def say(source: str, message: str) -> None:
        stamp = f"{time.monotonic() - started:6.1f}s"
        lines = message.strip().splitlines() or [""]
        print(f"{stamp}  [{source}] {lines[0]}", flush=True)
        for line in lines[1:]:
            print(f"{' ' * len(stamp)}  {' ' * (len(source) + 2)} {line}", flush=True)

    def step(message: str) -> None:
        demo.report()
        print(f"\n== {message}", flush=True)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C even when started with SIGINT ignored (a background job), and SIGTERM alike:
    # both unwind through the finally below, which stops every process group started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    demo = Demo(workdir, say=say, deadline_seconds=timeout)
    try:
        step(f"Starting MLflow, the model server and its traffic, Prometheus, Alertmanager, the bot and "
             f"stand-ins for Slack and PagerDuty (in {workdir}; this takes 10-30s)")
        demo.start()
        say("demo", "\n".join(f"{name}: {url}" for name, url in demo.url.items()))
        step(f"{MODEL}@{ALIAS} serves v{demo.good}; error ratio {demo.error_ratio(demo.good):.1%}. "
             f"Deploying v{demo.bad} (tagged quality=bad)")
        demo.promote_bad_version()
        step("Waiting for Prometheus → Alertmanager → the bot")
        incident = demo.wait_for_incident()
        say("bot", f"incident #{incident.id} opened from {incident.source}: {incident.title}")
        demo.wait_for_page()
        step("Diagnostics run in the incident's thread")
        demo.wait_for_diagnostics()
        step("The on-call engineer acknowledges")
        demo.acknowledge()
        step("…and rolls back: Roll back → preview → Confirm")
        demo.roll_back()
        step("The rollback runbook moves the alias back, then waits until the error ratio over its window "
             "is healthy (under a minute)")
        detail = demo.wait_for_rollback()
        say("bot", detail)
        say("mlflow", f"{MODEL}@{ALIAS} → v{demo.champion()}; the model server serves v{demo.serving()}")
        step("Waiting for Alertmanager's resolved notification")
        demo.wait_for_resolved()
        record = demo.record()
        incident = record["incident"]
        step(f"Incident #{incident.id} record: {incident.state} by {incident.resolved_by}")
        for entry in record["timeline"]:
            first = (entry.detail or "").strip().splitlines()[:1]
            print(f"  {str(entry.at)[:19]}  {entry.kind:<17} {entry.actor:<16} {first[0][:90] if first else ''}")
        print(f"\n  MTTA {record['mtta']:.0f}s   MTTR {record['mttr']:.0f}s   "
              f"(whole demo {time.monotonic() - started:.0f}s)")
        return 0
    except DemoError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the demo started", file=sys.stderr)
        return 130
    finally:
        demo.stop()
        if keep:
            print(f"logs and databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
