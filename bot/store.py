"""Queries and writes over the incident record; every function takes `session=`.

`apply_alerts` is the heart of intake: in the caller's transaction it groups
alerts into incidents, moves their states, writes the timeline and enqueues in
the outbox what the change owes PagerDuty and Slack.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, and_, bindparam, case, func, insert, literal_column, or_, true, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from bot.domain.alert import Alert, AlertStatus
from bot.domain.delivery import WAITS, PendingPage, failure_notice
from bot.domain.durations import format_duration
from bot.domain.escalation import flapping
from bot.domain.incident import (
    IncidentState,
    Owed,
    group_hash,
    group_key,
    owed_for_change,
)
from bot.domain.matchers import Matcher, match_all
from bot.domain.messages import MESSAGE_TEXT, cut, shorten, thread_reply
from bot.domain.pages import trigger_payload
from bot.domain.routing import Route, RoutingConfig, Tier
from bot.models import (
    AlertOccurrence,
    Delivery,
    Incident,
    RunbookRun,
    Silence,
    TimelineEntry,
)
from bot.runbooks import Runbook, select_runbook

OPEN_STATES = (IncidentState.TRIGGERED.value, IncidentState.ACKNOWLEDGED.value)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Which outside systems are configured; nothing is owed to one that is not."""

    slack: bool
    pagerduty: bool
    default_channel: str
    pagerduty_notes: bool = False  # REST API configured: diagnostics go on the page as a note


@dataclass(slots=True)
class IngestResult:
    opened: list[int] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)
    deliveries: int = 0
    handed: list[Delivery] = field(default_factory=list)  # leased to this process (see open)
    runs: int = 0  # runbook runs requested


# Statements run for every webhook or delivery are built once, with bound parameters:
# building and keying a statement costs several times what SQLite takes to run it.
_ACTIVE_SILENCES = select(Silence.id, Silence.matchers).where(
    Silence.starts_at <= bindparam("now"), Silence.ends_at > bindparam("now"))


def active_silences(*, session: Session, now: datetime) -> list[tuple[int, tuple[Matcher, ...]]]:
    rows = session.exec(_ACTIVE_SILENCES, params={"now": now}).all()  # type: ignore[call-overload]
    return [(id_, tuple(Matcher.parse(m) for m in matchers)) for id_, matchers in rows]


def add_timeline(
    incident: Incident, kind: str, detail: str, *, session: Session, actor: str, now: datetime
) -> None:
    session.add(
        TimelineEntry(incident_id=incident.id, at=now, actor=actor, kind=kind, detail=detail)
    )


def owe(
    incident: Incident,
    change: str,
    *,
    session: Session,
    policy: DeliveryPolicy,
    now: datetime,
    reply: str | None = None,
    from_pager: bool = False,
) -> list[Delivery]:
    """Enqueue what `change` owes; returns the deliveries written."""
    tier = Tier(incident.tier)
    owed = owed_for_change(
        change,
        pages=tier.pages and incident.silence_id is None,
        posts=tier.posts and incident.silence_id is None,
        paged_before=incident.paged,
        reply=reply is not None,
        from_pager=from_pager,
    )
    written = []
    for item in owed:
        if item.target == "pagerduty" and not policy.pagerduty:
            if item.action == "trigger":
                add_timeline(incident, "page_skipped", "not paged: PagerDuty is not configured",
                             session=session, actor="bot", now=now)
            continue
        if item.target == "slack" and not policy.slack:
            continue
        if item.target == "pagerduty" and item.action == "trigger":
            incident.paged = True
        written.append(Delivery(
            incident_id=incident.id,  # type: ignore[arg-type]
            target=item.target,
            action=item.action,
            payload=_payload(incident, item, reply),
            created_at=now,
            next_attempt_at=now,
        ))
        session.add(written[-1])
    return written


def _payload(incident: Incident, item: Owed, reply: str | None) -> dict[str, Any]:
    if item.target == "pagerduty":
        body: dict[str, Any] = {"dedup_key": incident.key}
        if item.action == "trigger":
            body["payload"] = trigger_payload(
                title=incident.title,
                severity=incident.severity,
                model=incident.model,
                environment=incident.environment,
                alertname=incident.labels.get("alertname", ""),
                incident_id=incident.id,  # type: ignore[arg-type]
                labels=incident.labels,
                source=incident.source,
            )
        return body
    if item.action == "reply":  # escaped here unless built with md, and cut to Slack's limit
        return {"text": cut(reply or "", MESSAGE_TEXT)}
    return {}


def _silence_for(alert: Alert, silences: Sequence[tuple[int, tuple[Matcher, ...]]]) -> int | None:
    for silence_id, matchers in silences:
        if match_all(matchers, alert.labels):
            return silence_id
    return None


def _describe(alert: Alert) -> str:
    """The title of an alert; a label value is cut to 100 characters, so an overlong one
    cannot push the summary out of what Slack shows."""
    who = " ".join(
        f"{name}={shorten(value, 100)}"
        for name, value in (("model", alert.model), ("version", alert.version),
                            ("env", alert.environment))
        if value
    )
    return f"{shorten(alert.alertname or 'alert', 100)} {who}".strip() + f": {alert.summary}"


_IN_CHUNK = 500  # bound IN-lists well below SQLite's parameter limit


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start:start + _IN_CHUNK]


