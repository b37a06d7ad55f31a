"""What people do to incidents, from Slack and from PagerDuty, each in one transaction.

A guarded act is checked (domain.permissions decides which guard, the Gatekeeper
gathers the facts) before anything is written; the incident row is locked inside
the transaction, so a Slack click and a PagerDuty webhook arriving together apply once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from bot import store
from bot.db import unavailable_when_transient
from bot.domain.answers import silence_created_text
from bot.domain.matchers import Matcher, MatchType
from bot.domain.messages import Mrkdwn, md, mention, thread_reply
from bot.domain.permissions import Act, Guarded, guard_for
from bot.domain.routing import Tier
from bot.models import Incident, TimelineEntry, WebhookReceipt
from bot.silences import add_silence, expire_silence
from bot.usecases import actions
from bot.usecases.actions import ActionRefused, Actor, Done, locked
from bot.usecases.base import Base, refuse_resolved

SILENCE_FOR = timedelta(hours=1)

Work = Callable[[Incident, Session, datetime], Done]


class IncidentCases(Base):
    async def _act(self, act: Act, incident_id: int, actor: Actor, work: Work, *,
                   open_only: bool) -> Done:
        """Check the act's guard against the incident as it is, then lock and apply.
        `open_only`: refuse a resolved incident (a button on a message gone stale)."""
        incident = self.incident(incident_id, open_only=open_only)
        await self.guard(actor, guard_for(act, tier=incident.tier))

        def apply(session: Session, now: datetime) -> Done:
            row = locked(incident_id, session=session)
            if open_only:
                refuse_resolved(row)
            return work(row, session, now)

        return await self.pipeline.transact(apply)

    async def acknowledge(self, incident_id: int, actor: Actor, *,
                          open_only: bool = False) -> Done:
        return await self._act(Act.ACKNOWLEDGE, incident_id, actor, lambda row, session, now:
                               actions.acknowledge(row, session=session, policy=self.policy,
                                                   now=now, actor=actor), open_only=open_only)

    async def resolve(self, incident_id: int, actor: Actor, *, note: str = "",
                      open_only: bool = False) -> Done:
        """Resolving an L1 is guarded."""
        return await self._act(Act.RESOLVE, incident_id, actor, lambda row, session, now:
                               actions.resolve(row, session=session, policy=self.policy,
                                               now=now, actor=actor, note=note),
                               open_only=open_only)

    async def note(self, incident_id: int, text: str, actor: Actor) -> Done:
        return await self._act(Act.NOTE, incident_id, actor, lambda row, session, now:
                               actions.add_note(row, text, session=session, policy=self.policy,
                                                now=now, actor=actor), open_only=False)

    async def escalate(self, incident_id: int, actor: Actor) -> Done:
        """L2, to the owning team (the message's button: a resolved incident is refused)."""
        def work(row: Incident, session: Session, now: datetime) -> Done:
            team = self.routing.teams.get(row.team or "")
            pageable = bool(team and team.pagerduty_routing_key_env
                            in self.policy.routing_keys_set)
            return actions.escalate(row, team=team, team_pageable=pageable, session=session,
                                    policy=self.policy, now=now, actor=actor)

        return await self._act(Act.ESCALATE, incident_id, actor, work, open_only=True)

    async def silence_incident(self, incident_id: int, actor: Actor) -> Done:
        """Silence further alerts of the incident's group (its group_by labels) for an hour."""
        def work(row: Incident, session: Session, now: datetime) -> Done:
            route = self.routing.route(row.labels)
            matchers = [str(Matcher(name, MatchType.EQUAL, str(row.labels.get(name, ""))))
                        for name in route.group_by]
            created = add_silence(matchers, SILENCE_FOR, session=session, now=now,
                                  created_by=actor.id, comment=f"from incident #{row.id}")
            store.add_timeline(row, "silenced", f"silence #{created.id} for 1h: "
                               f"{' '.join(created.matchers)}", session=session,
                               actor=actor.id, now=now)
            store.owe(row, "noted", session=session, policy=self.policy, now=now,
                      reply=thread_reply("silenced", actor=actor.mention,
                                         matchers=" ".join(created.matchers)))
            return Done(row.id, True,  # type: ignore[arg-type]
                        md("Silence #{} for 1h: {:.1000}", created.id, " ".join(created.matchers)))

        return await self._act(Act.SILENCE, incident_id, actor, work, open_only=True)

    async def declare(self, title: str, actor: Actor, *, model: str | None, tier: Tier,
                      severity: str | None) -> Done:
        return await self.pipeline.transact(lambda session, now: actions.declare(
            title, model=model, tier=tier, severity=severity, routing=self.routing,
            session=session, policy=self.policy, now=now, actor=actor))

    async def silence(self, matchers: Sequence[str], duration: timedelta, actor: Actor, *,
                      comment: str) -> Mrkdwn:
        """Raises ActionRefused (not allowed), MatcherError or ValueError (a bad silence)."""
        await self.guard(actor, Guarded.SILENCE)
        return await self.pipeline.transact(lambda session, now: silence_created_text(
            add_silence(matchers, duration, session=session, now=now, created_by=actor.id,
                        comment=comment)))

    async def unsilence(self, silence_id: int, actor: Actor) -> str:
        await self.guard(actor, Guarded.SILENCE)

        def end(session: Session, now: datetime) -> str:
            if expire_silence(silence_id, session=session, now=now) is None:
                return f"There is no silence #{silence_id} in force."
            return f"Silence #{silence_id} ended."

        return await self.pipeline.transact(end)

    async def apply_pagerduty_event(self, *, receipt: str, incident_key: str, act: Act,
                                    occurred: datetime, actor: Actor) -> tuple[str, list[int]]:
        """Acknowledge or resolve the incident PagerDuty names, once per event (`receipt`);
        returns the outcome and the ids of the incidents changed; DatabaseUnavailable
        when the database fails transiently (PagerDuty retries a 503). An event that happened
        before the incident last reopened is about its earlier life and is ignored."""
        changed: list[int] = []

        def apply(session: Session, now: datetime) -> str:
            if session.get(WebhookReceipt, receipt) is not None:
                return "duplicate delivery: already applied"
            session.add(WebhookReceipt(id=receipt, received_at=now))
            session.flush()
            incident = actions.locked_by_key(incident_key, session=session)
            if incident is None:
                return "unknown incident: ignored"
            reopened = _reopened_at(incident, session=session)
            if reopened is not None and occurred < reopened:
                return (f"ignored: it happened before incident #{incident.id} reopened "
                        f"({reopened:%Y-%m-%d %H:%M:%S} UTC)")
            perform = actions.acknowledge if act is Act.ACKNOWLEDGE else actions.resolve
            changed[:] = [incident.id]  # type: ignore[list-item]
            try:
                return perform(incident, session=session, policy=self.policy, now=now,
                               actor=actor).message
            except ActionRefused as exc:
                changed.clear()
                return f"nothing to do: {exc}"

        try:
            with unavailable_when_transient():
                outcome = await self.pipeline.transact(apply)
        except IntegrityError:  # the same delivery, applied by a concurrent request
            return "duplicate delivery: already applied", []
        return outcome, changed


def _reopened_at(incident: Incident, *, session: Session) -> datetime | None:
    if not incident.reopen_count:
        return None
    return session.exec(select(func.max(TimelineEntry.at)).where(
        TimelineEntry.incident_id == incident.id, TimelineEntry.kind == "reopened")).one()


def slack_actor(user_id: str) -> Actor:
    return Actor(id=f"slack:{user_id}", mention=mention(user_id), via="slack")
