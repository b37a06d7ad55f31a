"""`oncall-bot config check [--online]` and `oncall-bot routes test`: where an alert would go,
what would run for it, and whether the configuration holds together, before deploying."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.clock import utcnow
from bot.config_check import Problem, check, check_online
from bot.db import Database, redacted
from bot.domain.alert import Alert
from bot.domain.incident import group_key
from bot.domain.matchers import match_all
from bot.intake import PARSERS, PayloadError
from bot.routing_file import load_routing
from bot.runbooks import load_runbooks, select_runbook
from bot.settings import Settings
from bot.store import active_silences

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = commands.add_parser("config", help="the routing file, runbooks and environment")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    checked = config_commands.add_parser(
        "check", help="check them together (as serve does at start); exit 1 on an error")
    checked.add_argument("--online", action="store_true",
                         help="also ask Slack, PagerDuty, MLflow and Prometheus whether they "
                              "answer with the credentials given")
    checked.set_defaults(run=config_check)


def config_check(settings: Settings, args: argparse.Namespace) -> int:
    problems = check(settings)
    if args.online:
        problems += check_online(settings)
    for problem in problems:
        print(problem, file=sys.stderr if problem.level == "error" else sys.stdout)
    errors = sum(p.level == "error" for p in problems)
    print(f"{errors} error(s), {sum(p.level == 'warning' for p in problems)} warning(s)")
    return 1 if errors else 0


def startup_problems(settings: Settings) -> list[Problem]:
    """Run by `serve` before it listens: errors are returned to stop it, warnings logged."""
    problems = check(settings)
    for problem in problems:
        if problem.level == "warning":
            log.warning("%s", problem.text)
    return [p for p in problems if p.level == "error"]


def unreachable_database(settings: Settings) -> str | None:
    """One line naming the (redacted) URL when the database does not answer, else None."""
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds)
    try:
        with db.reader.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        # psycopg says `connection failed: connection to server at "…", port 1 failed: Connection
        # refused`: the last part is the reason.
        reason = reason.rsplit(" failed: ", 1)[-1].strip() or type(exc).__name__
        return (f"database unreachable at {redacted(settings.database_url)}: "
                f"{reason[:1].lower()}{reason[1:]}")
    finally:
        db.dispose()
    return None


def _payload_alerts(path: Path, source: str) -> list[Alert]:
    document = json.loads(path.read_text())
    sources = [source] if source != "auto" else list(PARSERS)
    failures = []
    for name in sources:
        try:
            return PARSERS[name](document)
        except PayloadError as exc:
            failures.append(f"{name}: {exc.problems[0]}")
    raise ValueError(f"{path}: not a payload the bot reads ({'; '.join(failures)})")


def routes_test(settings: Settings, args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    for pair in args.labels:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            print(f"error: {pair!r} is not name=value", file=sys.stderr)
            return 2
        labels[name] = value
    if args.payload is None and not labels:
        print("error: give labels (name=value) or --payload FILE", file=sys.stderr)
        return 2
    try:
        label_sets = ([{**a.labels, **labels} for a in _payload_alerts(args.payload, args.source)]
                      if args.payload is not None else [labels])
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {args.payload}: cannot read a JSON payload: {exc}", file=sys.stderr)
        return 2
    routing = load_routing(settings.oncall_config)
    runbooks = load_runbooks(settings.oncall_runbooks) if settings.oncall_runbooks.is_dir() else {}
    silences = _silences(settings)
    for index, alert_labels in enumerate(label_sets):
        if index:
            print()
        route = routing.route(alert_labels)
        runbook = select_runbook(runbooks, route.runbook, alert_labels) if route.tier.posts else None
        print(f"route:   {route.name}\ntier:    {route.tier.value}\n"
              f"channel: {route.channel or settings.slack_alert_channel}\n"
              f"team:    {route.team or '-'}\nrunbook: {runbook.name if runbook else '-'}"
              f"{_why(route.runbook, runbook)}\n"
              f"silence: {_silenced(silences, alert_labels)}\n"
              f"group:   {group_key(alert_labels, route.group_by)}")
    return 0


def _why(named: str | None, chosen) -> str:  # type: ignore[no-untyped-def]
    if chosen is None:
        return f" (the route names {named!r}, which does not run by itself)" if named else ""
    return " (named by the route)" if chosen.name == named else " (its matchers fit)"


def _silences(settings: Settings) -> list | str:  # type: ignore[type-arg]
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return f"none (no database at {url.database} yet)"  # reading would create the file
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds)
    try:
        with db.read() as session:
            return active_silences(session=session, now=utcnow())
    except SQLAlchemyError as exc:
        return (f"unknown: the database at {redacted(settings.database_url)} cannot be read "
                f"({type(exc).__name__})")
    finally:
        db.dispose()


def _silenced(silences: list | str, labels: Mapping[str, str]) -> str:  # type: ignore[type-arg]
    if isinstance(silences, str):
        return silences
    hit = next((s.id for s in silences if match_all(s.matchers, labels)), None)
    return f"#{hit}: recorded, not paged or posted" if hit is not None else "none"