@dataclass(frozen=True, slots=True)
class _Planned:
    alert: Alert
    route: Route
    key: str
    ghash: str


@dataclass(slots=True)
class _Occurrence:
    """What intake needs of an alert occurrence: read as plain columns and written back
    in bulk when the batch is done, because repeats (most alerts) change only counters."""

    id: int | None  # None: new in this transaction
    fingerprint: str
    status: str
    starts_at: datetime | None
    ends_at: datetime | None = None
    repeats: int = 0  # added in this transaction
    touched: bool = False
    alert: Alert | None = None  # the alert a new occurrence is inserted from


_OCCURRENCE = AlertOccurrence.__table__  # type: ignore[attr-defined]
_DELIVERY = Delivery.__table__  # type: ignore[attr-defined]
_INCIDENT = Incident.__table__  # type: ignore[attr-defined]
_LAST_ALERT = (update(_INCIDENT).where(_INCIDENT.c.id == bindparam("incident_id"))
               .values(last_alert_at=bindparam("at")))
_OPEN_BY_HASH = select(Incident).where(
    col(Incident.open_group_hash).in_(bindparam("hashes", expanding=True)))
_REOPENABLE = (
    select(Incident)
    .where(col(Incident.group_hash).in_(bindparam("hashes", expanding=True)),
           Incident.state == IncidentState.RESOLVED.value,
           col(Incident.resolved_at) >= bindparam("since"))
    .order_by(col(Incident.resolved_at))
)
_OCCURRENCE_COLUMNS = (AlertOccurrence.id, AlertOccurrence.incident_id,
                       AlertOccurrence.fingerprint, AlertOccurrence.status,
                       AlertOccurrence.starts_at, AlertOccurrence.ends_at)
# Two IN-lists rather than one of (incident, fingerprint) pairs: SQLite answers a
# row-value IN by scanning the table, but these two by its unique index.
_OCCURRENCES_OF_FINGERPRINTS = select(*_OCCURRENCE_COLUMNS).where(
    col(AlertOccurrence.incident_id).in_(bindparam("ids", expanding=True)),
    col(AlertOccurrence.fingerprint).in_(bindparam("fingerprints", expanding=True)))
_OCCURRENCES_OF = select(*_OCCURRENCE_COLUMNS).where(
    col(AlertOccurrence.incident_id).in_(bindparam("ids", expanding=True)))
_WRITE_BACK = (
    update(_OCCURRENCE)
    .where(_OCCURRENCE.c.id == bindparam("oid"))
    .values(status=bindparam("new_status"), starts_at=bindparam("new_starts"),
            ends_at=bindparam("new_ends"), last_seen_at=bindparam("seen"),
            repeats=_OCCURRENCE.c.repeats + bindparam("added"))
)


