"""Intake's load and persist: what `domain.intake` needs to plan a group commit, and
the plan written back.

A group commit reads a statement per kind, for all its batches together: the
silences in force, the open incidents of its groups, the resolved ones that may
reopen, the occurrences of its alerts, and (only when something may resolve or fire
again) side pages and recent refires. New incidents are inserted in one flush, and
every kind of row the plan writes is written in one statement, so a group commit of
hundreds of alerts costs a handful of statements. Statements are built once with
bound parameters: building and keying one costs several times what SQLite takes to
run it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlmodel import Session, col, select

from bot.domain import intake
from bot.domain.alert import Alert
from bot.domain.incident import CHANGEABLE, DeliveryPolicy, IncidentFacts, IncidentState
from bot.domain.matchers import Matcher
from bot.domain.routing import RoutingConfig
from bot.models import AlertOccurrence, Delivery, Incident, RunbookRun, Silence, TimelineEntry
from bot.runbooks import Runbook, select_runbook
from bot.store.incidents import facts_of
from bot.store.sql import one_of


@dataclass(slots=True)
class IngestResult:
    opened: list[int] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)
    deliveries: int = 0
    handed: list[Delivery] = field(default_factory=list)  # leased to this process (see open)
    runs: int = 0  # runbook runs requested


_IN_CHUNK = 500  # bound IN-lists well below SQLite's parameter limit


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start:start + _IN_CHUNK]


_OCCURRENCE = AlertOccurrence.__table__  # type: ignore[attr-defined]
_INCIDENT = Incident.__table__  # type: ignore[attr-defined]
_ACTIVE_SILENCES = select(Silence.id, Silence.matchers, Silence.starts_at, Silence.ends_at).where(
    Silence.starts_at <= bindparam("now"), Silence.ends_at > bindparam("now"))
_LAST_ALERT = (update(_INCIDENT).where(_INCIDENT.c.id == bindparam("incident_id"))
               .values(last_alert_at=bindparam("at")))
_OPEN_BY_HASH = select(Incident).where(one_of(Incident.open_group_hash, "hashes"))
_REOPENABLE = (
    select(Incident)
    .where(one_of(Incident.group_hash, "hashes"),
           Incident.state == IncidentState.RESOLVED.value,
           col(Incident.resolved_at) >= bindparam("since"))
    .order_by(col(Incident.resolved_at))
)
_OCCURRENCE_COLUMNS = (AlertOccurrence.id, AlertOccurrence.incident_id,
                       AlertOccurrence.fingerprint, AlertOccurrence.status,
                       AlertOccurrence.starts_at, AlertOccurrence.ends_at)
# Two lists rather than one of (incident, fingerprint) pairs: SQLite answers a
# row-value IN by scanning the table, but these two by its unique index. Lists are
# `one_of` (one array parameter on PostgreSQL: one statement text for any length).
_OCCURRENCES_OF_FINGERPRINTS = select(*_OCCURRENCE_COLUMNS).where(
    one_of(AlertOccurrence.incident_id, "ids"),
    one_of(AlertOccurrence.fingerprint, "fingerprints"))
_OCCURRENCES_OF = select(*_OCCURRENCE_COLUMNS).where(one_of(AlertOccurrence.incident_id, "ids"))
_REFIRES = select(TimelineEntry.incident_id, TimelineEntry.at).where(
    one_of(TimelineEntry.incident_id, "ids"),
    col(TimelineEntry.kind).in_(intake.REFIRE_KINDS),
    TimelineEntry.at > bindparam("since"))
_TRIGGERS = select(Delivery.incident_id, Delivery.payload).where(
    one_of(Delivery.incident_id, "ids"),
    Delivery.target == "pagerduty", Delivery.action == "trigger")
_WRITE_BACK = (
    update(_OCCURRENCE)
    .where(_OCCURRENCE.c.id == bindparam("oid"))
    .values(status=bindparam("new_status"), starts_at=bindparam("new_starts"),
            ends_at=bindparam("new_ends"), last_seen_at=bindparam("seen"),
            repeats=_OCCURRENCE.c.repeats + bindparam("added"))
)


def active_silences(*, session: Session, now: datetime) -> list[intake.SilenceFacts]:
    """Silences in force at `now` (intake and `routes test` read them)."""
    rows = session.exec(_ACTIVE_SILENCES, params={"now": now}).all()  # type: ignore[call-overload]
    return [intake.SilenceFacts(id_, tuple(Matcher.parse(m) for m in matchers), starts, ends)
            for id_, matchers, starts, ends in rows]


def apply_alerts(
    batches: Sequence[Sequence[Alert]],
    *,
    session: Session,
    routing: RoutingConfig,
    policy: DeliveryPolicy,
    now: datetime,
    runbooks: Mapping[str, Runbook] | None = None,
    hand_over: timedelta | None = None,
) -> list[IngestResult]:
    """Apply each batch in order within the session's transaction; one result per batch.
    A new incident whose route (or matchers) names a diagnostics runbook gets a run.

    With `hand_over`, the pages new incidents owe are written already leased for that
    long and listed in `IngestResult.handed`: the caller's dispatcher sends them
    straight away, without claiming them first."""
    routed = intake.route(batches, routing)
    rows: dict[int, Incident] = {}
    facts = _load(routed, session=session, routing=routing, now=now, rows=rows)
    new = intake.openings(routed, facts, routing=routing, policy=policy, now=now,
                          key=lambda: uuid.uuid4().hex)
    fresh = _insert(new, session=session, now=now, rows=rows)

    def choose(name: str | None, labels: Mapping[str, str]) -> str | None:
        chosen = select_runbook(runbooks or {}, name, labels)
        return chosen.name if chosen is not None else None

    plan = intake.plan(routed, facts, fresh, routing=routing, policy=policy, now=now,
                       choose_runbook=choose)
    with session.no_autoflush:
        return _persist(plan, session=session, now=now, rows=rows, hand_over=hand_over)


def _load(routed: Sequence[Sequence[intake.Routed]], *, session: Session,
          routing: RoutingConfig, now: datetime, rows: dict[int, Incident]) -> intake.Facts:
    """Read what the plan needs, a statement per kind (chunked)."""
    silences = active_silences(session=session, now=now)
    open_: dict[str, IncidentFacts] = {}
    hashes = sorted({item.ghash for batch in routed for item in batch})
    for chunk in _chunks(hashes):
        for row in session.exec(_OPEN_BY_HASH,  # type: ignore[call-overload]
                                params={"hashes": list(chunk)}).all():
            rows[row.id] = row
            open_[row.open_group_hash] = facts_of(row)
    reopenable: dict[str, IncidentFacts] = {}
    since = intake.reopen_since(routing, now)
    for chunk in _chunks(intake.closed_groups(routed, open_)):
        for row in session.exec(_REOPENABLE, params={  # type: ignore[call-overload]
                "hashes": list(chunk), "since": since}).all():
            rows[row.id] = row
            reopenable[row.group_hash] = facts_of(row)  # the newest wins
    occurrences: dict[int, dict[str, intake.OccurrenceFacts]] = {i.id: {} for i in open_.values()}
    pairs, resolving = set(), set()
    for batch in routed:
        for item in batch:
            incident = open_.get(item.ghash)
            if incident is not None:
                pairs.add((incident.id, item.alert.fingerprint))
                if item.alert.status.value == intake.RESOLVED:
                    resolving.add(incident.id)
    # Every occurrence of an incident that may resolve (does any other still fire?)
    # or reopen; of the others, those of the alerts' fingerprints.
    whole = sorted(resolving | {i.id for i in reopenable.values()})
    for chunk in _chunks(whole):
        _add_occurrences(occurrences, session.exec(_OCCURRENCES_OF,  # type: ignore[call-overload]
                                                   params={"ids": list(chunk)}).all())
    for chunk in _chunks(sorted(p for p in pairs if p[0] not in resolving)):
        _add_occurrences(occurrences, session.exec(  # type: ignore[call-overload]
            _OCCURRENCES_OF_FINGERPRINTS, params={
                "ids": sorted({i for i, _ in chunk}),
                "fingerprints": sorted({f for _, f in chunk})}).all())
    facts = intake.Facts(open=open_, reopenable=reopenable, occurrences=occurrences,
                         silences=silences)
    refires: dict[int, list[datetime]] = {}
    flapping_since = intake.flapping_since(routing, now)
    for chunk in _chunks(intake.refire_candidates(routed, facts)):
        for incident_id, at in session.exec(_REFIRES, params={  # type: ignore[call-overload]
                "ids": list(chunk), "since": flapping_since}).all():
            refires.setdefault(incident_id, []).append(at)
    side_pages: dict[int, list[dict[str, Any]]] = {}
    for chunk in _chunks(whole):
        for incident_id, payload in session.exec(_TRIGGERS,  # type: ignore[call-overload]
                                                 params={"ids": list(chunk)}).all():
            if payload.get("routing_key_env"):
                side_pages.setdefault(incident_id, []).append(payload)
    return replace(facts, refires=refires, side_pages=side_pages)


def _add_occurrences(occurrences: dict[int, dict[str, intake.OccurrenceFacts]],
                     loaded: Any) -> None:
    for oid, incident_id, fingerprint, status, starts_at, ends_at in loaded:
        occurrences.setdefault(incident_id, {})[fingerprint] = intake.OccurrenceFacts(
            oid, status, starts_at, ends_at)


def _insert(new: Mapping[str, IncidentFacts], *, session: Session, now: datetime,
            rows: dict[int, Incident]) -> dict[str, IncidentFacts]:
    """Insert the new incidents in one flush: every row written after refers to an id."""
    inserted = {ghash: Incident(
        key=f.key, group_key=f.group_key, group_hash=f.group_hash, open_group_hash=ghash,
        title=f.title, state=f.state.value, tier=f.tier, route=f.route, team=f.team,
        runbook=f.runbook, channel=f.channel, model=f.model, version=f.version,
        environment=f.environment, severity=f.severity, source=f.source, labels=dict(f.labels),
        silence_id=f.silence_id, triggered_at=f.triggered_at, last_alert_at=now)
        for ghash, f in new.items()}
    if inserted:
        session.add_all(inserted.values())
        session.flush()
    for row in inserted.values():
        rows[row.id] = row  # type: ignore[index]
    return {ghash: replace(new[ghash], id=row.id) for ghash, row in inserted.items()}


def _persist(plan: intake.Plan, *, session: Session, now: datetime, rows: Mapping[int, Incident],
             hand_over: timedelta | None) -> list[IngestResult]:
    """Write the plan back: a statement per kind of row."""
    for incident_id, facts in plan.incidents.items():
        row = rows[incident_id]
        for name in CHANGEABLE:
            value = getattr(facts, name)
            if getattr(row, name) != value:
                setattr(row, name, value.value if isinstance(value, IncidentState) else value)
        open_hash = facts.group_hash if facts.state is not IncidentState.RESOLVED else None
        if row.open_group_hash != open_hash:
            row.open_group_hash = open_hash
    results, timeline = [], []
    for batch in plan.batches:
        result = IngestResult(opened=batch.opened, changed=batch.changed,
                              deliveries=len(batch.deliveries), runs=len(batch.runs))
        timeline += [{"incident_id": t.incident_id, "at": now, "actor": t.actor, "kind": t.kind,
                      "detail": t.detail} for t in batch.timeline]
        for owed in batch.deliveries:
            delivery = Delivery(incident_id=owed.incident_id, target=owed.target,
                                action=owed.action, payload=dict(owed.payload),
                                created_at=now, next_attempt_at=now)
            if owed.first_in_line and hand_over is not None:
                delivery.lease_until = now + hand_over
                result.handed.append(delivery)
            session.add(delivery)
        session.add_all(RunbookRun(incident_id=run.incident_id, runbook=run.runbook,
                                   purpose="diagnostics", params={}, requested_by="bot",
                                   created_at=now) for run in batch.runs)
        results.append(result)
    if timeline:
        session.execute(insert(TimelineEntry), timeline)
    new = [{"incident_id": o.incident_id, "fingerprint": o.alert.fingerprint,
            "status": o.status, "source": o.alert.source, "labels": dict(o.alert.labels),
            "annotations": dict(o.alert.annotations), "starts_at": o.starts_at,
            "ends_at": o.ends_at, "first_seen_at": now, "last_seen_at": now,
            "repeats": o.repeats} for o in plan.occurrences if o.alert is not None]
    if new:
        session.execute(insert(AlertOccurrence), new)
    changed = [{"oid": o.id, "new_status": o.status, "new_starts": o.starts_at,
                "new_ends": o.ends_at, "seen": now, "added": o.repeats}
               for o in plan.occurrences if o.id is not None]
    if changed:
        session.connection().execute(_WRITE_BACK, changed)
    if plan.heard_from:  # not through the ORM: most of these incidents change in nothing else
        session.connection().execute(_LAST_ALERT, [
            {"incident_id": incident_id, "at": now} for incident_id in plan.heard_from])
    return results
