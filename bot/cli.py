"""oncall-bot: serve the bot, migrate its database, test routes, manage silences, read
incidents, report."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import logs
from bot.cli_config import register as register_config
from bot.cli_config import routes_test, startup_problems, unreachable_database
from bot.cli_console import register as register_console
from bot.cli_incidents import register as register_incidents
from bot.cli_mlflow import register as register_mlflow
from bot.cli_reports import register as register_reports
from bot.cli_runbooks import register as register_runbooks
from bot.clock import utcnow
from bot.db import Database, redacted
from bot.domain.durations import format_duration, parse_duration
from bot.domain.matchers import MatcherError
from bot.domain.routing import RoutingError
from bot.settings import ConfigurationError, Settings, load_settings
from bot.silences import add_silence, expire_silence, list_silences
from bot.web.startup import OneLineStartupFailure

log = logging.getLogger("bot.cli")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may well be reachable from elsewhere
        return False


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from bot.main import create_app

    if (not settings.alert_webhook_tokens and not _loopback(args.host)
            and not settings.alert_webhook_allow_unauthenticated):
        print(f"oncall-bot: refusing to serve on {args.host} without ALERT_WEBHOOK_TOKEN: "
              "anyone who reaches the port could page on-call. Set ALERT_WEBHOOK_TOKEN "
              "(and send it as a bearer token), or ALERT_WEBHOOK_ALLOW_UNAUTHENTICATED=true "
              "if only trusted senders can reach the port.", file=sys.stderr)
        return 2
    errors = startup_problems(settings)
    for problem in errors:
        print(f"oncall-bot: {problem}", file=sys.stderr)
    if errors:
        return 2
    unreachable = unreachable_database(settings)
    if unreachable:
        print(f"oncall-bot: {unreachable}", file=sys.stderr)
        return 2
    # What is disabled is logged by the app as it starts, in the same format.
    log.info("database %s, listening on http://%s:%s", redacted(settings.database_url),
             args.host, args.port)
    # log_config=None: uvicorn's loggers keep the handler bot.logs gave the root logger;
    # its own access log stays off (AccessMiddleware writes one without query strings).
    server = uvicorn.Server(uvicorn.Config(
        OneLineStartupFailure(create_app(settings), secrets=settings.secret_values()),
        host=args.host, port=args.port, log_level=settings.log_level.lower(), access_log=False,
        log_config=None))
    try:
        server.run()
    except SystemExit:
        # uvicorn's exit when the lifespan failed (logged in one line above) or the port was taken.
        return 2
    return 0


def _db(settings: Settings, args: argparse.Namespace) -> int:
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds)
    db.upgrade()
    if args.action == "upgrade":
        print("database is at the newest schema")
        return 0
    from bot.retention import prune

    cutoffs = settings.retention_cutoffs(utcnow())
    print(f"deleted {prune(db, cutoffs)}")
    return 0


def _silence(settings: Settings, args: argparse.Namespace) -> int:
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds)
    db.upgrade()
    now = utcnow()
    with db.write() as session:
        if args.silence_command == "add":
            silence = add_silence(args.matchers, parse_duration(args.duration), session=session,
                                  now=now, created_by=args.by, comment=args.comment)
            print(f"silence #{silence.id} until {silence.ends_at:%Y-%m-%d %H:%M} UTC: "
                  f"{' '.join(silence.matchers)}")
        elif args.silence_command == "list":
            silences = list_silences(session=session, now=now)
            if not silences:
                print("no active silences")
            for silence in silences:
                print(f"#{silence.id}  {' '.join(silence.matchers)}  ends in "
                      f"{format_duration(silence.ends_at - now)}  by {silence.created_by}"
                      f"{'  — ' + silence.comment if silence.comment else ''}")
        elif expire_silence(args.id, session=session, now=now) is None:
            print(f"error: no silence #{args.id} in force", file=sys.stderr)
            return 1
        else:
            print(f"silence #{args.id} expired")
    return 0


def _checkout() -> Path | None:
    """The checkout holding the demo: the current directory, else the source tree this bot
    runs from (a checkout or an editable install; an installed wheel has no demo)."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (candidate / "examples" / "demo" / "narrate.py").is_file():
            return candidate.resolve()
    return None


def _demo(_settings: Settings, args: argparse.Namespace) -> int:
    """The demo drives the test suite's Slack and PagerDuty stand-ins, so it lives in the
    checkout (examples/demo/), not in the installed package."""
    checkout = _checkout()
    if checkout is None:
        print("oncall-bot: the demo runs from a checkout of oncall-bot (examples/demo/ and tests/standins/): "
              "run `oncall-bot demo` in one", file=sys.stderr)
        return 2
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from examples.demo.narrate import run

    return run(keep=args.keep, timeout=args.timeout)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="oncall-bot", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server and the delivery worker")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                       help="address to listen on (default: HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")),
                       help="port to listen on (default: PORT, else 8080)")
    serve.set_defaults(run=_serve)

    db = commands.add_parser("db", help="database schema and retention")
    db.add_argument("action", choices=["upgrade", "prune"],
                    help="upgrade: migrate to the newest schema; prune: delete now what "
                    "RETENTION_DAYS and INCIDENT_RETENTION_DAYS say is past its time")
    db.set_defaults(run=_db)

    routes = commands.add_parser("routes", help="the routing file")
    routes_commands = routes.add_subparsers(dest="routes_command", required=True)
    test = routes_commands.add_parser(
        "test", help="which route, runbook and silence would these labels (or this payload) get?")
    test.add_argument("labels", nargs="*", metavar="name=value", help="the alert's labels")
    test.add_argument("--payload", type=Path, metavar="FILE",
                      help="a webhook body (Alertmanager, Grafana or generic JSON): each alert in it")
    test.add_argument("--source", choices=["auto", "alertmanager", "grafana", "generic"],
                      default="auto", help="the payload's format (default: the first that parses)")
    test.set_defaults(run=routes_test)

    silence = commands.add_parser("silence", help="silences: record alerts without paging")
    silence_commands = silence.add_subparsers(dest="silence_command", required=True)
    add = silence_commands.add_parser("add", help="silence alerts matching all matchers")
    add.add_argument("matchers", nargs="+", metavar="matcher",
                     help='e.g. model="churn" severity=~"critical|page"')
    add.add_argument("--for", dest="duration", default="2h", help="how long (default 2h)")
    add.add_argument("--comment", default="", help="why, for whoever finds it later")
    add.add_argument("--by", default=os.environ.get("USER", "cli"),
                     help="who silences (default: $USER)")
    silence_commands.add_parser("list", help="silences in force")
    expire = silence_commands.add_parser("expire", help="end a silence now")
    expire.add_argument("id", type=int, help="the silence's number, as `silence list` shows it")
    silence.set_defaults(run=_silence)
    register_reports(commands)
    register_runbooks(commands)
    register_config(commands)
    register_incidents(commands)
    register_console(commands)
    register_mlflow(commands)
    demo = commands.add_parser(
        "demo", help="the whole story locally, from a checkout: bad model version → alert → page → "
                     "diagnostics → rollback")
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    demo.add_argument("--timeout", type=float, default=360, help="give up after this many seconds")
    demo.set_defaults(run=_demo)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        logs.configure(settings.log_level, settings.log_format)
        return args.run(settings, args)
    except (ConfigurationError, RoutingError, MatcherError, ValueError) as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