class _Batch:
    """Applies batches of alerts inside the caller's transaction.

    Everything a batch reads is read up front, a statement per kind for all the
    batches together: the open incidents of their groups, the resolved ones that
    may reopen, and the occurrences of their alerts. New incidents are inserted
    together in one flush, and occurrences are written back in bulk at the end,
    so a group commit of hundreds of alerts costs a handful of statements.
    """

    def __init__(self, session: Session, routing: RoutingConfig, policy: DeliveryPolicy,
                 now: datetime, runbooks: Mapping[str, Runbook],
                 hand_over: timedelta | None) -> None:
        self.session = session
        self.hand_over = hand_over
        self.routing = routing
        self.runbooks = runbooks
        self.policy = policy
        self.now = now
        self.silences = active_silences(session=session, now=now)
        self.open_by_hash: dict[str, Incident | None] = {}
        self.reopenable_by_hash: dict[str, Incident] = {}
        self.fresh: dict[str, Incident] = {}  # inserted up front, opened by their first alert
        self.occurrences: dict[int, dict[str, _Occurrence]] = {}
        self.complete: set[int] = set()  # incidents whose every occurrence is loaded
        self.heard_from: set[int] = set()  # incidents a firing alert came in for
        self.reopened: set[int] = set()
        self.resolved_here: dict[str, Incident] = {}  # not yet flushed, so not queryable
        self.result = IngestResult()

    def timeline(self, incident: Incident, kind: str, detail: str, actor: str) -> None:
        add_timeline(incident, kind, detail, session=self.session, actor=actor, now=self.now)

    def owe(self, incident: Incident, change: str, reply: str | None = None) -> list[Delivery]:
        self.result.changed.add(incident.id)  # type: ignore[arg-type]
        return owe(incident, change, session=self.session, policy=self.policy, now=self.now,
                   reply=reply)

    def plan(self, alerts: Sequence[Alert]) -> list[_Planned]:
        planned = []
        for alert in alerts:
            route = self.routing.route(alert.labels)
            key = group_key(alert.labels, route.group_by)
            planned.append(_Planned(alert, route, key, group_hash(key)))
        return planned

    def prefetch(self, planned: Sequence[_Planned]) -> None:
        hashes = sorted({p.ghash for p in planned})
        for ghash in hashes:
            self.open_by_hash[ghash] = None
        for chunk in _chunks(hashes):
            for incident in self.session.exec(_OPEN_BY_HASH,  # type: ignore[call-overload]
                                              params={"hashes": list(chunk)}).all():
                self.open_by_hash[incident.open_group_hash] = incident
        pairs, resolving = set(), set()
        for p in planned:
            incident = self.open_by_hash[p.ghash]
            if incident is not None:
                pairs.add((incident.id, p.alert.fingerprint))
                if p.alert.status is AlertStatus.RESOLVED:
                    resolving.add(incident.id)
        for incident in self.open_by_hash.values():
            if incident is not None:
                self.occurrences[incident.id] = {}  # type: ignore[index]
        self.load_occurrences(sorted(resolving))  # a resolve asks whether any other still fires
        self.load_pairs(sorted(p for p in pairs if p[0] not in resolving))

    def _add_loaded(self, rows: Any) -> None:
        for oid, incident_id, fingerprint, status, starts_at, ends_at in rows:
            known = self.occurrences.setdefault(incident_id, {})
            if fingerprint not in known:  # what this transaction changed wins
                known[fingerprint] = _Occurrence(oid, fingerprint, status, starts_at, ends_at)

    def load_pairs(self, pairs: Sequence[tuple[int, str]]) -> None:
        """Load these (incident, fingerprint) occurrences (and any other of those
        incidents that happens to share one of the fingerprints: harmless extras)."""
        for chunk in _chunks(pairs):
            self._add_loaded(self.session.exec(_OCCURRENCES_OF_FINGERPRINTS, params={  # type: ignore[call-overload]
                "ids": sorted({i for i, _ in chunk}),
                "fingerprints": sorted({f for _, f in chunk})}).all())

    def load_occurrences(self, incident_ids: Sequence[int]) -> None:
        for incident_id in incident_ids:
            self.occurrences.setdefault(incident_id, {})
            self.complete.add(incident_id)
        for chunk in _chunks(incident_ids):
            self._add_loaded(self.session.exec(_OCCURRENCES_OF,  # type: ignore[call-overload]
                                               params={"ids": list(chunk)}).all())

    def prepare_new_groups(self, plans: Sequence[Sequence[_Planned]]) -> None:
        """Find, before applying anything, the groups whose first firing alert finds
        neither an open incident nor one to reopen: exactly those open a new incident.
        Their incidents are inserted in one flush, since every row written after
        refers to an incident's id."""
        first_firing: dict[str, _Planned] = {}
        for plan in plans:
            for planned in plan:
                if planned.alert.status is AlertStatus.FIRING:
                    first_firing.setdefault(planned.ghash, planned)
        closed = [ghash for ghash in first_firing if self.open_by_hash[ghash] is None]
        since = self.now - self.routing.reopen_window
        for chunk in _chunks(closed):
            for incident in self.session.exec(_REOPENABLE, params={  # type: ignore[call-overload]
                    "hashes": list(chunk), "since": since}).all():
                self.reopenable_by_hash[incident.group_hash] = incident  # the newest wins
        for ghash in closed:
            if ghash not in self.reopenable_by_hash:
                self.fresh[ghash] = self.new_incident(first_firing[ghash])
        if self.fresh:
            self.session.add_all(self.fresh.values())
            self.session.flush()

    def apply(self, batches: Sequence[Sequence[Alert]]) -> list[IngestResult]:
        plans = [self.plan(alerts) for alerts in batches]
        self.prefetch([p for plan in plans for p in plan])
        self.prepare_new_groups(plans)
        results = []
        with self.session.no_autoflush:
            owed_before = self.owed()
            for plan in plans:
                self.result = IngestResult()
                for planned in plan:
                    incident = self.open_by_hash[planned.ghash]
                    if planned.alert.status is AlertStatus.FIRING:
                        self.firing(planned, incident)
                    elif incident is not None:
                        self.resolved(planned.alert, incident)
                owed = self.owed()
                self.result.deliveries, owed_before = owed - owed_before, owed
                results.append(self.result)
            self.write_occurrences()
        return results

    def owed(self) -> int:
        """Deliveries added so far (nothing is flushed while batches apply): counted here,
        whatever path wrote them, so that none goes without waking the dispatcher."""
        return sum(1 for item in self.session.new if isinstance(item, Delivery))

    def firing(self, planned: _Planned, incident: Incident | None) -> None:
        alert = planned.alert
        if incident is None:
            incident = self.reopenable(planned.ghash)
            if incident is not None:
                self.reopen(incident, planned.ghash, alert)
            else:
                incident = self.open(planned)
        known = self.occurrences[incident.id]  # type: ignore[index]
        occurrence = known.get(alert.fingerprint)
        self.heard_from.add(incident.id)  # type: ignore[arg-type]
        if occurrence is None:
            known[alert.fingerprint] = _Occurrence(None, alert.fingerprint, alert.status.value,
                                                   alert.starts_at, alert.ends_at, alert=alert)
            incident.alert_count += 1
            if incident.alert_count > 1:
                self.timeline(incident, "alert_joined", _describe(alert), alert.source)
                self.owe(incident, "joined",
                         reply=thread_reply("joined", alert=_describe(alert)))
        elif occurrence.status == AlertStatus.RESOLVED.value:
            occurrence.status = AlertStatus.FIRING.value
            occurrence.starts_at = alert.starts_at or occurrence.starts_at
            occurrence.ends_at = None
            occurrence.touched = True
            if incident.id not in self.reopened:
                self.timeline(incident, "alert_refired", _describe(alert), alert.source)
                self.owe(incident, "refired",
                         reply=thread_reply("refired", alert=_describe(alert)))
            self.promote_if_flapping(incident)
        else:
            occurrence.repeats += 1
            occurrence.touched = True

    def promote_if_flapping(self, incident: Incident) -> None:
        """An L0 that keeps firing again is not going away: page a human."""
        if incident.tier != Tier.L0.value or incident.silence_id is not None:
            return
        policy = self.routing.escalation
        since = self.now - policy.flapping_window
        refires = list(self.session.exec(select(TimelineEntry.at).where(
            TimelineEntry.incident_id == incident.id,
            col(TimelineEntry.kind).in_(["alert_refired", "reopened"]),
            TimelineEntry.at > since)).all())
        refires += [e.at for e in self.session.new
                    if isinstance(e, TimelineEntry) and e.incident_id == incident.id
                    and e.kind in ("alert_refired", "reopened")]
        if flapping(refires, policy, self.now):
            promote(incident, f"fired again {len(refires)} times within "
                    f"{format_duration(policy.flapping_window)} (flapping)",
                    session=self.session, policy=self.policy, now=self.now)

    def write_occurrences(self) -> None:
        """Write back the occurrences, and the incidents' last_alert_at, in bulk."""
        new, changed = [], []
        for incident_id, known in self.occurrences.items():
            for occurrence in known.values():
                if occurrence.alert is not None:
                    new.append(self.new_occurrence_row(incident_id, occurrence))
                elif occurrence.touched:
                    changed.append({"oid": occurrence.id, "new_status": occurrence.status,
                                    "new_starts": occurrence.starts_at,
                                    "new_ends": occurrence.ends_at, "seen": self.now,
                                    "added": occurrence.repeats})
        if new:
            self.session.execute(insert(AlertOccurrence), new)
        if changed:
            self.session.connection().execute(_WRITE_BACK, changed)
        if self.heard_from:  # not through the ORM: most of these incidents change in nothing else
            self.session.connection().execute(_LAST_ALERT, [
                {"incident_id": incident_id, "at": self.now} for incident_id in self.heard_from])

    def new_occurrence_row(self, incident_id: int, occurrence: _Occurrence) -> dict[str, Any]:
        alert = occurrence.alert
        assert alert is not None
        return {"incident_id": incident_id, "fingerprint": alert.fingerprint,
                "status": occurrence.status, "source": alert.source,
                "labels": dict(alert.labels), "annotations": dict(alert.annotations),
                "starts_at": occurrence.starts_at, "ends_at": occurrence.ends_at,
                "first_seen_at": self.now, "last_seen_at": self.now,
                "repeats": occurrence.repeats}

    def reopenable(self, ghash: str) -> Incident | None:
        if ghash in self.resolved_here:
            return self.resolved_here[ghash]
        return self.reopenable_by_hash.pop(ghash, None)

    def new_incident(self, planned: _Planned) -> Incident:
        alert, route = planned.alert, planned.route
        return Incident(
            key=uuid.uuid4().hex,
            group_key=planned.key,
            group_hash=planned.ghash,
            open_group_hash=planned.ghash,
            title=_describe(alert),
            state=IncidentState.TRIGGERED.value,
            tier=route.tier.value,
            route=route.name,
            team=route.team,
            runbook=route.runbook,
            channel=route.channel or self.policy.default_channel,
            model=alert.model,
            version=alert.version,
            environment=alert.environment,
            severity=alert.severity or None,
            source=alert.source,
            labels=dict(alert.labels),
            silence_id=_silence_for(alert, self.silences),
            triggered_at=self.now,
            last_alert_at=self.now,
        )

    def open(self, planned: _Planned) -> Incident:
        """Open the incident `prepare_new_groups` inserted for this alert's group."""
        alert, route = planned.alert, planned.route
        incident = self.fresh.pop(planned.ghash)
        silence_id = incident.silence_id
        self.open_by_hash[planned.ghash] = incident
        self.occurrences[incident.id] = {}  # type: ignore[index]
        self.complete.add(incident.id)  # type: ignore[arg-type]
        self.result.opened.append(incident.id)  # type: ignore[arg-type]
        self.timeline(incident, "opened",
                      f"{route.tier.value} via route {route.name!r}: {incident.title}",
                      alert.source)
        if silence_id is not None:
            self.timeline(incident, "silenced",
                          f"matched silence #{silence_id}: recorded, not paged", "bot")
        for delivery in self.owe(incident, "opened"):
            # A new incident's page is first in line for its incident: nothing can
            # be owed before it, so it can go out the moment this commits.
            if delivery.target == "pagerduty" and self.hand_over is not None:
                delivery.lease_until = self.now + self.hand_over
                self.result.handed.append(delivery)
        if silence_id is None and route.tier.posts:
            runbook = select_runbook(self.runbooks, route.runbook, alert.labels)
            if runbook is not None:
                request_run(incident, runbook.name, "diagnostics", session=self.session,
                            now=self.now, requested_by="bot", flush=False)
                self.result.runs += 1
        return incident

    def reopen(self, incident: Incident, ghash: str, alert: Alert) -> None:
        incident.state = IncidentState.TRIGGERED.value
        incident.open_group_hash = ghash
        incident.resolved_at = None
        incident.resolved_by = None
        incident.acknowledged_at = None
        incident.acknowledged_by = None
        incident.reopen_count += 1
        self.open_by_hash[ghash] = incident
        self.resolved_here.pop(ghash, None)
        self.reopened.add(incident.id)  # type: ignore[arg-type]
        if incident.id not in self.complete:
            self.load_occurrences([incident.id])  # type: ignore[list-item]
        self.timeline(incident, "reopened",
                      f"fired again within the reopen window: {_describe(alert)}", alert.source)
        self.owe(incident, "reopened", reply=thread_reply("reopened", alert=_describe(alert)))
        self.promote_if_flapping(incident)

    def resolved(self, alert: Alert, incident: Incident) -> None:
        if incident.id not in self.complete:
            self.load_occurrences([incident.id])  # type: ignore[list-item]
        known = self.occurrences[incident.id]  # type: ignore[index]
        occurrence = known.get(alert.fingerprint)
        if occurrence is None or occurrence.status == AlertStatus.RESOLVED.value:
            return
        occurrence.status = AlertStatus.RESOLVED.value
        occurrence.ends_at = alert.ends_at or self.now
        occurrence.touched = True
        if any(o.status == AlertStatus.FIRING.value for o in known.values()):
            self.timeline(incident, "alert_resolved", _describe(alert), alert.source)
            return
        resolve(incident, session=self.session, policy=self.policy, now=self.now,
                actor=alert.source, detail="all alerts resolved")
        self.result.changed.add(incident.id)  # type: ignore[arg-type]
        self.open_by_hash[incident.group_hash] = None
        self.resolved_here[incident.group_hash] = incident


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
    return _Batch(session, routing, policy, now, runbooks or {}, hand_over).apply(batches)


