"""The incident message's buttons: Acknowledge, Resolve, Escalate to model owner, Silence 1h.

Each acks at once, checks permission where the action is guarded, and applies the
action; the message is then updated in place and a thread reply added through the
outbox. Refusals and no-ops answer only the person who clicked (ephemeral).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from anyio import to_thread
from slack_bolt.async_app import AsyncApp
from sqlmodel import Session

from bot import store
from bot.domain.incident import IncidentState
from bot.domain.matchers import Matcher, MatchType
from bot.domain.messages import cut, md, mention, mrkdwn, thread_reply
from bot.domain.permissions import Guarded
from bot.domain.routing import Tier
from bot.incident_actions import ActionRefused, Done, acknowledge, escalate, locked, resolve
from bot.models import Incident
from bot.reports import postmortem_for
from bot.silences import add_silence
from bot.slack_app import Services
from bot.slack_app.commands import answer_text, slack_actor

SILENCE_FOR = timedelta(hours=1)
POSTMORTEM_LIMIT = 38_000  # Slack cuts message text at 40,000 characters


def register(app: AsyncApp, services: Services) -> None:
    async def handle(body: dict[str, Any], respond: Any, action: str) -> None:
        user_id = body["user"]["id"]
        try:
            incident_id = int(body["actions"][0]["value"])
            text = await perform(action, incident_id, user_id, services)
        except ActionRefused as exc:
            text = exc.text
        except ValueError:
            text = "That button does not name an incident."
        if text:
            await respond(text=answer_text(text), response_type="ephemeral",
                          replace_original=False)

    def listener_for(action: str) -> Any:
        # Bolt passes listener arguments by name, so the action is bound by closure.
        async def listener(ack: Any, body: dict[str, Any], respond: Any) -> None:
            await ack()
            await handle(body, respond, action)

        return listener

    for action in ("incident_ack", "incident_resolve", "incident_escalate", "incident_silence"):
        app.action(action)(listener_for(action))

    @app.action("incident_postmortem")
    async def postmortem(ack: Any, body: dict[str, Any], respond: Any) -> None:
        """The draft, for the person who asked; `oncall-bot postmortem ID` writes it to a file."""
        await ack()

        def draft() -> str:
            with services.db.read() as session:
                return postmortem_for(int(body["actions"][0]["value"]), session=session,
                                      now=services.pipeline.clock())

        try:
            text = await to_thread.run_sync(draft)
        except (LookupError, ValueError) as exc:
            await respond(text=answer_text(str(exc)), response_type="ephemeral",
                          replace_original=False)
            return
        shown = mrkdwn(text)  # it quotes alert data: escaped like any other
        if len(shown) > POSTMORTEM_LIMIT:
            shown = md("{}\n(cut; `oncall-bot postmortem ID` has it all)",
                       cut(shown, POSTMORTEM_LIMIT))
        await respond(text=md("```\n{}\n```", shown), response_type="ephemeral",
                      replace_original=False)


async def perform(action: str, incident_id: int, user_id: str, services: Services) -> str | None:
    """Apply a button; returns an ephemeral answer for the clicker, or None when the
    updated message and its thread reply say it all."""
    actor = slack_actor(user_id)
    with services.db.read() as session:
        incident = session.get(Incident, incident_id)
    if incident is None:
        raise ActionRefused(f"There is no incident #{incident_id}.")
    if incident.state == IncidentState.RESOLVED.value:
        raise ActionRefused(f"Incident #{incident_id} is already resolved; nothing changed.")
    guarded = {
        "incident_resolve": Guarded.RESOLVE_L1 if incident.tier == Tier.L1.value else None,
        "incident_escalate": Guarded.ESCALATE,
        "incident_silence": Guarded.SILENCE,
    }.get(action)
    if guarded is not None:
        refusal = await services.gatekeeper.refusal(user_id, guarded)
        if refusal:
            raise ActionRefused(refusal)

    def apply(session: Session, now: datetime) -> Done | str:
        row = locked(incident_id, session=session)
        if row.state == IncidentState.RESOLVED.value:
            raise ActionRefused(f"Incident #{incident_id} is already resolved; nothing changed.")
        common = {"session": session, "policy": services.policy, "now": now, "actor": actor}
        if action == "incident_ack":
            return acknowledge(row, **common)
        if action == "incident_resolve":
            return resolve(row, **common)
        if action == "incident_escalate":
            team = services.routing.teams.get(row.team or "")
            pageable = bool(team and team.pagerduty_routing_key_env
                            in services.policy.routing_keys_set)
            return escalate(row, team=team, team_pageable=pageable, **common)
        return silence_group(row, session, now, services, actor.id)

    result = await services.pipeline.transact(apply)
    if isinstance(result, str):
        return result
    return None if result.changed else result.message


def silence_group(incident: Incident, session: Session, now: datetime, services: Services,
                  actor_id: str) -> str:
    """Silence further alerts of the incident's group (its group_by labels) for an hour."""
    route = services.routing.route(incident.labels)
    matchers = [str(Matcher(name, MatchType.EQUAL, str(incident.labels.get(name, ""))))
                for name in route.group_by]
    created = add_silence(matchers, SILENCE_FOR, session=session, now=now,
                          created_by=actor_id, comment=f"from incident #{incident.id}")
    store.add_timeline(incident, "silenced", f"silence #{created.id} for 1h: "
                       f"{' '.join(created.matchers)}", session=session, actor=actor_id, now=now)
    store.owe(incident, "noted", session=session, policy=services.policy, now=now,
              reply=thread_reply("silenced", actor=mention(actor_id.removeprefix("slack:")),
                                 matchers=" ".join(created.matchers)))
    return md("Silence #{} for 1h: {:.1000}", created.id, " ".join(created.matchers))
