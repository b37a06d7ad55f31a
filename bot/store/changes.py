"""Model changes and the bot's record of each alias (see bot.domain.changes for why a
move is stored once). Functions take `session=`; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, update
from sqlmodel import Session, col, select

from bot.domain.changes import Change
from bot.models import Incident, ModelAlias, ModelChange, TimelineEntry, WebhookReceipt
from bot.store.incidents import OPEN_STATES

# The timeline entry naming the change an incident followed (store.reads shows it).
NOTE_KIND = "model_change"


def as_change(row: ModelChange) -> Change:
    return Change(row.model, row.alias, row.from_version, row.to_version, row.moved_at,
                  row.author, row.source)


def receipt_seen(receipt: str, *, session: Session) -> bool:
    return session.get(WebhookReceipt, receipt) is not None


def keep_receipt(receipt: str, *, session: Session, now: datetime) -> None:
    """Written with what the delivery changed: a concurrent copy fails on its key."""
    session.add(WebhookReceipt(id=receipt, received_at=now))


def alias_record(model: str, alias: str, *, session: Session) -> ModelAlias | None:
    return session.get(ModelAlias, (model, alias))


def add_alias_record(model: str, alias: str, version: str | None, *, session: Session,
                     at: datetime) -> None:
    """A first record of the alias; a concurrent one fails on the primary key at flush."""
    session.add(ModelAlias(model=model, alias=alias, version=version, observed_at=at))
    session.flush()


def move_alias_record(model: str, alias: str, *, expected: str | None, version: str | None,
                      session: Session, at: datetime) -> bool:
    """Compare-and-set: move the record from `expected` to `version`. False when another
    transaction moved it first (on PostgreSQL this waits for it, then finds no row)."""
    current = (col(ModelAlias.version).is_(None) if expected is None
               else col(ModelAlias.version) == expected)
    moved = session.exec(update(ModelAlias).where(  # type: ignore[call-overload]
        and_(col(ModelAlias.model) == model, col(ModelAlias.alias) == alias, current))
        .values(version=version, observed_at=at))
    session.expire_all()
    return moved.rowcount == 1


def add_change(change: Change, *, session: Session, now: datetime) -> ModelChange:
    row = ModelChange(model=change.model, alias=change.alias, from_version=change.from_version,
                      to_version=change.to_version, moved_at=change.moved_at,
                      author=change.author, source=change.source, recorded_at=now)
    session.add(row)
    session.flush()
    return row


def recent_changes(*, session: Session, since: datetime, model: str | None = None,
                   limit: int = 50) -> list[Change]:
    query = select(ModelChange).where(col(ModelChange.moved_at) >= since)
    if model is not None:
        query = query.where(ModelChange.model == model)
    rows = session.exec(query.order_by(col(ModelChange.moved_at).desc()).limit(limit)).all()
    return [as_change(row) for row in rows]


def latest_change(model: str, alias: str, *, session: Session) -> Change | None:
    row = session.exec(select(ModelChange).where(
        ModelChange.model == model, ModelChange.alias == alias)
        .order_by(col(ModelChange.moved_at).desc())).first()
    return as_change(row) if row else None


def changes_between(*, session: Session, since: datetime, until: datetime | None = None,
                    model: str | None = None, alias: str | None = None) -> list[Change]:
    """Changes moved in [since, until] (no `until`: up to now), oldest first."""
    query = select(ModelChange).where(col(ModelChange.moved_at) >= since)
    if until is not None:
        query = query.where(col(ModelChange.moved_at) <= until)
    if model is not None:
        query = query.where(ModelChange.model == model)
    if alias is not None:
        query = query.where(ModelChange.alias == alias)
    return [as_change(row) for row in
            session.exec(query.order_by(col(ModelChange.moved_at))).all()]


def known_models(*, session: Session, alerts_since: datetime) -> set[str]:
    """Models named by incidents opened since `alerts_since`, or that the registry said
    an alias serves. Alert labels are attacker-written: a model named only by old alerts,
    or one the registry does not serve, is not polled for ever."""
    named = set(session.exec(select(Incident.model).where(
        col(Incident.triggered_at) >= alerts_since).distinct()).all())
    named |= set(session.exec(select(ModelAlias.model).where(
        col(ModelAlias.version).is_not(None)).distinct()).all())
    return {m for m in named if m}


def incidents_after(model: str, *, since: datetime, until: datetime,
                    session: Session) -> list[Incident]:
    """Open incidents of `model` opened in [since, until] that name no change yet."""
    noted = select(TimelineEntry.incident_id).where(TimelineEntry.kind == NOTE_KIND)
    return list(session.exec(select(Incident).where(
        Incident.model == model, col(Incident.state).in_(OPEN_STATES),
        col(Incident.triggered_at) >= since, col(Incident.triggered_at) <= until,
        col(Incident.id).not_in(noted)).with_for_update()).all())


def incidents_by_id(ids: Sequence[int], *, session: Session) -> list[Incident]:
    return list(session.exec(select(Incident).where(col(Incident.id).in_(list(ids)))).all())