def request_run(incident: Incident | None, runbook: str, purpose: str, *, session: Session,
                now: datetime, requested_by: str, params: dict[str, Any] | None = None,
                flush: bool = True) -> RunbookRun:
    """Ask for a runbook run; a worker leases and runs it after this transaction commits.
    `flush=False` leaves the id unassigned until the caller's next flush."""
    run = RunbookRun(incident_id=incident.id if incident else None, runbook=runbook,
                     purpose=purpose, params=params or {}, requested_by=requested_by,
                     created_at=now)
    session.add(run)
    if flush:
        session.flush()
    return run


def resolve(
    incident: Incident, *, session: Session, policy: DeliveryPolicy, now: datetime, actor: str,
    detail: str, reply: str | None = None, from_pager: bool = False,
) -> None:
    incident.state = IncidentState.RESOLVED.value
    incident.open_group_hash = None
    incident.resolved_at = now
    incident.resolved_by = actor
    add_timeline(incident, "resolved", detail, session=session, actor=actor, now=now)
    owe(incident, "resolved", session=session, policy=policy, now=now, reply=reply,
        from_pager=from_pager)
    for side_page in side_pages(incident, session=session):
        session.add(Delivery(
            incident_id=incident.id, target="pagerduty", action="resolve",  # type: ignore[arg-type]
            payload={k: side_page[k] for k in ("dedup_key", "routing_key_env")},
            created_at=now, next_attempt_at=now))


