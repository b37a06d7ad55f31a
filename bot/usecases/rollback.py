"""Rolling a model back: preview first, run only on an explicit confirm.

A runbook marked `changes_production` never runs by itself. A preview shows who
would do what: the model, the version serving its alias now, the target (by default
the version before it) and each step. Confirming, by someone allowed to, takes the
model's lock (one rollback at a time per model), writes who confirmed and before →
target on the timeline, and hands the run to the runbook worker, which records the
health check after.

The preview is kept on the server (RollbackConfirmation): Confirm carries only its
id, works once, for ten minutes, for the person who previewed it, if they still may,
and only while the alias still serves the version the preview showed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot import store
from bot.domain.answers import RollbackView, rollback_preview
from bot.domain.confirmations import ALIAS_MOVED, CONFIRM_WITHIN, confirmation_refusal
from bot.domain.messages import Mrkdwn, actor_mrkdwn, md
from bot.domain.permissions import Guarded
from bot.models import Incident, RollbackConfirmation, RollbackLock
from bot.runbooks import Runbook
from bot.runbooks.registry import RegistryError
from bot.runs import rollback_runbook
from bot.usecases.actions import ActionRefused, Actor
from bot.usecases.base import Base

NOT_OFFERED = "That confirmation is not a rollback this bot offered; nothing changed."
_CONFIRMATION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what secrets.token_urlsafe makes


def latest_open_incident(model: str, *, session: Session) -> Incident | None:
    return session.exec(select(Incident).where(
        Incident.model == model, col(Incident.state).in_(store.OPEN_STATES))
        .order_by(col(Incident.id).desc())).first()


class RollbackCases(Base):
    async def preview_rollback(self, model: str, actor: Actor, *,
                               target: str | None) -> tuple[Mrkdwn, list[dict[str, Any]]]:
        """`/oncall rollback MODEL [to VERSION]`: for the model's latest open incident."""
        await self.guard(actor, Guarded.ROLLBACK)
        with self.db.read() as session:
            incident = latest_open_incident(model, session=session)
        labels = dict(incident.labels) if incident else {"model": model}
        return await self._preview(model=model, labels=labels,
                                   incident_id=incident.id if incident else None,
                                   target=target, actor=actor)

    async def preview_incident_rollback(self, incident_id: int | None,
                                        actor: Actor) -> tuple[Mrkdwn, list[dict[str, Any]]]:
        """The incident message's "Roll back" button: its model, to the version before.
        `incident_id` None: the button named none (refused after the permission check)."""
        await self.guard(actor, Guarded.ROLLBACK)
        if incident_id is None:
            raise ActionRefused("That button does not name an incident.")
        with self.db.read() as session:
            incident = session.get(Incident, incident_id)
        if incident is None or not incident.model:
            raise ActionRefused(f"Incident #{incident_id} names no model to roll back.")
        return await self._preview(model=incident.model, labels=dict(incident.labels),
                                   incident_id=incident_id, target=None, actor=actor)

    async def _preview(self, *, model: str, labels: dict[str, str], incident_id: int | None,
                       target: str | None, actor: Actor) -> tuple[Mrkdwn, list[dict[str, Any]]]:
        """What a rollback would do, with Confirm and Cancel buttons; raises ActionRefused.
        The preview is kept as a RollbackConfirmation row (who, model, from → to,
        expiry); Confirm carries only its id."""
        runbook = rollback_runbook(self.runbooks, {**labels, "model": model})
        if runbook is None:
            raise ActionRefused(md("No rollback runbook serves model `{}`.", model))
        if self.registry is None:
            raise ActionRefused("MLFLOW_TRACKING_URI is not set, so the registry cannot be read.")
        alias = self.changes.serving_alias(model, labels)
        found = await _registry_call(self, lambda registry: registry.what_changed(model, alias))
        # The incident followed a recorded move of the alias: go back to what served before it.
        change = (await self.changes.change_before(incident_id)
                  if incident_id and not target else None)
        if (change is not None and change.from_version
                and change.to_version == found["current_version"]):
            found = {**found, "previous_version": change.from_version,
                     "previous_source": f"served before the change {change.moved_at:%H:%M} UTC"}
        current = str(found["current_version"])
        target = str(target or found["previous_version"] or "")
        shown = md("{}@{}", model, alias)
        if not target:
            raise ActionRefused(md("{} serves v{} and there is no earlier version.", shown,
                                   current))
        if target == current:
            raise ActionRefused(md("{} already serves v{}.", shown, current))

        def keep(session: Session, now: datetime) -> RollbackConfirmation:
            session.exec(delete(RollbackConfirmation).where(  # type: ignore[call-overload]
                col(RollbackConfirmation.expires_at) < now - timedelta(days=1)))
            pending = RollbackConfirmation(
                id=secrets.token_urlsafe(24), model=model, alias=alias, from_version=current,
                to_version=target, runbook=runbook.name, incident_id=incident_id,
                environment=labels.get("environment", ""), previewed_by=actor.id,
                created_at=now, expires_at=now + CONFIRM_WITHIN)
            session.add(pending)
            return pending

        pending = await self.pipeline.transact(keep)
        return rollback_preview(RollbackView(
            confirmation_id=pending.id, model=model, alias=alias, current=current,
            target=target, runbook=runbook.name,
            steps=[(step.name, step.kind) for step in runbook.steps],
            source=found["previous_source"] if target == found["previous_version"] else None,
            minutes=int(CONFIRM_WITHIN.total_seconds() // 60)))

    async def confirm_rollback(self, confirmation_id: str, actor: Actor) -> Mrkdwn:
        """Run a previewed rollback; raises ActionRefused, with nothing changed, unless the
        person may, the preview is theirs, unused and unexpired, and the alias still
        serves the version the preview showed."""
        await self.guard(actor, Guarded.ROLLBACK)
        pending = None
        if _CONFIRMATION_ID.fullmatch(confirmation_id):
            with self.db.read() as session:
                pending = session.get(RollbackConfirmation, confirmation_id)
        if pending is None:
            raise ActionRefused(NOT_OFFERED)
        problem = confirmation_refusal(expires_at=pending.expires_at, used_at=pending.used_at,
                                       previewed_by=pending.previewed_by, confirmed_by=actor.id,
                                       now=self.now())
        if problem:
            raise ActionRefused(problem)
        serving = await _registry_call(
            self, lambda registry: registry.alias_version(pending.model, pending.alias))
        now_serves = str(serving["version"]) if serving else "nothing"
        if now_serves != pending.from_version:
            raise ActionRefused(md(
                "Not rolled back: {} ({}@{} serves v{} now; the preview showed v{}). Nothing "
                "changed; ask for a new preview.", ALIAS_MOVED, pending.model, pending.alias,
                now_serves, pending.from_version))
        try:
            return await self.pipeline.transact(
                lambda session, now: start(pending.id, actor, self.runbooks,
                                           session=session, now=now))
        except IntegrityError:
            raise ActionRefused(md("A rollback of {} is already running; nothing changed.",
                                   pending.model)) from None

    async def cancel_rollback(self, confirmation_id: str, actor: Actor) -> None:
        """Use up the preview's confirmation, so its Confirm no longer works; only the
        person who previewed it can."""
        if not _CONFIRMATION_ID.fullmatch(confirmation_id):
            confirmation_id = ""
        await self.pipeline.transact(lambda session, now: session.exec(  # type: ignore[call-overload]
            update(RollbackConfirmation).where(
                col(RollbackConfirmation.id) == confirmation_id,
                col(RollbackConfirmation.previewed_by) == actor.id,
                col(RollbackConfirmation.used_at).is_(None)).values(used_at=now)))


async def _registry_call(cases: Base, call: Any) -> Any:
    """One read of the registry (the bot's MLflow client, built in create_app);
    ActionRefused (escaped) when MLflow fails."""
    if cases.registry is None:
        raise ActionRefused("MLFLOW_TRACKING_URI is not set, so the registry cannot be read.")
    try:
        return await call(cases.registry)
    except RegistryError as exc:
        raise ActionRefused(md("Could not read the registry: {}", exc)) from None


def start(confirmation_id: str, actor: Actor, runbooks: Mapping[str, Runbook], *,
          session: Session, now: datetime) -> Mrkdwn:
    """Use the confirmation (once), take the model's lock and ask for the run;
    ActionRefused if it was used or expired meanwhile, or a rollback is running."""
    used = session.exec(update(RollbackConfirmation).where(  # type: ignore[call-overload]
        col(RollbackConfirmation.id) == confirmation_id,
        col(RollbackConfirmation.used_at).is_(None),
        col(RollbackConfirmation.expires_at) > now).values(used_at=now))
    if used.rowcount != 1:
        raise ActionRefused("This rollback was already confirmed, cancelled or has expired; "
                            "nothing changed.")
    choice = session.get(RollbackConfirmation, confirmation_id)
    assert choice is not None
    incident = (session.get(Incident, choice.incident_id) if choice.incident_id
                else latest_open_incident(choice.model, session=session))
    held = session.get(RollbackLock, choice.model)
    if held is not None:
        raise ActionRefused(md("A rollback of {} is already running (run #{}, confirmed by {}); "
                               "nothing changed.", choice.model, held.run_id,
                               actor_mrkdwn(held.taken_by)))
    params = {"model": choice.model, "alias": choice.alias, "target_version": choice.to_version}
    declared = {p.name for p in runbooks[choice.runbook].params} if choice.runbook in runbooks \
        else set()
    if "from_version" in declared:  # set_alias then moves the alias only from this version
        params["from_version"] = choice.from_version
    if choice.environment:
        params["environment"] = choice.environment
    run = store.request_run(incident, choice.runbook, "rollback", session=session, now=now,
                            requested_by=actor.id, params=params)
    session.add(RollbackLock(model=choice.model, run_id=run.id, taken_by=actor.id,  # type: ignore[arg-type]
                             taken_at=now))
    session.flush()  # a concurrent confirm fails here, on the lock's primary key
    moved = f"{choice.model}@{choice.alias} v{choice.from_version} → v{choice.to_version}"
    if incident is not None:
        store.add_timeline(incident, "rollback_started",
                           f"confirmed by {actor.mention}: {moved} (runbook "
                           f"{choice.runbook}, run #{run.id})",
                           session=session, actor=actor.id, now=now)
    return md("Rolling back {} (run #{}); progress follows in the incident's thread.", moved,
              run.id)
