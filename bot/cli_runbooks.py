"""`oncall-bot runbook list|lint|run|schema`: the runbooks from the command line.

`register(subparsers)` adds the commands to oncall-bot's parser; `python -m
bot.cli_runbooks` runs them on their own. Runs take PROMETHEUS_URL and
MLFLOW_TRACKING_URI from the environment, like the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from bot.runbooks import (
    RunbookError,
    RunContext,
    StepOutcome,
    lint,
    load_runbooks,
    resolve_params,
    run,
)
from bot.runbooks.format import json_schema


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise RunbookError(f"{what} {item!r} is not name=value")
        pairs[name] = value
    return pairs


def _list(_settings: Any, args: argparse.Namespace) -> int:
    for runbook in load_runbooks(args.dir).values():
        matchers = " ".join(str(m) for m in runbook.matchers) or "(by name only)"
        production = "  CHANGES PRODUCTION" if runbook.changes_production else ""
        print(f"{runbook.name}{production}\n  matches: {matchers}\n  {runbook.description.strip()}")
    return 0


def _lint(_settings: Any, args: argparse.Namespace) -> int:
    problems = lint(args.dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{len(load_runbooks(args.dir))} runbook(s) in {args.dir}: no problems")
    return 0


def _schema(_settings: Any, _args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def _print_step(index: int, outcome: StepOutcome) -> None:
    print(f"[{index + 1}] {outcome.name} ({outcome.kind}): {outcome.status} in {outcome.duration_s:.2f}s")
    for line in outcome.output.splitlines():
        print(f"    {line}")
    sys.stdout.flush()


def _run(_settings: Any, args: argparse.Namespace) -> int:
    runbooks = load_runbooks(args.dir)
    if args.name not in runbooks:
        raise RunbookError(f"no runbook {args.name!r} in {args.dir} (have: {', '.join(runbooks) or 'none'})")
    runbook = runbooks[args.name]
    labels, annotations = _pairs(args.label, "label"), _pairs(args.annotation, "annotation")
    params = resolve_params(runbook, labels, annotations, _pairs(args.param, "param"))
    if runbook.changes_production and not args.dry_run and not args.yes:
        print(f"{runbook.name} changes production; pass --yes to run it (or --dry-run)", file=sys.stderr)
        return 2
    context = RunContext.from_environment(labels=labels, annotations=annotations)
    print(f"{runbook.name}{' (dry run)' if args.dry_run else ''}: {params}")

    async def on_step(index: int, outcome: StepOutcome) -> None:
        _print_step(index, outcome)

    result = asyncio.run(run(runbook, params, context=context, on_step=on_step, dry_run=args.dry_run))
    print(f"{result.runbook}: {result.status}")
    return 0 if result.status in ("passed", "skipped") else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `runbook list|lint|run|schema` to a parser's subcommands; each sets `run(settings, args)`."""
    default_dir = os.environ.get("ONCALL_RUNBOOKS", "runbooks")
    runbook = subparsers.add_parser("runbook", aliases=["runbooks"], help="runbooks: list, lint, run, schema")
    commands = runbook.add_subparsers(dest="runbook_command", required=True)
    for name, handler, text in (("list", _list, "the runbooks and the alerts they serve"),
                                ("lint", _lint, "every problem in the runbooks (exit 1 if any)"),
                                ("run", _run, "run a runbook, printing each step as it finishes")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--dir", default=default_dir,
                             help="runbook directory (default $ONCALL_RUNBOOKS or ./runbooks)")
        command.set_defaults(run=handler)
        if name == "run":
            command.add_argument("name", help="the runbook's name (its `name:` field)")
            command.add_argument("--param", action="append", default=[], metavar="name=value",
                                 help="a param's value (repeat for several)")
            command.add_argument("--label", action="append", default=[], metavar="name=value",
                                 help="an alert label, for params taken from labels")
            command.add_argument("--annotation", action="append", default=[], metavar="name=value",
                                 help="an alert annotation the params may read (repeat for several)")
            command.add_argument("--dry-run", action="store_true", help="render and validate, run nothing")
            command.add_argument("--yes", action="store_true", help="allow a runbook that changes production")
    commands.add_parser("schema", help="the JSON Schema of a runbook file, for editors").set_defaults(run=_schema)


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="oncall-bot")
    register(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(["runbook", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.run(None, args)
    except RunbookError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
