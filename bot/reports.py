"""Reports over the incident record: the scorecard (text, Markdown with a trend chart,
JSON, a weekly Slack post) and an incident's postmortem draft.

Queries read through the session they are given and write nothing; rendering is
done by the Jinja2 templates in bot/templates/reports/ and bot/templates/postmortem.md.j2.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import or_
from sqlmodel import Session, col, select

from bot import charts, store
from bot.charts import MISSING, ChartsUnavailable, render_png
from bot.domain.charts import scorecard_series, series_to_json
from bot.domain.durations import format_duration, parse_duration
from bot.domain.messages import Mrkdwn, install, md, md_join
from bot.domain.routing import RoutingConfig
from bot.domain.scorecard import (
    DEFAULT_WORKING_HOURS,
    EVENT_KINDS,
    Durations,
    Event,
    IncidentFacts,
    Satisfaction,
    Scorecard,
    WorkingHours,
    compute,
    time_to_acknowledge,
    time_to_resolve,
)
from bot.domain.speed import Speed, compute_speed
from bot.models import AlertOccurrence, Delivery, Incident, TimelineEntry
from bot.store import changes as changes_store

FORMATS = ("text", "markdown", "json")
log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- queries ----------------------------------------------------------------


def _overlapping(query: Any, since: datetime, until: datetime) -> Any:
    """Incidents open at some time in [since, until): triggered before it ends and not
    resolved before it starts (a resolved-then-reopened incident has resolved_at unset)."""
    return query.where(Incident.triggered_at < until,
                       or_(col(Incident.resolved_at).is_(None), col(Incident.resolved_at) >= since))


def load_facts(*, session: Session, since: datetime, until: datetime) -> list[IncidentFacts]:
    """Facts of every incident open at some time in [since, until), with the timeline
    events the scorecard reads. Two queries, whatever the number of incidents."""
    incidents = session.exec(_overlapping(select(Incident), since, until)
                             .order_by(col(Incident.id))).all()
    entries = session.exec(
        _overlapping(select(TimelineEntry).join(Incident, TimelineEntry.incident_id == Incident.id),
                     since, until)
        .where(col(TimelineEntry.kind).in_(EVENT_KINDS))
        .order_by(col(TimelineEntry.id))
    ).all()
    events: dict[int, list[Event]] = {}
    for entry in entries:
        events.setdefault(entry.incident_id, []).append(Event(entry.at, entry.kind, entry.detail))
    return [facts(incident, events.get(incident.id, ())) for incident in incidents]  # type: ignore[arg-type]


def facts(incident: Incident, events: Sequence[Event] = ()) -> IncidentFacts:
    return IncidentFacts(
        id=incident.id,  # type: ignore[arg-type]
        tier=incident.tier, source=incident.source, triggered_at=incident.triggered_at,
        model=incident.model, team=incident.team, severity=incident.severity,
        labels={str(k): str(v) for k, v in incident.labels.items()},
        acknowledged_at=incident.acknowledged_at, resolved_at=incident.resolved_at,
        paged=incident.paged, escalated_at=incident.escalated_at,
        escalation_paged=incident.escalation_paged, reopen_count=incident.reopen_count,
        events=tuple(events),
    )


def scorecard_for(*, session: Session, since: datetime, until: datetime, now: datetime,
                  hours: WorkingHours = DEFAULT_WORKING_HOURS,
                  routing: RoutingConfig | None = None) -> Scorecard:
    """With `routing` (change window, serving aliases, teams), the speed side too."""
    card = compute(load_facts(session=session, since=since, until=until),
                   since=since, until=until, now=now, hours=hours,
                   pulses=store.pulse_facts(session=session, since=since, until=until))
    if routing is None:
        return card
    return replace(card, speed=load_speed(session=session, since=since, until=until,
                                          routing=routing))


def load_speed(*, session: Session, since: datetime, until: datetime,
               routing: RoutingConfig) -> Speed:
    """Models shipped, change failure rate and time to restore of the shipments made in
    [since, until): every alias's whole change history (to tell a new version from one
    served before), and the incidents up to a change window past `until`."""
    window = routing.change_window
    changes = changes_store.changes_between(session=session, since=_EPOCH, until=until + window)
    incidents = load_facts(session=session, since=since, until=until + window)
    models = {c.model for c in changes}
    teams = {m: team for m in models if (team := routing.route({"model": m}).team)}
    for incident in sorted(incidents, key=lambda i: i.triggered_at):
        if incident.model and incident.team:
            teams[incident.model] = incident.team
    return compute_speed(changes, incidents, since=since, until=until, window=window,
                         serving={m: routing.serving_alias(m) for m in models},
                         teams=teams, default_alias=routing.serving_alias_default)


# --- rendering ----------------------------------------------------------------


def _duration(value: timedelta | None) -> str:
    return "—" if value is None else format_duration(value)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _satisfaction(value: Satisfaction | None) -> str:
    """The latest pulse in one line: mean of 5, answers, change from the pulse before."""
    if value is None:
        return "no pulse yet"
    if value.mean is None:
        return f"no answers yet to the pulse of {value.opened_at:%Y-%m-%d}"
    trend = ("" if value.trend is None
             else f"; {value.trend:+.2f} from the pulse before")
    return (f"{value.mean:.2f} of 5 from {value.count} answer{'s' if value.count != 1 else ''}"
            f"{trend} (pulse of {value.opened_at:%Y-%m-%d})")


def _utc(value: datetime | None) -> str:
    return "—" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _cell(value: object) -> str:
    """Text fit for one Markdown table cell or list item."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _free_text(value: object) -> str:
    """Free text a person typed (a pulse comment) as one Markdown list item: no HTML,
    no link or image syntax taking effect."""
    escaped = str(value).replace("\\", "\\\\").replace("&", "&amp;").replace(
        "<", "&lt;").replace(">", "&gt;")
    for char in "[]()!*_`#|":
        escaped = escaped.replace(char, "\\" + char)
    return escaped.replace("\r", "").replace("\n", "<br>")


