"""The `/oncall` slash command: text in, a typed command out (or the usage line).

Pure parsing, so every subcommand and every malformed argument is table-tested
without Slack.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import timedelta

from bot.domain.durations import parse_duration
from bot.domain.matchers import Matcher, MatcherError
from bot.domain.routing import Tier

USAGE = {
    "help": "/oncall help",
    "who": "/oncall who",
    "list": "/oncall list [model=…] [tier=L0|L1|record] [state=triggered|acknowledged|resolved]",
    "show": "/oncall show ID",
    "ack": "/oncall ack ID",
    "resolve": "/oncall resolve ID [note]",
    "note": "/oncall note ID text",
    "declare": '/oncall declare "title" [model=…] [tier=L0|L1] [severity=…]',
    "silence": '/oncall silence matcher… for=2h [reason]   e.g. model="churn" env="staging"',
    "silences": "/oncall silences",
    "unsilence": "/oncall unsilence ID",
    "report": "/oncall report [7d]",
    "changes": "/oncall changes [model] [24h]",
    "rollback": "/oncall rollback MODEL [to VERSION]",
    "runbook": "/oncall runbook list | /oncall runbook run NAME key=value…",
    "console": "/oncall console   (a one-time sign-in link to the web console, for you only)",
}
HELP = "*/oncall* subcommands:\n" + "\n".join(f"• `{line}`" for line in USAGE.values())


class CommandError(ValueError):
    """Malformed input; the message is the problem and the usage line to show."""

    def __init__(self, subcommand: str | None, problem: str) -> None:
        usage = USAGE.get(subcommand or "", None)
        text = f"{problem}\nUsage: `{usage}`" if usage else f"{problem}\n{HELP}"
        super().__init__(text)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    incident_id: int | None = None
    text: str = ""
    filters: dict[str, str] = field(default_factory=dict)
    matchers: tuple[str, ...] = ()
    duration: timedelta | None = None


_LIST_FILTERS = {"model", "tier", "state"}
_DECLARE_OPTIONS = {"model", "tier", "severity"}
_STATES = {"triggered", "acknowledged", "resolved"}


def _incident_id(name: str, args: list[str]) -> int:
    if not args:
        raise CommandError(name, "Which incident? Give its number.")
    try:
        return int(args[0].lstrip("#"))
    except ValueError:
        raise CommandError(name, f"{args[0]!r} is not an incident number.") from None


def _options(name: str, args: list[str], allowed: set[str]) -> dict[str, str]:
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed or not value:
            raise CommandError(name, f"{arg!r} is not one of {', '.join(sorted(allowed))}=value.")
        options[key] = value
    return options


def parse_command(text: str) -> Command:
    """Parse the text after `/oncall`; raises CommandError with the usage to show."""
    try:
        words = shlex.split(text.strip())
    except ValueError as exc:
        raise CommandError(None, f"Could not read that: {exc}.") from None
    if not words:
        return Command("help")
    name, args = words[0].lower(), words[1:]
    if name in ("help", "who", "silences", "console"):
        if args:
            raise CommandError(name, f"`{name}` takes no arguments.")
        return Command(name)
    if name == "list":
        filters = _options(name, args, _LIST_FILTERS)
        if "tier" in filters and filters["tier"] not in {t.value for t in Tier}:
            raise CommandError(name, f"tier must be one of {', '.join(t.value for t in Tier)}.")
        if "state" in filters and filters["state"] not in _STATES:
            raise CommandError(name, f"state must be one of {', '.join(sorted(_STATES))}.")
        return Command(name, filters=filters)
    if name in ("show", "ack", "unsilence"):
        incident_id = _incident_id(name, args)
        if len(args) > 1:
            raise CommandError(name, "Too many arguments.")
        return Command(name, incident_id=incident_id)
    if name in ("resolve", "note"):
        incident_id = _incident_id(name, args)
        note = " ".join(args[1:]).strip()
        if name == "note" and not note:
            raise CommandError(name, "The note is empty.")
        return Command(name, incident_id=incident_id, text=note)
    if name == "declare":
        if not args or "=" in args[0]:
            raise CommandError(name, "Give the incident a title in quotes.")
        options = _options(name, args[1:], _DECLARE_OPTIONS)
        if options.get("tier", "L1") not in ("L0", "L1"):
            raise CommandError(name, "A declared incident is L0 or L1.")
        return Command(name, text=args[0], filters=options)
    if name == "silence":
        return _silence(args)
    if name == "rollback":
        if len(args) == 1:
            return Command(name, text=args[0])
        if len(args) == 3 and args[1] == "to" and args[2].lstrip("v").isdigit():
            return Command(name, text=args[0], filters={"version": args[2].lstrip("v")})
        raise CommandError(name, "Name the model, and optionally `to VERSION`.")
    if name == "runbook":
        if args == ["list"]:
            return Command(name, text="list")
        if len(args) >= 2 and args[0] == "run":
            params = {}
            for arg in args[2:]:
                key, sep, value = arg.partition("=")
                if not sep or not key:
                    raise CommandError(name, f"{arg!r} is not key=value.")
                params[key] = value
            return Command(name, text=args[1], filters=params)
        raise CommandError(name, "Use `runbook list` or `runbook run NAME key=value…`.")
    if name == "changes":
        return _changes(args)
    if name == "report":
        if len(args) > 1:
            raise CommandError(name, "Give one period, e.g. 7d.")
        period = args[0] if args else "7d"
        try:
            if parse_duration(period) <= timedelta(0):
                raise ValueError
        except ValueError:
            raise CommandError(name, f"{period!r} is not a period like 24h, 7d or 30d.") from None
        return Command(name, text=period)
    raise CommandError(None, f"Unknown subcommand {name!r}.")


def _changes(args: list[str]) -> Command:
    """`changes [model] [period]`: a word that reads as a period is the period."""
    model, period = None, None
    for arg in args:
        try:
            parsed = parse_duration(arg)
        except ValueError:
            parsed = None
        if parsed is not None and period is None:
            if parsed <= timedelta(0):
                raise CommandError("changes", f"{arg!r} is not a period like 24h or 7d.")
            period = parsed
        elif model is None and parsed is None:
            model = arg
        else:
            raise CommandError("changes", "Give at most a model and a period.")
    filters = {"model": model} if model else {}
    return Command("changes", filters=filters, duration=period or timedelta(hours=24))


def _silence(args: list[str]) -> Command:
    matchers: list[str] = []
    duration: timedelta | None = None
    reason: list[str] = []
    for arg in args:
        if arg.startswith("for="):
            try:
                duration = parse_duration(arg.removeprefix("for="))
            except ValueError as exc:
                raise CommandError("silence", str(exc)) from None
        elif not reason and any(op in arg for op in ("=", "!=", "=~", "!~")):
            try:
                matchers.append(str(Matcher.parse(arg)))
            except MatcherError as exc:
                raise CommandError("silence", str(exc)) from None
        else:
            reason.append(arg)
    if not matchers:
        raise CommandError("silence", "Give at least one matcher.")
    if duration is None or duration <= timedelta(0):
        raise CommandError("silence", "Say how long, e.g. for=2h.")
    return Command("silence", matchers=tuple(matchers), duration=duration, text=" ".join(reason))
