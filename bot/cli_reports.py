"""`oncall-bot report` (the on-call scorecard) and `oncall-bot postmortem ID` (a draft).

`register(subparsers)` adds both to the main CLI; `python -m bot.cli_reports` runs
them on their own. Both read the database named by DATABASE_URL and change nothing
but its schema version.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bot.clock import utcnow
from bot.db import Database
from bot.domain.durations import parse_duration
from bot.domain.scorecard import WorkingHours
from bot.reports import FORMATS, postmortem_for, render, report_stem, scorecard_for
from bot.routing_file import load_routing
from bot.settings import ConfigurationError, Settings, load_settings

_EXTENSIONS = {"text": "txt", "markdown": "md", "json": "json"}


def _instant(text: str) -> datetime:
    """An ISO 8601 time; one without an offset is taken as UTC."""
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _database(settings: Settings) -> Database:
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds)
    db.upgrade()
    return db


def _report(settings: Settings, args: argparse.Namespace) -> int:
    now = utcnow()
    until = _instant(args.until) if args.until else now
    try:
        since = until - parse_duration(args.since)
    except ValueError:
        since = _instant(args.since)
    if since >= until:
        raise ValueError(f"--since {args.since} is not before --until {until.isoformat()}")
    hours = WorkingHours.parse(args.working_hours, args.working_days, args.timezone)
    db = _database(settings)
    try:
        with db.read() as session:
            scorecard = scorecard_for(session=session, since=since, until=until, now=now,
                                      hours=hours, routing=load_routing(settings.oncall_config))
    finally:
        db.dispose()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    # A Markdown report's chart goes beside it: in DIR, or here when printed.
    text = render(scorecard, args.format, out_dir=args.out or Path.cwd())
    if args.out is None:
        sys.stdout.write(text)
        return 0
    path = args.out / f"{report_stem(scorecard)}.{_EXTENSIONS[args.format]}"
    path.write_text(text, encoding="utf-8")
    print(path)
    return 0


def _postmortem(settings: Settings, args: argparse.Namespace) -> int:
    db = _database(settings)
    try:
        with db.read() as session:
            text = postmortem_for(args.id, session=session, now=utcnow())
    except LookupError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(args.out)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `report` and `postmortem` to the CLI; each sets `run(settings, args) -> exit code`."""
    report = subparsers.add_parser("report", help="the on-call scorecard over a window")
    report.add_argument("--since", default="7d",
                        help="a duration before --until (7d, 24h) or an ISO time (default 7d)")
    report.add_argument("--until", help="ISO time the window ends (default now; UTC if no offset)")
    report.add_argument("--format", choices=FORMATS, default="text", help="default text")
    report.add_argument("--out", type=Path, metavar="DIR",
                        help="write the report (and a Markdown report's chart) into DIR")
    report.add_argument("--working-hours", default="09:00-18:00", metavar="HH:MM-HH:MM",
                        help="pages outside them count as out of hours (default 09:00-18:00)")
    report.add_argument("--working-days", default="mon-fri", metavar="DAYS",
                        help="e.g. mon-fri, sun-thu, mon,wed,fri")
    report.add_argument("--timezone", default="UTC", help="of the working hours (IANA name)")
    report.set_defaults(run=_report)

    postmortem = subparsers.add_parser("postmortem", help="a postmortem draft of an incident")
    postmortem.add_argument("id", type=int, help="the incident's number")
    postmortem.add_argument("--out", type=Path, metavar="FILE", help="write the draft here (default: stdout)")
    postmortem.set_defaults(run=_postmortem)


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="python -m bot.cli_reports", description=__doc__)
    register(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(argv)
    try:
        return args.run(load_settings(), args)
    except (ConfigurationError, ValueError) as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
