"""Silences: label matchers with a start and an end. Matching alerts are recorded, not paged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from bot.domain.matchers import Matcher
from bot.models import Silence


def add_silence(matchers: Sequence[str], duration: timedelta, *, session: Session,
                now: datetime, created_by: str, comment: str = "") -> Silence:
    """Raises MatcherError for a bad matcher and ValueError for an empty or endless one."""
    parsed = [Matcher.parse(text) for text in matchers]
    if not parsed:
        raise ValueError("a silence needs at least one matcher")
    if duration <= timedelta(0):
        raise ValueError("a silence must last longer than zero")
    silence = Silence(matchers=[str(m) for m in parsed], starts_at=now, ends_at=now + duration,
                      created_by=created_by, comment=comment, created_at=now)
    session.add(silence)
    session.flush()
    return silence


def list_silences(*, session: Session, now: datetime) -> list[Silence]:
    """Silences in force now or starting later."""
    return list(session.exec(
        select(Silence).where(Silence.ends_at > now).order_by(col(Silence.ends_at))
    ).all())


def expire_silence(silence_id: int, *, session: Session, now: datetime) -> Silence | None:
    silence = session.get(Silence, silence_id)
    if silence is None or silence.ends_at <= now:
        return None
    silence.ends_at = now
    return silence
