"""Model changes: registry alias moves, as MLflow's webhooks and the bot's polls report them.

Pure: MLflow's webhook body in, a typed event out; which recorded change precedes an
incident; how a change reads in Slack (escaped through `md`).

When a change happened ("moved at"). MLflow keeps no alias history and stamps no time
on an alias, so the bot decides, once, at the first report of a move:
- by webhook: the body's `timestamp` (MLflow stamps it when it sends, right after the
  registry write), which every retry of that delivery repeats unchanged;
- by poll: the time of the poll that first saw the alias serve the new version (so at
  most one poll interval after the real move).
Whichever report comes first records the move and moves the bot's record of the alias
(compare-and-set); the later one finds the alias already at that version and records
nothing. So one move is one row, whatever reported it, on however many replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.durations import format_duration
from bot.domain.messages import Mrkdwn, md, md_join

# The webhook events the bot subscribes to: (entity, action) as MLflow sends them
# (lower case in deliveries; the create API takes the proto enum names, upper case).
EVENTS = (("model_version_alias", "created"), ("model_version_alias", "deleted"),
          ("model_version", "created"), ("model_version_tag", "set"))
_NAME_LIMIT = 256  # MLflow's own limit on model names and aliases is far below this


class EventError(ValueError):
    """A webhook body that is not one of the subscribed events; the message says why."""


@dataclass(frozen=True, slots=True)
class AliasMove:
    """`alias` of `model` now serves `version` (None: the alias was deleted), as of `at`."""

    model: str
    alias: str
    version: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ModelSeen:
    """An event that names a model without moving an alias: the bot learns the model."""

    model: str


@dataclass(frozen=True, slots=True)
class Change:
    """A recorded change, as the domain sees it."""

    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    moved_at: datetime
    author: str | None = None
    source: str = "webhook"


def _text(data: Mapping[str, object], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and key == "version":
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > _NAME_LIMIT:
        raise EventError(f"data.{key}: expected a non-empty string of at most "
                         f"{_NAME_LIMIT} characters")
    return value


def parse_event(body: object) -> AliasMove | ModelSeen | None:
    """MLflow's webhook body (`{entity, action, timestamp, data}`) as an event; None for
    an event the bot does not subscribe to. Raises EventError naming the bad field."""
    if not isinstance(body, Mapping):
        raise EventError("the body is not a JSON object")
    entity, action, data = body.get("entity"), body.get("action"), body.get("data")
    if not isinstance(entity, str) or not isinstance(action, str):
        raise EventError("entity and action: expected strings")
    if (entity, action) not in EVENTS:
        return None
    if not isinstance(data, Mapping):
        raise EventError("data: expected an object")
    model = _text(data, "name")
    assert model is not None
    if entity != "model_version_alias":
        return ModelSeen(model)
    stamp = body.get("timestamp")
    try:
        at = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise EventError("timestamp: expected an ISO 8601 time with its UTC offset")
    alias = _text(data, "alias")
    assert alias is not None
    version = _text(data, "version") if action == "created" else None
    return AliasMove(model, alias, version, at)


def preceding(changes: Iterable[Change], opened_at: datetime,
              window: timedelta) -> Change | None:
    """The latest change to a version that happened within `window` before `opened_at`
    (a deletion is not a change an incident follows from)."""
    eligible = [c for c in changes if c.to_version is not None
                and opened_at - window <= c.moved_at <= opened_at]
    return max(eligible, key=lambda c: c.moved_at, default=None)


def _minutes(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _version(version: str | None) -> str:
    return f"v{version}" if version else "(none)"


def change_note(change: Change, opened_at: datetime) -> str:
    """Plain text for the timeline: "Changed 14 min before: churn champion v6 → v7 (by alice)"."""
    note = (f"Changed {_minutes(opened_at - change.moved_at)} before: {change.model} "
            f"{change.alias} {_version(change.from_version)} → {_version(change.to_version)}")
    return note + (f" (by {change.author})" if change.author else "")


def changes_text(changes: Sequence[Change], *, now: datetime, model: str | None,
                 period: timedelta) -> Mrkdwn:
    """The answer to `/oncall changes [model] [24h]`: newest first, every value escaped."""
    scope = md(" of {:.200}", model) if model else Mrkdwn("")
    if not changes:
        return md("No model changes{} in the last {}.", scope, format_duration(period))
    lines = [md("*Model changes{} in the last {}*", scope, format_duration(period))]
    for c in changes:
        by = md(" by {:.100}", c.author) if c.author else Mrkdwn("")
        lines.append(md("• {:%Y-%m-%d %H:%M} UTC ({} ago) `{:.200}` {:.100}: {} → {}{} ({})",
                        c.moved_at, _minutes(now - c.moved_at), c.model, c.alias,
                        _version(c.from_version), _version(c.to_version), by, c.source))
    return md_join(lines)
