"""Console sign-in links: kept as their tokens' hashes, spent once."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlmodel import Session, col

from bot.models import ConsoleLink

# Spent and expired links are kept this long after they expire (a refused link can be
# told apart from an unknown one), then deleted when the next link is made.
KEEP_EXPIRED = timedelta(days=1)


def save_link(token_hash: str, user_id: str, *, session: Session, created_by: str,
              now: datetime, expires_at: datetime) -> None:
    session.execute(delete(ConsoleLink).where(col(ConsoleLink.expires_at) < now - KEEP_EXPIRED))
    session.add(ConsoleLink(token_hash=token_hash, user_id=user_id, created_by=created_by,
                            created_at=now, expires_at=expires_at))


def find_link(token_hash: str, *, session: Session) -> ConsoleLink | None:
    return session.get(ConsoleLink, token_hash)


def spend_link(token_hash: str, *, session: Session, now: datetime) -> str | None:
    """Mark the link used and return its user, if it is unused and unexpired; else None.
    One conditional UPDATE: of two replicas spending the same link at once, the database
    lets exactly one see it unused (PostgreSQL re-checks the condition after the row
    lock; SQLite has one writer)."""
    spent = session.execute(
        update(ConsoleLink)
        .where(col(ConsoleLink.token_hash) == token_hash, col(ConsoleLink.used_at).is_(None),
               col(ConsoleLink.expires_at) > now)
        .values(used_at=now)
        .returning(col(ConsoleLink.user_id))
    ).first()
    return None if spent is None else spent[0]
