"""The PagerDuty-compatible intake (`POST /v2/enqueue`): a trigger or a resolve goes
through the pipeline as a firing or resolved alert; an acknowledge acknowledges the
incident that holds the alert, as a click in Slack would, so PagerDuty hears of it too.

An acknowledge or resolve names its alert by dedup_key alone; both find it among the
open incidents' alerts. A resolve takes that alert's own labels, so that it reaches
the trigger's group whatever labels (if any) it carries itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread
from sqlmodel import Session

from bot.domain.alert import alert_fingerprint
from bot.domain.messages import md
from bot.intake.pagerduty_events import Event, to_alert
from bot.models import Incident
from bot.pipeline import Pipeline
from bot.store import DeliveryPolicy
from bot.store.alerts import open_alert
from bot.usecases.actions import ActionRefused, Actor, Done, acknowledge, locked


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event did: the incidents it opened and changed (for the log line)."""

    opened: tuple[int, ...] = ()
    changed: tuple[int, ...] = ()


def integration(number: int, client: str | None) -> Actor:
    """The sending integration as an actor: which accepted key (by its place in
    EVENTS_INTAKE_ROUTING_KEYS, never the key) and the client it names (escaped)."""
    name = "".join(ch for ch in client or "" if ch.isprintable())[:100] or "an integration"
    return Actor(id=f"events-api:key{number}",
                 mention=md("{} (integration key {})", name, number), via="the Events API")


async def receive(pipeline: Pipeline, event: Event, dedup_key: str, *, actor: Actor) -> Outcome:
    """Apply one validated event. Database errors propagate (the edge answers 503)."""
    if event.event_action == "acknowledge":
        return await _acknowledge_alert(pipeline, dedup_key, actor)
    labels = None
    if event.event_action == "resolve":
        found = await to_thread.run_sync(_find, pipeline, dedup_key)
        if found is None:  # as at PagerDuty: nothing open by that key, nothing to do
            return Outcome()
        labels = found
    result = await pipeline.ingest([to_alert(event, dedup_key, labels=labels)])
    return Outcome(tuple(result.opened), tuple(sorted(result.changed)))


def _find(pipeline: Pipeline, dedup_key: str) -> dict[str, str] | None:
    with pipeline.db.read() as session:
        found = open_alert(alert_fingerprint(dedup_key, {}), session=session)
    return found.labels if found else None


async def _acknowledge_alert(pipeline: Pipeline, dedup_key: str, actor: Actor) -> Outcome:
    fingerprint = alert_fingerprint(dedup_key, {})

    def work(session: Session, now: datetime) -> Outcome:
        found = open_alert(fingerprint, session=session)
        if found is None:
            return Outcome()
        try:
            incident = locked(found.incident_id, session=session)
            done = acknowledge_incident(incident, session=session, policy=pipeline.policy,
                                        now=now, actor=actor)
        except ActionRefused:  # resolved meanwhile
            return Outcome()
        return Outcome(changed=(done.incident_id,) if done.changed else ())

    return await pipeline.transact(work)


def acknowledge_incident(incident: Incident, *, session: Session, policy: DeliveryPolicy,
                         now: datetime, actor: Actor) -> Done:
    """The one call into the acknowledge action (bot/incident_actions.py, moving under
    bot/usecases/): passed on to PagerDuty unless the actor acted in PagerDuty."""
    return acknowledge(incident, session=session, policy=policy, now=now, actor=actor)
