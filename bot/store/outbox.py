"""The outbox: which deliveries are due, their leases, and what became of each attempt.

Statements run per delivery are built once with bound parameters, and outcomes are
recorded a statement per kind per batch (see README "Delivery guarantees").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    Boolean,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from bot.domain.delivery import WAITS, PendingPage, failure_notice
from bot.models import Delivery, Incident, RunbookRun, TimelineEntry
from bot.store.sql import one_of, write_together

_DELIVERY = Delivery.__table__  # type: ignore[attr-defined]
_INCIDENT = Incident.__table__  # type: ignore[attr-defined]
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
        .limit(bindparam(f"limit_{target}"))
    )


@cache
def _due_in(targets: tuple[str, ...]) -> Any:
    """The queues of `targets` in one statement (one round trip on PostgreSQL): each
    still read in id order up to its own limit, as a branch of a UNION ALL."""
    if len(targets) == 1:
        return _due(targets[0])
    union = union_all(*(select(_due(target).subquery()) for target in targets)).subquery()
    return select(aliased(Delivery, union))


_LEASE = (
    update(_DELIVERY)
    .where(
        one_of(_DELIVERY.c.id, "ids"),
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
    wanted = {target: min(limit, (caps or {}).get(target, limit)) for target in TARGETS
              if target not in held}
    targets = tuple(target for target, n in wanted.items() if n > 0)
    if not targets:
        return []
    found = session.exec(_due_in(targets), params={  # type: ignore[call-overload]
        "now": now, **{f"limit_{target}": wanted[target] for target in targets}}).all()
    # Targets in claiming order, each in id order: the first `limit` are what reading
    # the queues one after another, each up to what is left of the limit, would take.
    return sorted(found, key=lambda d: (TARGETS.index(d.target), d.id))[:limit]


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


_INSERT_TIMELINE = insert(TimelineEntry.__table__)  # type: ignore[attr-defined]
_STATE_AFTER = {"sent": "sent", "failed": "failed", "expired": "failed"}


def record_outcomes(outcomes: Sequence[Outcome], *, session: Session, now: datetime,
                    notify: bool = False) -> None:
    """Record delivery attempts, a statement per kind for the whole batch, written
    together (`write_together`): an attempt that is not recorded as sent would be sent
    again, and these writes are frequent.

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
    write_together(session, [(_FINISH, finished), (_COALESCE, coalesced),
                             (_SLACK_MESSAGE, messages), (_RUN_MESSAGE, runs),
                             (_INSERT_TIMELINE, timeline)])


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
    .where(one_of(_DELIVERY.c.id, "ids"),
           _DELIVERY.c.state == "pending",
           _DELIVERY.c.alerted_at.is_(None) | (_DELIVERY.c.alerted_at <= bindparam("cutoff")))
    .values(alerted_at=bindparam("now"))
    .returning(_DELIVERY.c.id)
)


_ANNOUNCED_ALL = update(_DELIVERY).where(one_of(_DELIVERY.c.id, "ids")).values(
    alerted_at=bindparam("now"))


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
    session.connection().execute(_ANNOUNCED_ALL, {
        "ids": [p.delivery_id for p in pages], "now": now})
    session.add(Delivery(incident_id=None, target="slack", action="post",
                         payload={"channel": channel, "text": text}, created_at=now,
                         next_attempt_at=now))
    for incident_id in sorted({p.incident_id for p in pages if p.incident_id is not None}):
        session.add(TimelineEntry(incident_id=incident_id, at=now, actor="bot",
                                  kind="page_undelivered",
                                  detail=f"PagerDuty has not taken the page; said so in {channel}"))
    return True


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
