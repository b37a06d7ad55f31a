"""Pulses and their answers: open one per cron occurrence, one answer per person (upsert),
and what the scorecard reads of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from bot.domain.pulse import PulseFacts
from bot.models import Pulse, PulseAnswer


def _insert(session: Session, table: Any) -> Any:
    """INSERT … ON CONFLICT, in the dialect of the session's database."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def open_pulse(key: str, channel: str, *, session: Session, now: datetime) -> Pulse | None:
    """Open the pulse of cron occurrence `key` and close those before it; None (and
    nothing changed) when that occurrence already has its pulse."""
    inserted = session.execute(
        _insert(session, Pulse).values(key=key, channel=channel, opened_at=now)
        .on_conflict_do_nothing(index_elements=["key"]).returning(col(Pulse.id))).scalar()
    if inserted is None:
        return None
    session.execute(update(Pulse).where(col(Pulse.id) != inserted,
                                        col(Pulse.closed_at).is_(None)).values(closed_at=now))
    return session.get(Pulse, inserted)


def open_pulse_by_id(pulse_id: int, *, session: Session) -> Pulse | None:
    """The pulse, if it exists and is still open."""
    pulse = session.get(Pulse, pulse_id)
    return pulse if pulse is not None and pulse.closed_at is None else None


def answer_of(pulse_id: int, user_id: str, *, session: Session) -> PulseAnswer | None:
    return session.exec(select(PulseAnswer).where(PulseAnswer.pulse_id == pulse_id,
                                                  PulseAnswer.user_id == user_id)).first()


def save_score(pulse_id: int, user_id: str, score: int, *, session: Session,
               now: datetime) -> None:
    """One answer per person and pulse: a second click replaces the score, in one
    statement, so two clicks racing still leave one row."""
    statement = _insert(session, PulseAnswer).values(
        pulse_id=pulse_id, user_id=user_id, score=score, comment="", answered_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=["pulse_id", "user_id"],
        set_={"score": statement.excluded.score, "answered_at": statement.excluded.answered_at}))


def save_comment(answer: PulseAnswer, comment: str, *, session: Session, now: datetime) -> None:
    answer.comment = comment
    answer.answered_at = now
    session.add(answer)


def pulse_facts(*, session: Session, since: datetime, until: datetime) -> list[PulseFacts]:
    """The pulses opened in [since, until) and the two latest before `until` (the
    scorecard's latest pulse and the one its trend compares with), with their answers."""
    latest = session.exec(select(Pulse.id).where(Pulse.opened_at < until)
                          .order_by(col(Pulse.opened_at).desc(), col(Pulse.id).desc())
                          .limit(2)).all()
    pulses = session.exec(select(Pulse).where(
        (col(Pulse.id).in_(latest)) | ((Pulse.opened_at >= since) & (Pulse.opened_at < until)))
        .order_by(col(Pulse.opened_at), col(Pulse.id))).all()
    if not pulses:
        return []
    answers: Sequence[PulseAnswer] = session.exec(select(PulseAnswer).where(
        col(PulseAnswer.pulse_id).in_([p.id for p in pulses])).order_by(col(PulseAnswer.id))).all()
    return [PulseFacts(pulse.id, pulse.opened_at,  # type: ignore[arg-type]
                       tuple(a.score for a in answers if a.pulse_id == pulse.id),
                       tuple(a.comment for a in answers if a.pulse_id == pulse.id and a.comment))
            for pulse in pulses]
