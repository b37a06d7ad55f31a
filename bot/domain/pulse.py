"""The satisfaction pulse: what it asks, what an answer may be, and what it adds up to.

Pure. Every button value and comment arrives from Slack written by whoever sent the
request, so each is checked here before anything is stored: a score is 1 to 5, a pulse
is named by a positive number, a comment is at most COMMENT_LIMIT characters. Comments
are stored as typed and escaped wherever they are shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.messages import (
    CONTEXT_TEXT,
    SECTION_TEXT,
    Mrkdwn,
    cut,
    md,
    mrkdwn_text,
    plain_text,
)

SCORES = range(1, 6)
COMMENT_LIMIT = 1000
SCORE_ACTION = "pulse_score_{}"  # one action_id per button: Slack wants them unique
SCORE_ACTIONS = r"^pulse_score_[1-5]$"
COMMENT_ACTION = "pulse_comment"
COMMENT_VIEW = "pulse_comment"
COMMENT_BLOCK, COMMENT_INPUT = "comment", "text"
QUESTION = "How well does the ML platform let you ship models, safely and fast?"
SCALE = "1 = very badly, 5 = very well. One answer each: click again to change yours."


class PulseRefused(ValueError):
    """An answer the bot will not take; the message says why, fit for the person."""


@dataclass(frozen=True, slots=True)
class Answer:
    pulse_id: int
    score: int


def parse_pulse_id(value: object) -> int:
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) == 0:
        raise PulseRefused("That button does not name a pulse.")
    return int(text)


def parse_answer(value: object) -> Answer:
    """A score button's value, `PULSE_ID:SCORE`."""
    pulse, _, score = str(value).partition(":")
    pulse_id = parse_pulse_id(pulse)
    if not (score.isascii() and score.isdigit() and len(score) == 1 and int(score) in SCORES):
        raise PulseRefused("A pulse answer is a score from 1 to 5; nothing was recorded.")
    return Answer(pulse_id, int(score))


def parse_comment(value: object) -> str:
    """The comment as typed, trimmed; empty removes it."""
    text = "" if value is None else str(value).strip()
    if len(text) > COMMENT_LIMIT:
        raise PulseRefused(f"A comment is at most {COMMENT_LIMIT} characters "
                           f"(this one has {len(text)}); nothing was recorded.")
    return text


def pulse_message(pulse_id: int) -> tuple[Mrkdwn, list[dict[str, Any]]]:
    """The pulse's channel message: the question, five score buttons, a comment button."""
    buttons = [{"type": "button", "action_id": SCORE_ACTION.format(score),
                "text": plain_text(str(score), 75), "value": f"{pulse_id}:{score}"}
               for score in SCORES]
    comment = {"type": "button", "action_id": COMMENT_ACTION,
               "text": plain_text("Add a comment", 75), "value": str(pulse_id)}
    blocks = [
        {"type": "section", "text": mrkdwn_text(md("*Platform pulse*\n{}", QUESTION),
                                                 SECTION_TEXT)},
        {"type": "actions", "block_id": "pulse_scores", "elements": buttons},
        {"type": "actions", "block_id": "pulse_comment", "elements": [comment]},
        {"type": "context", "elements": [mrkdwn_text(md("{}", SCALE), CONTEXT_TEXT)]},
    ]
    return md("Platform pulse: {} (answer 1 to 5)", QUESTION), blocks


def answered_text(score: int, previous: int | None) -> Mrkdwn:
    if previous is None:
        return md("Thanks: your answer is {} of 5. Click another score to change it.", score)
    if previous == score:
        return md("Your answer was already {} of 5; nothing changed.", score)
    return md("Changed your answer from {} to {} of 5.", previous, score)


def comment_view(pulse_id: int, current: str | None) -> dict[str, Any]:
    """The modal that takes a comment; the pulse travels in private_metadata (and is
    checked again on submission, like anything else Slack sends back)."""
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": COMMENT_INPUT,
                               "multiline": True, "max_length": COMMENT_LIMIT}
    if current:
        element["initial_value"] = current
    return {"type": "modal", "callback_id": COMMENT_VIEW, "private_metadata": str(pulse_id),
            "title": plain_text("Platform pulse", 24), "submit": plain_text("Save", 24),
            "close": plain_text("Cancel", 24),
            "blocks": [{"type": "input", "block_id": COMMENT_BLOCK, "optional": True,
                        "label": plain_text("Anything to add? (optional)", 2000),
                        "element": element}]}


def comment_saved_view(comment: str) -> dict[str, Any]:
    shown = md("Saved. Your comment:\n>{}", cut(comment, 2900)) if comment else md(
        "Saved: your comment is removed.")
    return {"type": "modal", "title": plain_text("Platform pulse", 24),
            "close": plain_text("Close", 24),
            "blocks": [{"type": "section", "text": mrkdwn_text(shown, SECTION_TEXT)}]}


# -- what the scorecard shows ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PulseFacts:
    """One pulse: when it opened, its scores (one per person) and its comments."""

    id: int
    opened_at: datetime
    scores: tuple[int, ...] = ()
    comments: tuple[str, ...] = ()

    @property
    def mean(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None


@dataclass(frozen=True, slots=True)
class Satisfaction:
    """The latest pulse opened before the window's end, and the change in its mean
    score from the pulse before it (None when either has no answers, or there is none)."""

    opened_at: datetime
    count: int
    mean: float | None
    previous_mean: float | None
    comments: tuple[str, ...]

    @property
    def trend(self) -> float | None:
        if self.mean is None or self.previous_mean is None:
            return None
        return self.mean - self.previous_mean


def satisfaction(pulses: Sequence[PulseFacts], *, until: datetime) -> Satisfaction | None:
    """None when no pulse opened before `until`."""
    before = sorted((p for p in pulses if p.opened_at < until), key=lambda p: (p.opened_at, p.id))
    if not before:
        return None
    latest = before[-1]
    previous = before[-2].mean if len(before) > 1 else None
    return Satisfaction(latest.opened_at, len(latest.scores), latest.mean, previous,
                        latest.comments)