def promote(incident: Incident, reason: str, *, session: Session, policy: DeliveryPolicy,
            now: datetime) -> None:
    """L0 → L1: the bot could not make it go away; page a human, and say why."""
    incident.tier = Tier.L1.value
    add_timeline(incident, "promoted", f"L0 → L1: {reason}", session=session, actor="bot",
                 now=now)
    owe(incident, "promoted", session=session, policy=policy, now=now,
        reply=thread_reply("promoted", reason=reason))


def side_page(incident: Incident, suffix: str, routing_key_env: str,
              trigger: dict[str, Any]) -> dict[str, Any]:
    """A page to another PagerDuty service (a model team for L2, the escalation service
    for an unacknowledged L1). Only the name of the variable holding that service's key
    is stored; the adapter reads the key when it sends."""
    return {"dedup_key": f"{incident.key}-{suffix}", "routing_key_env": routing_key_env,
            "payload": trigger}


def side_pages(incident: Incident, *, session: Session) -> list[dict[str, Any]]:
    """Side pages sent for an incident, so that resolving it resolves them too."""
    triggers = session.exec(select(Delivery.payload).where(
        Delivery.incident_id == incident.id, Delivery.target == "pagerduty",
        Delivery.action == "trigger")).all()
    return [p for p in triggers if p.get("routing_key_env")]


# --- outbox -----------------------------------------------------------------


# The outbox's targets in the order they are claimed: pages first, since a human
# waiting to be woken matters more than a note or a Slack edit.
TARGETS = ("pagerduty", "pagerduty_rest", "slack")
_PRIOR = aliased(Delivery)
# `state = 'pending'` written as a literal: only then may the database use the
# partial index ix_delivery_pending, whose predicate it is.
_IS_PENDING = Delivery.state == literal_column("'pending'")


