"""`oncall-bot incidents list` and `oncall-bot incidents show ID`: the incident record
without Slack. Read-only (but for bringing the schema up to date), text for a person,
`--format json` for scripts.

Every value shown may come from an alert, which anyone who reaches the webhook writes:
in text output, terminal control characters (ESC, CR, the other C0 and C1 controls,
and the bidirectional overrides) are shown escaped (`\\x1b`), so a label cannot move
the cursor, recolour or rewrite what the operator sees. JSON output escapes them by
being JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from bot.clock import utcnow
from bot.db import Database
from bot.domain.durations import parse_duration
from bot.domain.incident import IncidentState
from bot.incident_record import LIST_LIMIT, incident_detail, list_incidents
from bot.settings import Settings

# C0 and C1 controls, DEL, and the Unicode bidi embeddings/overrides/isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(value: Any, *, lines: bool = False) -> str:
    """`value` as text that cannot control a terminal: each control character shown as
    its escape. With `lines`, newlines stay (multi-line outputs), everything else goes."""
    pattern = _CONTROL_BUT_NEWLINE if lines else _CONTROL
    return pattern.sub(_escape, "-" if value is None else str(value))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _database(settings: Settings) -> Database:
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds)
    db.upgrade()
    return db


def _list(settings: Settings, args: argparse.Namespace) -> int:
    since = utcnow() - parse_duration(args.since) if args.since else None
    with _database(settings).read() as session:
        rows = list_incidents(session=session, states=args.state or (), model=args.model, since=since)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no incidents" + (" match" if args.state or args.model or args.since else ""))
    if len(rows) == LIST_LIMIT:
        print(f"(the newest {LIST_LIMIT}: narrow with --since, --state or --model)")
    for row in rows:
        print(f"#{row['id']}  {row['state']:<12} {row['tier']:<6} {row['triggered_at'][:16]}  "
              f"model={printable(row['model'])}  {printable(row['title'])}")
    return 0


def _show(settings: Settings, args: argparse.Namespace) -> int:
    with _database(settings).read() as session:
        detail = incident_detail(args.id, session=session)
    if detail is None:
        print(f"error: no incident #{args.id}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(detail, indent=2))
        return 0
    print("\n".join(render_detail(detail)))
    return 0


def render_detail(detail: dict[str, Any]) -> list[str]:
    """The text of `incidents show`, every value made printable."""
    p = printable
    out = [f"incident #{detail['id']}: {p(detail['title'])}",
           f"  state {detail['state']}, tier {p(detail['tier'])}, route {p(detail['route'])}, "
           f"{'paged' if detail['paged'] else 'not paged'}, {detail['alert_count']} alert(s)",
           f"  model {p(detail['model'])} version {p(detail['version'])} "
           f"environment {p(detail['environment'])} severity {p(detail['severity'])}",
           f"  triggered {detail['triggered_at']}, acknowledged {p(detail['acknowledged_at'])} "
           f"by {p(detail['acknowledged_by'])}, resolved {p(detail['resolved_at'])} by {p(detail['resolved_by'])}",
           "  labels: " + " ".join(f"{p(k)}={p(v)}" for k, v in sorted(detail["labels"].items())),
           "", "timeline:"]
    for entry in detail["timeline"]:
        text = _indented(p(entry["detail"], lines=True), "      ")
        out.append(f"  {entry['at'][:19]}  {p(entry['kind'])} by {p(entry['actor'])}: {text}")
    out += ["", "deliveries:"]
    out += [f"  #{d['id']} {d['target']} {d['action']}: {d['state']} after {d['attempts']} attempt(s)"
            + (f" — {p(d['last_error'])}" if d["last_error"] else "") for d in detail["deliveries"]]
    if not detail["deliveries"]:
        out.append("  none")
    out += ["", "runbook runs:"]
    for run in detail["runs"]:
        out.append(f"  #{run['id']} {p(run['runbook'])} ({run['purpose']}, asked by {p(run['requested_by'])}): "
                   f"{run['status']}")
        for step in run["steps"]:
            out.append(f"    {p(step['name'])} [{step['kind']}] {step['status']} ({step['duration_s']:.1f}s): "
                       + _indented(p(step["output"], lines=True), "        "))
    if not detail["runs"]:
        out.append("  none")
    return out


def _indented(text: str, prefix: str) -> str:
    return ("\n" + prefix).join(text.strip().splitlines()) or "-"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `incidents list` and `incidents show` to the CLI."""
    incidents = subparsers.add_parser("incidents", help="read the incident record without Slack")
    commands = incidents.add_subparsers(dest="incidents_command", required=True)
    listing = commands.add_parser("list", help="incidents, newest first")
    listing.add_argument("--state", action="append", choices=[s.value for s in IncidentState],
                         help="only in this state (repeat for several)")
    listing.add_argument("--model", help="only of this model (its `model` label)")
    listing.add_argument("--since", metavar="DURATION",
                         help="only triggered within this long before now, e.g. 7d or 24h")
    listing.add_argument("--format", choices=["text", "json"], default="text",
                         help="text for people (default), json for scripts")
    listing.set_defaults(run=_list)
    show = commands.add_parser("show", help="an incident's timeline, deliveries and runbook runs")
    show.add_argument("id", type=int, help="the incident's number")
    show.add_argument("--format", choices=["text", "json"], default="text",
                      help="text for people (default), json for scripts")
    show.set_defaults(run=_show)
