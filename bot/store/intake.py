"""Intake's load and persist: what `domain.intake` needs to plan a group commit, and
the plan written back.

A group commit reads a statement per kind, for all its batches together: the
silences in force, the open incidents of its groups, the resolved ones that may
reopen, the occurrences of its alerts, and (only when something may resolve or fire
again) side pages and recent refires. The reads go in rounds of statements that do
not depend on one another, each round one round trip on PostgreSQL. New incidents
are inserted in one flush, and every kind of row the plan writes is written in one
statement, so a group commit of hundreds of alerts costs a handful of statements.
Statements are built once with bound parameters: building and keying one costs
several times what SQLite takes to run it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlmodel import Session, col, select

from bot.domain import intake, intake_facts
from bot.domain.alert import Alert
from bot.domain.incident import CHANGEABLE, DeliveryPolicy, IncidentFacts, IncidentState
from bot.domain.matchers import Matcher
from bot.domain.routing import RoutingConfig
from bot.models import AlertOccurrence, Delivery, Incident, RunbookRun, Silence, TimelineEntry
from bot.runbooks import Runbook, select_runbook
from bot.store.incidents import facts_of
from bot.store.sql import one_of, read_together, write_together


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
_OPEN_BY_HASH = select(*_INCIDENT.c).where(one_of(Incident.open_group_hash, "hashes"))
_REOPENABLE = (
    select(*_INCIDENT.c)
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


def active_silences(*, session: Session, now: datetime) -> list[intake_facts.SilenceFacts]:
    """Silences in force at `now` (intake and `routes test` read them)."""
    return _silence_facts(session.exec(_ACTIVE_SILENCES,  # type: ignore[call-overload]
                                       params={"now": now}).all())


def _silence_facts(rows: Any) -> list[intake_facts.SilenceFacts]:
    return [intake_facts.SilenceFacts(id_, tuple(Matcher.parse(m) for m in matchers), starts, ends)
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
    stored: dict[int, _Stored] = {}
    facts = _load(routed, session=session, routing=routing, now=now, stored=stored)
    new = intake.openings(routed, facts, routing=routing, policy=policy, now=now,
                          key=lambda: uuid.uuid4().hex)
    fresh = _insert(new, session=session, now=now, stored=stored)

    def choose(name: str | None, labels: Mapping[str, str]) -> str | None:
        chosen = select_runbook(runbooks or {}, name, labels)
        return chosen.name if chosen is not None else None

    plan = intake.plan(routed, facts, fresh, routing=routing, policy=policy, now=now,
                       choose_runbook=choose)
    with session.no_autoflush:
        return _persist(plan, session=session, now=now, stored=stored, hand_over=hand_over)


@dataclass(frozen=True, slots=True)
class _Stored:
    """An incident as its row stands in the database, to write back only what changed."""

    facts: IncidentFacts
    open_group_hash: str | None


def _load(routed: Sequence[Sequence[intake_facts.Routed]], *, session: Session,
          routing: RoutingConfig, now: datetime, stored: dict[int, _Stored]) -> intake_facts.Facts:
    """Read what the plan needs, a statement per kind (chunked), in at most three rounds
    of reads that do not depend on one another (`read_together`: one round trip each on
    PostgreSQL): the silences, open incidents and reopen candidates; then the
    occurrences and side pages of those; then, only if something may fire again, the
    recent refires."""
    hashes = sorted({item.ghash for batch in routed for item in batch})
    # Every group that fires may reopen an incident, unless it has an open one: asked
    # for all of them at once, and those found open are left out below.
    firing = sorted(intake.closed_groups(routed, ()))
    since = intake.reopen_since(routing, now)
    reads = [(_ACTIVE_SILENCES, {"now": now})]
    reads += [(_OPEN_BY_HASH, {"hashes": list(chunk)}) for chunk in _chunks(hashes)]
    opened = len(reads)
    reads += [(_REOPENABLE, {"hashes": list(chunk), "since": since})
              for chunk in _chunks(firing)]
    found = read_together(session, reads)
    silences = _silence_facts(found[0])
    open_: dict[str, IncidentFacts] = {}
    for row in (row for rows in found[1:opened] for row in rows):
        open_[row.open_group_hash] = _keep(row, stored)
    reopenable: dict[str, IncidentFacts] = {}
    for row in (row for rows in found[opened:] for row in rows):
        if row.group_hash not in open_:
            reopenable[row.group_hash] = _keep(row, stored)  # the newest wins
    occurrences: dict[int, dict[str, intake_facts.OccurrenceFacts]] = {i.id: {} for i in open_.values()}
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
    reads = [(_OCCURRENCES_OF, {"ids": list(chunk)}) for chunk in _chunks(whole)]
    reads += [(_OCCURRENCES_OF_FINGERPRINTS, {"ids": sorted({i for i, _ in chunk}),
                                              "fingerprints": sorted({f for _, f in chunk})})
              for chunk in _chunks(sorted(p for p in pairs if p[0] not in resolving))]
    triggers = len(reads)
    reads += [(_TRIGGERS, {"ids": list(chunk)}) for chunk in _chunks(whole)]
    found = read_together(session, reads)
    for rows in found[:triggers]:
        _add_occurrences(occurrences, rows)
    side_pages: dict[int, list[dict[str, Any]]] = {}
    for incident_id, payload in (row for rows in found[triggers:] for row in rows):
        if payload.get("routing_key_env"):
            side_pages.setdefault(incident_id, []).append(payload)
    facts = intake_facts.Facts(open=open_, reopenable=reopenable, occurrences=occurrences,
                         silences=silences)
    refires: dict[int, list[datetime]] = {}
    flapping_since = intake.flapping_since(routing, now)
    reads = [(_REFIRES, {"ids": list(chunk), "since": flapping_since})
             for chunk in _chunks(intake.refire_candidates(routed, facts))]
    for incident_id, at in (row for rows in read_together(session, reads) for row in rows):
        refires.setdefault(incident_id, []).append(at)
    return replace(facts, refires=refires, side_pages=side_pages)


def _keep(row: Any, stored: dict[int, _Stored]) -> IncidentFacts:
    facts = facts_of(row)
    stored[facts.id] = _Stored(facts, row.open_group_hash)
    return facts


def _add_occurrences(occurrences: dict[int, dict[str, intake_facts.OccurrenceFacts]],
                     loaded: Any) -> None:
    for oid, incident_id, fingerprint, status, starts_at, ends_at in loaded:
        occurrences.setdefault(incident_id, {})[fingerprint] = intake_facts.OccurrenceFacts(
            oid, status, starts_at, ends_at)


def _insert(new: Mapping[str, IncidentFacts], *, session: Session, now: datetime,
            stored: dict[int, _Stored]) -> dict[str, IncidentFacts]:
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
        _keep(row, stored)
    return {ghash: replace(new[ghash], id=row.id) for ghash, row in inserted.items()}


_INSERT_TIMELINE = insert(TimelineEntry.__table__)  # type: ignore[attr-defined]
_INSERT_OCCURRENCE = insert(_OCCURRENCE)


@cache
def _update_incidents(columns: tuple[str, ...]) -> Any:
    """UPDATE incident SET these columns, by id (one statement per set of columns)."""
    return (update(_INCIDENT).where(_INCIDENT.c.id == bindparam("incident_id"))
            .values({name: bindparam(f"new_{name}") for name in columns}))


def _persist(plan: intake_facts.Plan, *, session: Session, now: datetime,
             stored: Mapping[int, _Stored], hand_over: timedelta | None) -> list[IngestResult]:
    """Write the plan back: a statement per kind of row. An incident's row is updated in
    what changed, together with the time it last heard from an alert: one statement per
    set of changed columns, executed for all the incidents it fits. New deliveries and
    runs are flushed first (a handed delivery is sent by its id); the rest, which
    nothing reads back, is written together (`write_together`)."""
    changes: dict[int, dict[str, Any]] = {}
    for incident_id, facts in plan.incidents.items():
        before, values = stored[incident_id], {}
        for name in CHANGEABLE:
            value = getattr(facts, name)
            if getattr(before.facts, name) != value:
                values[name] = value.value if isinstance(value, IncidentState) else value
        open_hash = facts.group_hash if facts.state is not IncidentState.RESOLVED else None
        if before.open_group_hash != open_hash:
            values["open_group_hash"] = open_hash
        if values:
            changes[incident_id] = values
    for incident_id in plan.heard_from:
        changes.setdefault(incident_id, {})["last_alert_at"] = now
    statements: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for incident_id, values in changes.items():
        statements.setdefault(tuple(sorted(values)), []).append(
            {"incident_id": incident_id, **{f"new_{k}": v for k, v in values.items()}})
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
    session.flush()  # deliveries (their ids: the handed ones are sent by id) and runs
    new = [{"incident_id": o.incident_id, "fingerprint": o.alert.fingerprint,
            "status": o.status, "source": o.alert.source, "labels": dict(o.alert.labels),
            "annotations": dict(o.alert.annotations), "starts_at": o.starts_at,
            "ends_at": o.ends_at, "first_seen_at": now, "last_seen_at": now,
            "repeats": o.repeats} for o in plan.occurrences if o.alert is not None]
    changed = [{"oid": o.id, "new_status": o.status, "new_starts": o.starts_at,
                "new_ends": o.ends_at, "seen": now, "added": o.repeats}
               for o in plan.occurrences if o.id is not None]
    write_together(session, [
        *((_update_incidents(columns), rows) for columns, rows in statements.items()),
        (_INSERT_TIMELINE, timeline), (_INSERT_OCCURRENCE, new), (_WRITE_BACK, changed)])
    return results