def _waits_for_prior(target: str) -> Any:
    """`delivery.WAITS` for one target as SQL: true when an earlier pending delivery
    holds this one back (see `delivery.may_go`, the same rule over rows)."""
    posted = select(Incident.id).where(Incident.id == Delivery.incident_id,
                                       col(Incident.slack_ts).is_not(None)
                                       ).correlate(Delivery).exists()
    rules = []
    for rule in WAITS:
        if rule.target != target:
            continue
        terms = [true()]
        if rule.later is not None:
            terms.append(Delivery.action == rule.later)
        if rule.earlier is not None:
            terms.append(_PRIOR.action == rule.earlier)
        if rule.until_posted:
            terms.append(~posted)
        rules.append(and_(*terms))
    if not rules:
        return None
    return select(_PRIOR.id).where(
        _PRIOR.incident_id == Delivery.incident_id,
        _PRIOR.target == Delivery.target,
        _PRIOR.state == "pending",
        _PRIOR.id < Delivery.id,
        or_(*rules),
    ).exists()


def _due(target: str) -> Any:
    held_back = _waits_for_prior(target)
    return (
        select(Delivery)
        .where(
            Delivery.state == "pending",
            Delivery.target == target,
            Delivery.next_attempt_at <= bindparam("now"),
            (col(Delivery.lease_until).is_(None)) | (col(Delivery.lease_until) < bindparam("now")),
            *([] if held_back is None else [~held_back]),
        )
        .order_by(col(Delivery.id))
        .limit(bindparam("limit"))
    )


_DUE = {target: _due(target) for target in TARGETS}
_LEASE = (
    update(_DELIVERY)
    .where(
        _DELIVERY.c.id.in_(bindparam("ids", expanding=True)),
        _DELIVERY.c.state == "pending",
        _DELIVERY.c.lease_until.is_(None) | (_DELIVERY.c.lease_until < bindparam("now")),
    )
    .values(lease_until=bindparam("until"),
            first_attempt_at=func.coalesce(_DELIVERY.c.first_attempt_at, bindparam("now")))
    .returning(_DELIVERY.c.id)
)


def due_deliveries(
    *, session: Session, now: datetime, limit: int, held: Sequence[str] = (),
    caps: Mapping[str, int] | None = None,
) -> list[Delivery]:
    """The due deliveries that no earlier pending one of their incident holds back.

    Order is kept only where it matters (`delivery.WAITS`): a page waits for the
    incident's earlier pages (a trigger before its resolve), a Slack update for
    the post before it, a thread reply for the post it goes under. Each
    target's queue is read in id order (ix_delivery_queue) up to the limit, so a
    backlog costs a claim nothing. `caps` bounds what one target may take of
    `limit`. A read: the caller leases what it wants with `lease_deliveries`, so
    finding nothing due takes no write lock.
    """
    due: list[Delivery] = []
    for target in TARGETS:
        wanted = min(limit - len(due), (caps or {}).get(target, limit))
        if target not in held and wanted > 0:
            due += session.exec(_DUE[target], params={  # type: ignore[call-overload]
                "now": now, "limit": wanted}).all()
    return due


def lease_deliveries(
    deliveries: Sequence[Delivery], *, session: Session, now: datetime, lease: timedelta,
) -> list[Delivery]:
    """Lease those of `deliveries` still pending and unleased (another replica may have
    taken some since they were read); returns the ones this caller now holds."""
    if not deliveries:
        return []
    taken = set(session.connection().execute(_LEASE, {
        "ids": [d.id for d in deliveries], "now": now, "until": now + lease}).scalars())
    return [delivery for delivery in deliveries if delivery.id in taken]


def release_leases(*, session: Session) -> None:
    """Free every pending delivery's lease (only for a process that knows it is alone)."""
    session.exec(update(Delivery).where(  # type: ignore[call-overload]
        Delivery.state == "pending", col(Delivery.lease_until).is_not(None))
        .values(lease_until=None))


@dataclass(slots=True)
class Outcome:
    """What became of one delivery attempt."""

    delivery: Delivery
    outcome: str  # sent | failed (refused for good) | expired (out of budget) | retry (at retry_at)
    error: str | None = None
    retry_at: datetime | None = None
    coalesced: list[int] = field(default_factory=list)  # owed syncs the sent message satisfied
    posted: tuple[str, str] | None = None  # (channel id, ts) of an incident's first message
    run_posted: tuple[int, str] | None = None  # (run id, ts) of a run's first thread reply
    # The attempt surely did not reach the service (refused before it was sent, or
    # rate limited): the row's next attempt need not look for a message it may have left.
    unsent: bool = False
    notes: list[str] = field(default_factory=list)  # for the incident's timeline (Slack setup)


_FINISH = (
    update(_DELIVERY)
    .where(_DELIVERY.c.id == bindparam("delivery_id"))
    .values(attempts=_DELIVERY.c.attempts + 1, lease_until=None, last_error=bindparam("error"),
            state=bindparam("new_state"),
            sent_at=func.coalesce(bindparam("sent"), _DELIVERY.c.sent_at),
            first_attempt_at=case((bindparam("unsent", type_=Boolean),
                                   bindparam("first", type_=_DELIVERY.c.first_attempt_at.type)),
                                  else_=_DELIVERY.c.first_attempt_at),
            next_attempt_at=func.coalesce(bindparam("retry_at"), _DELIVERY.c.next_attempt_at))
)
_COALESCE = (
    update(_DELIVERY)
    .where(_DELIVERY.c.id == bindparam("sync_id"), _DELIVERY.c.state == "pending",
           _DELIVERY.c.id != bindparam("into"))
    .values(state="sent", sent_at=bindparam("sent"), last_error=bindparam("note"))
)
_SLACK_MESSAGE = (
    update(_INCIDENT).where(_INCIDENT.c.id == bindparam("incident_id"))
    .values(slack_channel_id=bindparam("channel_id"), slack_ts=bindparam("ts"))
)
_RUN = RunbookRun.__table__  # type: ignore[attr-defined]
_RUN_MESSAGE = update(_RUN).where(_RUN.c.id == bindparam("run_id")).values(slack_ts=bindparam("ts"))


