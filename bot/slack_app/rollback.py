"""Rolling a model back from Slack: preview first, run only on an explicit confirm.

A runbook marked `changes_production` never runs by itself. The "Roll back" button
(or `/oncall rollback MODEL [to VERSION]`) shows who would do what: the model, the
version serving its alias now, the target (by default the version before it) and
each step. Confirming, by someone allowed to, takes the model's lock (one rollback
at a time per model), writes who confirmed and before → target on the timeline, and
hands the run to the runbook worker, which records the health check after.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
from slack_bolt.async_app import AsyncApp
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot import store
from bot.clock import utcnow
from bot.domain.messages import mrkdwn
from bot.domain.permissions import Guarded
from bot.incident_actions import ActionRefused, Actor
from bot.models import Incident, RollbackLock
from bot.runbooks.registry import ModelRegistry, RegistryError
from bot.runs import rollback_runbook
from bot.slack_app import Services

DEFAULT_ALIAS = "champion"  # MLflow's documented convention for the serving version


def latest_open_incident(model: str, *, session: Session) -> Incident | None:
    return session.exec(select(Incident).where(
        Incident.model == model, col(Incident.state).in_(store.OPEN_STATES))
        .order_by(col(Incident.id).desc())).first()


async def preview(services: Services, *, model: str, labels: dict[str, str],
                  incident_id: int | None, target: str | None) -> tuple[str, list[dict]]:
    """What a rollback would do, with Confirm and Cancel buttons; raises ActionRefused."""
    runbook = rollback_runbook(services.runbooks, {**labels, "model": model})
    if runbook is None:
        raise ActionRefused(f"No rollback runbook serves model {model!r}.")
    if not services.mlflow_uri:
        raise ActionRefused("MLFLOW_TRACKING_URI is not set, so the registry cannot be read.")
    alias = labels.get("model_alias") or DEFAULT_ALIAS
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            found = await ModelRegistry(client, services.mlflow_uri, utcnow).what_changed(
                model, alias)
        except RegistryError as exc:
            raise ActionRefused(f"Could not read the registry: {exc}") from None
    current, target = found["current_version"], target or found["previous_version"]
    if not target:
        raise ActionRefused(f"{model}@{alias} serves v{current} and there is no earlier version.")
    if str(target) == str(current):
        raise ActionRefused(f"{model}@{alias} already serves v{current}.")
    steps = "\n".join(f"{n}. `{mrkdwn(s.name)}` ({s.kind})" for n, s in enumerate(runbook.steps, 1))
    text = (f"*Roll back {mrkdwn(model)}@{alias}: v{current} → v{target}*"
            + (f" ({found['previous_source']})" if target == found["previous_version"] else "")
            + f"\nRunbook `{runbook.name}` will run:\n{steps}")
    value = json.dumps({"incident": incident_id, "model": model, "alias": alias,
                        "current": current, "target": str(target), "runbook": runbook.name,
                        "environment": labels.get("environment", "")})
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
        {"type": "actions", "block_id": "rollback", "elements": [
            {"type": "button", "action_id": "rollback_confirm", "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": f"Roll back to v{target}"},
             "confirm": {"title": {"type": "plain_text", "text": "Change production?"},
                         "text": {"type": "plain_text",
                                  "text": f"{model}@{alias} will serve v{target}."[:300]},
                         "confirm": {"type": "plain_text", "text": "Roll back"},
                         "deny": {"type": "plain_text", "text": "Cancel"},
                         "style": "danger"}},
            {"type": "button", "action_id": "rollback_cancel", "value": "cancel",
             "text": {"type": "plain_text", "text": "Cancel"}},
        ]},
    ]
    return text, blocks


def start(choice: dict[str, Any], actor: Actor, *, session: Session, now: datetime) -> str:
    """Take the model's lock and ask for the run; ActionRefused if a rollback is running."""
    incident = (session.get(Incident, choice["incident"]) if choice.get("incident")
                else latest_open_incident(choice["model"], session=session))
    held = session.get(RollbackLock, choice["model"])
    if held is not None:
        raise ActionRefused(f"A rollback of {choice['model']} is already running (run "
                            f"#{held.run_id}, confirmed by {held.taken_by}); nothing changed.")
    params = {"model": choice["model"], "alias": choice["alias"],
              "target_version": choice["target"]}
    if choice.get("environment"):
        params["environment"] = choice["environment"]
    run = store.request_run(incident, choice["runbook"], "rollback", session=session, now=now,
                            requested_by=actor.id, params=params)
    session.add(RollbackLock(model=choice["model"], run_id=run.id, taken_by=actor.id,  # type: ignore[arg-type]
                             taken_at=now))
    session.flush()  # a concurrent confirm fails here, on the lock's primary key
    if incident is not None:
        store.add_timeline(incident, "rollback_started",
                           f"confirmed by {actor.mention}: {choice['model']}@{choice['alias']} "
                           f"v{choice['current']} → v{choice['target']} (runbook "
                           f"{choice['runbook']}, run #{run.id})",
                           session=session, actor=actor.id, now=now)
    return (f"Rolling back {choice['model']}@{choice['alias']} v{choice['current']} → "
            f"v{choice['target']} (run #{run.id}); progress follows in the incident's thread.")


def register(app: AsyncApp, services: Services) -> None:
    @app.action("incident_rollback")
    async def roll_back(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        user_id = body["user"]["id"]
        try:
            refusal = await services.gatekeeper.refusal(user_id, Guarded.ROLLBACK)
            if refusal:
                raise ActionRefused(refusal)
            incident_id = int(body["actions"][0]["value"])
            with services.db.read() as session:
                incident = session.get(Incident, incident_id)
            if incident is None or not incident.model:
                raise ActionRefused(f"Incident #{incident_id} names no model to roll back.")
            text, blocks = await preview(services, model=incident.model,
                                         labels=dict(incident.labels), incident_id=incident_id,
                                         target=None)
            await respond(text=text, blocks=blocks, response_type="ephemeral",
                          replace_original=False)
        except ActionRefused as exc:
            await respond(text=str(exc), response_type="ephemeral", replace_original=False)

    @app.action("rollback_confirm")
    async def confirm(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        user_id = body["user"]["id"]
        actor = Actor(id=f"slack:{user_id}", mention=f"<@{user_id}>", via="slack")
        try:
            refusal = await services.gatekeeper.refusal(user_id, Guarded.ROLLBACK)
            if refusal:
                raise ActionRefused(refusal)
            choice = json.loads(body["actions"][0]["value"])
            try:
                text = await services.pipeline.transact(
                    lambda session, now: start(choice, actor, session=session, now=now))
            except IntegrityError:
                raise ActionRefused(f"A rollback of {choice['model']} is already running; "
                                    "nothing changed.") from None
        except ActionRefused as exc:
            text = str(exc)
        except (ValueError, KeyError):
            text = "That confirmation is not a rollback this bot offered."
        await respond(text=text, response_type="ephemeral", replace_original=True)

    @app.action("rollback_cancel")
    async def cancel(ack: Any, respond: Any) -> None:
        await ack()
        await respond(text="Rollback cancelled; nothing changed.", response_type="ephemeral",
                      replace_original=True)