@cache
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("bot", "templates"), undefined=StrictUndefined,
                      autoescape=False, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(duration=_duration, percent=_percent, utc=_utc, cell=_cell,
                       satisfaction=_satisfaction, free_text=_free_text)
    return install(env)


def report_stem(scorecard: Scorecard) -> str:
    """File name, without extension, of the report and its chart."""
    return f"scorecard-{scorecard.since:%Y%m%d}-{scorecard.until:%Y%m%d}"


def chart_title(scorecard: Scorecard) -> str:
    return f"On-call scorecard, {scorecard.since:%Y-%m-%d} to {scorecard.until:%Y-%m-%d} (UTC days)"


def write_chart(scorecard: Scorecard, path: Path) -> Path:
    """A PNG of the scorecard's series (`domain.charts.scorecard_series`)."""
    try:
        path.write_bytes(render_png(scorecard_series(scorecard), title=chart_title(scorecard)))
    except ChartsUnavailable:
        raise ValueError(f"a Markdown report draws its chart: {MISSING} "
                         "(or use --format text or json)") from None
    return path


def render(scorecard: Scorecard, format: str = "text", *, out_dir: Path | None = None) -> str:
    """The scorecard as `text`, `markdown` or `json`.

    Markdown with `out_dir` also writes the trend chart there (`report_stem` + .png)
    and links it relatively, so the report belongs in the same directory.
    """
    if format == "json":
        return json.dumps(as_dict(scorecard), indent=2) + "\n"
    if format not in FORMATS:
        raise ValueError(f"unknown report format {format!r}: use one of {', '.join(FORMATS)}")
    chart = None
    if format == "markdown" and out_dir is not None:
        chart = write_chart(scorecard, out_dir / f"{report_stem(scorecard)}.png").name
    template = "reports/scorecard.md.j2" if format == "markdown" else "reports/scorecard.txt.j2"
    return _environment().get_template(template).render(s=scorecard, chart=chart)


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _stats(value: Durations) -> dict[str, Any]:
    return {"count": value.count, "median_seconds": _seconds(value.median),
            "p90_seconds": _seconds(value.p90)}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def as_dict(s: Scorecard) -> dict[str, Any]:
    """The scorecard as JSON-ready data: durations in seconds, times in ISO 8601 UTC."""
    return {
        "window": {"since": _iso(s.since), "until": _iso(s.until), "now": _iso(s.now)},
        "working_hours": {"start": f"{s.hours.start:%H:%M}", "end": f"{s.hours.end:%H:%M}",
                          "days": sorted(s.hours.days), "timezone": s.hours.tz},
        "incidents": {"total": s.incidents, "by_tier": s.by_tier, "by_model": s.by_model,
                      "by_team": s.by_team, "by_source": s.by_source,
                      "by_severity": s.by_severity, "reopened": s.reopened},
        "mtta": _stats(s.mtta),
        "mttr": _stats(s.mttr),
        "handled_at_l0": {"count": s.handled_at_l0, "share": s.l0_share},
        "pages": {"total": len(s.pages), "outside_working_hours": s.pages_outside_hours,
                  "list": [{"incident": p.incident_id, "at": _iso(p.at), "reason": p.reason,
                            "outside_working_hours": p.outside_hours} for p in s.pages]},
        "escalations": {"total": len(s.escalations), "incidents": list(s.escalations)},
        "rollbacks": {"total": len(s.rollbacks), "succeeded": s.rollbacks_with("succeeded"),
                      "failed": s.rollbacks_with("failed"),
                      "list": [{"incident": r.incident_id, "at": _iso(r.at), "outcome": r.outcome}
                               for r in s.rollbacks]},
        "security": {"total": len(s.security), "incidents": list(s.security)},
        "availability": {a.model: {"share": a.share, "downtime_seconds": a.downtime.total_seconds()}
                         for a in s.availability},
        "satisfaction": None if s.satisfaction is None else {
            "pulse_opened_at": _iso(s.satisfaction.opened_at), "count": s.satisfaction.count,
            "mean": s.satisfaction.mean, "previous_mean": s.satisfaction.previous_mean,
            "trend": s.satisfaction.trend, "comments": list(s.satisfaction.comments)},
        "daily": [{"date": d.day.isoformat(), "incidents": d.incidents, "pages": d.pages,
                   "mtta_median_seconds": _seconds(d.mtta_median),
                   "mttr_median_seconds": _seconds(d.mttr_median)} for d in s.daily],
        **({"speed": speed_dict(s.speed)} if s.speed is not None else {}),
    }