_STATE_AFTER = {"sent": "sent", "failed": "failed", "expired": "failed"}


def record_outcomes(outcomes: Sequence[Outcome], *, session: Session, now: datetime,
                    notify: bool = False) -> None:
    """Record delivery attempts, a statement per kind for the whole batch: an attempt
    that is not recorded as sent would be sent again, and these writes are frequent.

    A delivery that failed for good goes on its incident's timeline; with `notify`
    (Slack is configured), a failed page or PagerDuty note is also said in the
    incident's thread. A failed Slack delivery is not: saying so would take another
    Slack delivery, which could fail in turn."""
    finished, coalesced, messages, runs, timeline = [], [], [], [], []
    for item in outcomes:
        delivery = item.delivery
        finished.append({
            "delivery_id": delivery.id, "error": item.error,
            "new_state": _STATE_AFTER.get(item.outcome, "pending"),
            "sent": now if item.outcome == "sent" else None,
            "unsent": item.unsent, "first": delivery.first_attempt_at,
            "retry_at": (item.retry_at or now) if item.outcome == "retry" else None})
        coalesced += [{"sync_id": sync_id, "into": delivery.id, "sent": now,
                       "note": f"coalesced into delivery {delivery.id}"}
                      for sync_id in item.coalesced]
        if item.posted is not None and delivery.incident_id is not None:
            messages.append({"incident_id": delivery.incident_id, "channel_id": item.posted[0],
                             "ts": item.posted[1]})
        if item.run_posted is not None:
            runs.append({"run_id": item.run_posted[0], "ts": item.run_posted[1]})
        if delivery.incident_id is None:
            continue
        timeline += [{"incident_id": delivery.incident_id, "at": now, "actor": "bot",
                      "kind": "slack_setup", "detail": note} for note in item.notes]
        if delivery.target == "pagerduty" and item.outcome == "sent":
            kind = "paged" if delivery.action == "trigger" else f"pagerduty_{delivery.action}"
            timeline.append({"incident_id": delivery.incident_id, "at": now, "actor": "bot",
                             "kind": kind, "detail": f"PagerDuty {delivery.action} accepted"})
        elif item.outcome in ("failed", "expired"):
            detail = (item.error if item.outcome == "expired"
                      else f"{delivery.target} {delivery.action} refused: {item.error}")
            timeline.append({"incident_id": delivery.incident_id, "at": now, "actor": "bot",
                             "kind": "delivery_failed", "detail": detail})
            if notify and delivery.target != "slack":
                session.add(Delivery(incident_id=delivery.incident_id, target="slack",
                                     action="reply", payload={"text": failure_notice(detail)},
                                     created_at=now, next_attempt_at=now))
    connection = session.connection()
    for statement, rows in ((_FINISH, finished), (_COALESCE, coalesced),
                            (_SLACK_MESSAGE, messages), (_RUN_MESSAGE, runs)):
        if rows:
            connection.execute(statement, rows)
    if timeline:
        session.execute(insert(TimelineEntry), timeline)


_PENDING_PAGES = (
    select(Delivery.id, Delivery.incident_id, Delivery.created_at, Delivery.alerted_at,
           Incident.title, Incident.slack_channel_id, Incident.channel)
    .select_from(Delivery)
    .outerjoin(Incident, Incident.id == Delivery.incident_id)  # type: ignore[arg-type]
    .where(_IS_PENDING, Delivery.target == "pagerduty",
           Delivery.created_at <= bindparam("since"))
    .order_by(col(Delivery.created_at))
)
_ANNOUNCED = (
    update(_DELIVERY)
    .where(_DELIVERY.c.id.in_(bindparam("ids", expanding=True)),
           _DELIVERY.c.state == "pending",
           _DELIVERY.c.alerted_at.is_(None) | (_DELIVERY.c.alerted_at <= bindparam("cutoff")))
    .values(alerted_at=bindparam("now"))
    .returning(_DELIVERY.c.id)
)


def pending_pages(*, session: Session, since: datetime, default_channel: str) -> list[PendingPage]:
    """Pages owed since `since` or earlier and not yet taken by PagerDuty, oldest first
    (read from the pending rows' own index)."""
    rows = session.exec(_PENDING_PAGES, params={"since": since}).all()  # type: ignore[call-overload]
    return [PendingPage(delivery_id=id_, incident_id=incident_id,
                        title=title or "a page", channel=channel_id or channel or default_channel,
                        created_at=created_at, alerted_at=alerted_at)
            for id_, incident_id, created_at, alerted_at, title, channel_id, channel in rows]


