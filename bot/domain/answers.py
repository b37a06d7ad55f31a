"""Answers to a person and posts to a channel that are not about one incident: lists,
an incident's timeline, silences, who is on call, runbooks, a rollback preview, the
shift handoff. Rendered like every Slack text, with messages' `md` (one escaping
function) and its Jinja2 templates; callers pass rows, these return Mrkdwn.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.domain.durations import format_duration
from bot.domain.messages import (
    MESSAGE_TEXT,
    Mrkdwn,
    actor_mrkdwn,
    cut,
    md,
    md_join,
    render_blocks,
)


class IncidentRow(Protocol):
    """What the texts below read of an incident (the `Incident` row has it)."""

    id: int | None
    title: str
    tier: str
    state: str
    model: str | None
    route: str
    triggered_at: datetime


class TimelineRow(Protocol):
    at: datetime
    actor: str
    kind: str
    detail: str


class SilenceRow(Protocol):
    id: int | None
    matchers: list[str]
    ends_at: datetime
    created_by: str
    comment: str


class Shift(Protocol):
    name: str
    level: int
    until: str | None
    schedule: str | None


def _age(now: datetime, then: datetime) -> str:
    return format_duration(now - then) + " ago"


def incident_list_text(incidents: Sequence[IncidentRow], now: datetime) -> Mrkdwn:
    """`/oncall list`: one line per incident."""
    return md_join(md("• *#{}* {} {} · {:.100} · {:.150} · opened {}", i.id, i.tier, i.state,
                      i.model or "—", i.title, _age(now, i.triggered_at)) for i in incidents)


def incident_detail_text(incident: IncidentRow, entries: Sequence[TimelineRow],
                         now: datetime) -> Mrkdwn:
    """`/oncall show ID`: the incident and the last 30 entries of its timeline."""
    header = md("*#{} {:.300}*\n{} · {} · model {:.100} · route {} · opened {}", incident.id,
                incident.title, incident.tier, incident.state, incident.model or "—",
                incident.route, _age(now, incident.triggered_at))
    lines = [md("• {:%Y-%m-%d %H:%M:%S} {} by {}: {:.300}", e.at, e.kind, actor_mrkdwn(e.actor),
                e.detail) for e in entries[-30:]]
    return md("{}\n*Timeline*\n{}", header, md_join(lines))


def silence_list_text(silences: Sequence[SilenceRow], now: datetime) -> Mrkdwn:
    """`/oncall silences`: one line per silence."""
    return md_join(md("• *#{}* {:.300} · ends in {} · by {}{}", s.id, " ".join(s.matchers),
                      format_duration(s.ends_at - now), actor_mrkdwn(s.created_by),
                      md(" · {:.200}", s.comment) if s.comment else "") for s in silences)


def silence_created_text(silence: SilenceRow) -> Mrkdwn:
    return md("Silence #{} until {:%Y-%m-%d %H:%M} UTC: {:.1000}", silence.id, silence.ends_at,
              " ".join(silence.matchers))


def silence_ended_text(silence: SilenceRow) -> Mrkdwn:
    """The channel post when a silence runs out."""
    return md("Silence #{} has ended: {:.1000} (set by {}{}). Alerts page again.", silence.id,
              " ".join(silence.matchers), silence.created_by,
              md(": {:.500}", silence.comment) if silence.comment else "")


def on_call_text(shifts: Sequence[Shift]) -> Mrkdwn:
    """`/oncall who`: who is on call now, by level."""
    lines = [md("• Level {}: *{:.200}*{}{}", s.level, s.name,
                md(" ({:.200})", s.schedule) if s.schedule else "",
                md(" until {}", s.until) if s.until else " (always on call)") for s in shifts]
    return md("*On call now:*\n{}", md_join(lines))


def handoff_digest_text(now: datetime, during: Sequence[IncidentRow],
                        still_open: Sequence[IncidentRow],
                        on_call: Sequence[Shift] | str | None) -> Mrkdwn:
    """The shift handoff post: the last 24 hours, what is still open, and who is on call
    (`on_call` is the shifts, why they are unknown, or None when PagerDuty is not asked)."""
    lines = [md("*Shift handoff* — {:%Y-%m-%d %H:%M} UTC", now),
             md("*{} incident(s) in the last 24h*", len(during))]
    lines += [md("• #{} {} {} · {:.100} · {:.150}", i.id, i.tier, i.state, i.model or "—",
                 i.title) for i in during]
    lines.append(md("*Still open: {}*", len(still_open)))
    lines += [md("• #{} {} {} · {:.150}", i.id, i.tier, i.state, i.title) for i in still_open]
    if isinstance(on_call, str):
        lines.append(md("*On call now:* unknown ({:.300})", on_call))
    elif on_call is not None:
        lines.append(md("*On call now:* {}", md_join(
            (md("{:.100} (level {})", s.name, s.level) for s in on_call), ", ")
            if on_call else "nobody, according to PagerDuty"))
    return md_join(lines)


class RunbookRow(Protocol):
    name: str
    description: str
    changes_production: bool


def runbook_list_text(runbooks: Iterable[RunbookRow]) -> Mrkdwn:
    """`/oncall runbook list`: one line per runbook (empty when none is loaded)."""
    return md_join(md("• `{}`{}: {}", r.name,
                      Mrkdwn(" (changes production)") if r.changes_production else "",
                      r.description.strip()) for r in runbooks)


@dataclass(frozen=True, slots=True)
class RollbackView:
    """What a rollback preview shows; every value came from outside (the model name,
    MLflow's answers, labels), so each is escaped and none becomes a link."""

    confirmation_id: str
    model: str
    alias: str
    current: str
    target: str
    runbook: str
    steps: list[tuple[str, str]]  # (name, kind)
    source: str | None  # where the target version came from, when MLflow says
    minutes: int  # how long Confirm works


def rollback_preview(view: RollbackView) -> tuple[Mrkdwn, list[dict[str, Any]]]:
    """The preview's text and blocks, with Confirm and Cancel buttons carrying only the
    confirmation's id."""
    steps = md_join(md("{}. `{}` ({})", n, name, kind)
                    for n, (name, kind) in enumerate(view.steps, 1))
    text = md("*Roll back {}@{}: v{} → v{}*{}\nRunbook `{}` will run:\n{}\nConfirm within {} "
              "minutes.", view.model, view.alias, view.current, view.target,
              md(" ({})", view.source) if view.source else Mrkdwn(""), view.runbook, steps,
              view.minutes)
    return cut(text, MESSAGE_TEXT), render_blocks("slack/rollback_preview.json.j2", v=view,
                                                  text=text)
