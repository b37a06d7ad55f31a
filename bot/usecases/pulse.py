"""The satisfaction pulse: opened by its timer, answered from Slack.

The Slack listeners (bot/slack_app/pulse.py) hand these the values Slack sent, unchecked;
each is checked here (domain.pulse) before anything is written, and the pulse must exist
and be open. Refusals raise PulseRefused with a message for the person.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from anyio import to_thread
from sqlmodel import Session

from bot import store
from bot.db import Database
from bot.domain.incident import DeliveryPolicy
from bot.domain.messages import Mrkdwn
from bot.domain.pulse import (
    PulseRefused,
    answered_text,
    comment_view,
    parse_answer,
    parse_comment,
    parse_pulse_id,
    pulse_message,
)
from bot.models import Delivery
from bot.pipeline import Pipeline

NOT_OPEN = "That pulse is closed or does not exist; nothing was recorded."


def open_pulse(key: str, channel: str, *, session: Session, now: datetime,
               policy: DeliveryPolicy) -> int | None:
    """Open the pulse of cron occurrence `key` and owe its Slack message; None when that
    occurrence has its pulse already (the timer fired twice) or Slack is not configured."""
    if not policy.slack:
        return None
    pulse = store.open_pulse(key, channel, session=session, now=now)
    if pulse is None:
        return None
    text, blocks = pulse_message(pulse.id)  # type: ignore[arg-type]
    session.add(Delivery(incident_id=None, target="slack", action="post",
                         payload={"channel": channel, "text": text, "blocks": blocks},
                         created_at=now, next_attempt_at=now))
    return pulse.id


async def answer(pipeline: Pipeline, *, value: object, user_id: str) -> Mrkdwn:
    """A score button: record (or change) the clicker's answer; the text to show them."""
    given = parse_answer(value)

    def record(session: Session, now: datetime) -> Mrkdwn:
        if store.open_pulse_by_id(given.pulse_id, session=session) is None:
            raise PulseRefused(NOT_OPEN)
        before = store.answer_of(given.pulse_id, user_id, session=session)
        store.save_score(given.pulse_id, user_id, given.score, session=session, now=now)
        return answered_text(given.score, before.score if before else None)

    return await pipeline.transact(record)


async def comment_form(db: Database, *, value: object, user_id: str) -> dict[str, Any]:
    """The comment modal for an open pulse, holding the person's comment so far."""
    pulse_id = parse_pulse_id(value)

    def load() -> dict[str, Any]:
        with db.read() as session:
            if store.open_pulse_by_id(pulse_id, session=session) is None:
                raise PulseRefused(NOT_OPEN)
            given = store.answer_of(pulse_id, user_id, session=session)
        return comment_view(pulse_id, given.comment if given else None)

    return await to_thread.run_sync(load)


async def comment(pipeline: Pipeline, *, pulse: object, text: object, user_id: str) -> str:
    """Save a comment on the person's answer; returns the comment as stored."""
    pulse_id, saved = parse_pulse_id(pulse), parse_comment(text)

    def record(session: Session, now: datetime) -> str:
        if store.open_pulse_by_id(pulse_id, session=session) is None:
            raise PulseRefused(NOT_OPEN)
        given = store.answer_of(pulse_id, user_id, session=session)
        if given is None:
            raise PulseRefused("Pick a score from 1 to 5 first; then add your comment.")
        store.save_comment(given, saved, session=session, now=now)
        return saved

    return await pipeline.transact(record)