def announce_pages(channel: str, pages: Sequence[PendingPage], text: str, *, session: Session,
                   now: datetime, repeat: timedelta) -> bool:
    """Owe `text` to `channel` about `pages` and mark them announced, unless another
    process announced them since they were read (then nothing is written)."""
    taken = session.connection().execute(_ANNOUNCED, {
        "ids": [p.delivery_id for p in pages], "cutoff": now - repeat, "now": now}).scalars()
    if not list(taken):
        return False
    session.connection().execute(update(_DELIVERY).where(
        _DELIVERY.c.id.in_([p.delivery_id for p in pages])).values(alerted_at=now))
    session.add(Delivery(incident_id=None, target="slack", action="post",
                         payload={"channel": channel, "text": text}, created_at=now,
                         next_attempt_at=now))
    for incident_id in sorted({p.incident_id for p in pages if p.incident_id is not None}):
        session.add(TimelineEntry(incident_id=incident_id, at=now, actor="bot",
                                  kind="page_undelivered",
                                  detail=f"PagerDuty has not taken the page; said so in {channel}"))
    return True


@dataclass(frozen=True, slots=True)
class AlertSummary:
    """What an incident message shows of its alerts: counts, and the first alert's annotations."""

    total: int
    firing: int
    annotations: dict[str, Any]


def _of_incident(statement: Any) -> Any:
    return statement.where(AlertOccurrence.incident_id == Incident.id).scalar_subquery()


_INCIDENT_WITH_ALERTS = select(
    Incident,
    _of_incident(select(func.count())),
    _of_incident(select(func.coalesce(func.sum(
        case((AlertOccurrence.status == AlertStatus.FIRING.value, 1), else_=0)), 0))),
    _of_incident(select(AlertOccurrence.annotations).order_by(col(AlertOccurrence.id)).limit(1)),
).where(Incident.id == bindparam("incident_id"))
_PENDING_SYNCS = select(Delivery.id).where(
    Delivery.incident_id == bindparam("incident_id"),
    Delivery.target == "slack",
    Delivery.action == "sync",
    Delivery.state == "pending",
)


def incident_with_alerts(incident_id: int, *,
                         session: Session) -> tuple[Incident, AlertSummary] | None:
    """An incident and what its message shows of its alerts, in one statement."""
    row = session.exec(_INCIDENT_WITH_ALERTS,  # type: ignore[call-overload]
                       params={"incident_id": incident_id}).first()
    if row is None:
        return None
    incident, total, firing, annotations = row
    return incident, AlertSummary(total=total, firing=firing, annotations=annotations or {})


_EARLIER_POST = select(func.min(Delivery.first_attempt_at)).where(
    Delivery.incident_id == bindparam("incident_id"),
    Delivery.target == "slack",
    Delivery.action == "sync",
    Delivery.id != bindparam("delivery_id"),
)


def earlier_post_attempt(incident_id: int, delivery_id: int, *,
                         session: Session) -> datetime | None:
    """When another delivery first tried to post this incident's Slack message, if one did."""
    return session.exec(_EARLIER_POST, params={  # type: ignore[call-overload]
        "incident_id": incident_id, "delivery_id": delivery_id}).one()


def pending_syncs(incident_id: int, *, session: Session) -> list[int]:
    """Ids of the Slack syncs still owed for an incident, read with the state they will show."""
    return list(session.exec(_PENDING_SYNCS,  # type: ignore[call-overload]
                             params={"incident_id": incident_id}).all())


def timeline(incident_id: int, *, session: Session) -> list[TimelineEntry]:
    return list(session.exec(
        select(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
        .order_by(col(TimelineEntry.id))
    ).all())


_OPEN_COUNTS = select(Incident.state, func.count()).where(
    col(Incident.state).in_(OPEN_STATES)).group_by(Incident.state)


def open_incident_counts(*, session: Session) -> dict[str, int]:
    """Open incidents by state: a count over the open states' range of ix_incident_state,
    so a scrape costs what is open, not the whole (ever-growing) record."""
    return dict(session.exec(_OPEN_COUNTS).all())  # type: ignore[arg-type]


_PENDING_OF = select(func.count(), func.min(Delivery.created_at)).where(
    _IS_PENDING, Delivery.target == bindparam("target"))
_FAILED_OF = select(func.count()).where(Delivery.state == "failed",
                                        Delivery.target == bindparam("target"))
_PAGES_OWED_SINCE = select(func.count()).where(
    _IS_PENDING, Delivery.target == "pagerduty",
    Delivery.created_at <= bindparam("since"))


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    failed: int
    oldest_pending: datetime | None


def outbox_stats(*, session: Session) -> dict[str, OutboxStats]:
    """Per target: pending and failed counts and the oldest pending delivery. Each is
    an indexed aggregate over that target's pending (ix_delivery_pending) or failed
    (ix_delivery_queue) rows, never over the sent history."""
    stats = {}
    for target in TARGETS:
        pending, oldest = session.exec(_PENDING_OF,  # type: ignore[call-overload]
                                       params={"target": target}).one()
        failed = session.exec(_FAILED_OF, params={"target": target}).one()  # type: ignore[call-overload]
        stats[target] = OutboxStats(pending, failed, oldest)
    return stats


def pages_owed_since(*, session: Session, since: datetime) -> int:
    """How many pages, owed at `since` or earlier, PagerDuty has not taken."""
    return session.exec(_PAGES_OWED_SINCE, params={"since": since}).one()  # type: ignore[call-overload]