def speed_dict(speed: Speed) -> dict[str, Any]:
    return {
        "models_shipped": {"total": len(speed.shipped), "by_model": speed.by_model,
                           "by_team": speed.by_team,
                           "by_week": {d.isoformat(): n for d, n in speed.by_week.items()},
                           "by_quarter": speed.by_quarter},
        "change_failure_rate": speed.change_failure_rate,
        "failed_changes": [{"model": f.shipment.model, "version": f.shipment.version,
                            "at": _iso(f.shipment.at), "why": f.why,
                            "time_to_restore_seconds": _seconds(f.time_to_restore)}
                           for f in speed.failed],
        "time_to_restore": _stats(speed.time_to_restore),
    }


def weekly_post(scorecard: Scorecard) -> tuple[Mrkdwn, list[dict[str, Any]]]:
    """Fallback text and Block Kit blocks for the scorecard's post in a Slack channel."""
    s = scorecard
    blocks = json.loads(_environment().get_template("reports/weekly.json.j2").render(
        s=s, tiers=md_join((md("{} {}", k, v) for k, v in s.by_tier.items()), ", "),
        models=md_join((md("{:.100} {}", k, v) for k, v in list(s.by_model.items())[:5]), ", "),
        availability=md_join((md("{:.100} {}", a.model, _percent(a.share))
                              for a in s.availability), " · ")))
    text = md("On-call scorecard {:%Y-%m-%d} to {:%Y-%m-%d}: {} incidents, {} pages",
              s.since, s.until, s.incidents, len(s.pages))
    return text, blocks


def chart_upload(scorecard: Scorecard, *, comment: Mrkdwn) -> dict[str, Any] | None:
    """The `chart` a Slack delivery carries (the outbox draws and shares it when it is
    sent), or None, said in a log line, when this process cannot draw charts. The file
    name is unique, so an attempt can tell whether an earlier one shared it."""
    if not charts.available():
        log.info("the scorecard goes to Slack without its chart: %s", MISSING)
        return None
    return {"filename": f"{report_stem(scorecard)}-{secrets.token_hex(4)}.png",
            "title": chart_title(scorecard), "comment": comment,
            "series": series_to_json(scorecard_series(scorecard))}


def report_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """[now - period, now); ValueError (fit for the user) when `period` is not a positive
    duration."""
    length = parse_duration(period)
    if length <= timedelta(0):
        raise ValueError(f"{period!r} is not a positive duration")
    return now - length, now


def slack_report(period: str = "7d", *, session: Session, now: datetime,
                 hours: WorkingHours = DEFAULT_WORKING_HOURS,
                 routing: RoutingConfig | None = None) -> tuple[str, list[dict[str, Any]]]:
    """`/oncall report [7d]`: the scorecard of the last `period`, as `weekly_post` renders it.
    Raises ValueError (message fit for the user) when `period` is not a duration."""
    since, until = report_window(period, now)
    return weekly_post(scorecard_for(session=session, since=since, until=until, now=now,
                                     hours=hours, routing=routing))


# --- postmortem -----------------------------------------------------------------


def render_postmortem(incident: Incident, timeline: Sequence[TimelineEntry],
                      alerts: Sequence[AlertOccurrence], deliveries: Sequence[Delivery], *,
                      now: datetime) -> str:
    """A Markdown postmortem draft: what the record knows, and headings for the team."""
    first_alert = min([incident.triggered_at, *(a.starts_at or a.first_seen_at for a in alerts)])
    record = facts(incident)
    return _environment().get_template("postmortem.md.j2").render(
        i=incident, timeline=timeline, alerts=alerts, deliveries=deliveries, now=now,
        first_alert=first_alert, impact=(incident.resolved_at or now) - first_alert,
        tta=time_to_acknowledge(record), ttr=time_to_resolve(record),
        diagnostics=[e for e in timeline if e.kind == "diagnostics"],
        rollbacks=[e for e in timeline if e.kind == "rollback"],
    )


def postmortem_for(incident_id: int, *, session: Session, now: datetime) -> str:
    """The postmortem draft of an incident; raises LookupError when there is none such."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise LookupError(f"There is no incident #{incident_id}.")
    alerts = session.exec(select(AlertOccurrence).where(AlertOccurrence.incident_id == incident_id)
                          .order_by(col(AlertOccurrence.id))).all()
    deliveries = session.exec(select(Delivery).where(Delivery.incident_id == incident_id)
                              .order_by(col(Delivery.id))).all()
    return render_postmortem(incident, store.timeline(incident_id, session=session), alerts,
                             deliveries, now=now)
