"""What every group of use cases shares: the collaborators built once in create_app."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TypeVar

from anyio import to_thread
from sqlmodel import Session

from bot.db import Database
from bot.domain.incident import IncidentState
from bot.domain.permissions import Guarded
from bot.domain.routing import RoutingConfig
from bot.models import Incident
from bot.permissions import Gatekeeper
from bot.pipeline import Pipeline
from bot.ports import ModelRegistry, OnCall
from bot.runbooks import Runbook
from bot.store import DeliveryPolicy
from bot.usecases.actions import ActionRefused, Actor
from bot.usecases.changes import ModelChanges
from bot.usecases.console import Console

T = TypeVar("T")


class Base:
    def __init__(self, *, pipeline: Pipeline, db: Database, routing: RoutingConfig,
                 policy: DeliveryPolicy, gatekeeper: Gatekeeper | None,
                 oncall: OnCall | None, runbooks: Mapping[str, Runbook],
                 registry: ModelRegistry | None, changes: ModelChanges,
                 console: Console) -> None:
        """`gatekeeper` None: nobody passes a guard (no Slack client to ask);
        `registry` None: MLFLOW_TRACKING_URI is not set."""
        self.pipeline = pipeline
        self.db = db
        self.routing = routing
        self.policy = policy
        self.gatekeeper = gatekeeper
        self.oncall = oncall
        self.runbooks = runbooks
        self.registry = registry
        self.changes = changes
        self.console = console

    def now(self) -> datetime:
        return self.pipeline.clock()

    async def guard(self, actor: Actor, guarded: Guarded | None) -> None:
        """Raises ActionRefused, naming who may, unless the actor passes `guarded`."""
        if guarded is None:
            return
        refusal = (await self.gatekeeper.refusal(actor.id.removeprefix("slack:"), guarded)
                   if self.gatekeeper is not None else "Permissions cannot be checked.")
        if refusal:
            raise ActionRefused(refusal)

    async def read(self, work: Callable[[Session, datetime], T]) -> T:
        """Run `work(session, now)` in a read transaction off the event loop."""
        def run() -> T:
            with self.db.read() as session:
                return work(session, self.now())

        return await to_thread.run_sync(run)

    def incident(self, incident_id: int, *, open_only: bool = False) -> Incident:
        """The incident as it is now; ActionRefused when there is none (or, with
        `open_only`, when it is resolved: a stale message's button)."""
        with self.db.read() as session:
            incident = session.get(Incident, incident_id)
        if incident is None:
            raise ActionRefused(f"There is no incident #{incident_id}.")
        if open_only:
            refuse_resolved(incident)
        return incident


def refuse_resolved(incident: Incident) -> None:
    if incident.state == IncidentState.RESOLVED.value:
        raise ActionRefused(f"Incident #{incident.id} is already resolved; nothing changed.")
