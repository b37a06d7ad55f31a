"""What the ML-lifecycle edges ask: a drift detector's batch, a PagerDuty Events API
event, a model registry's webhook. Each turns a transient database failure into
DatabaseUnavailable, so the edges answer 503 without knowing the database library."""

from __future__ import annotations

from collections.abc import Sequence

from bot.db import unavailable_when_transient
from bot.domain.changes import AliasMove, ModelSeen
from bot.domain.drift import DriftResult
from bot.intake.pagerduty_events import Event
from bot.store import IngestResult
from bot.usecases.actions import Actor
from bot.usecases.base import Base
from bot.usecases.drift import record_batch
from bot.usecases.events_intake import Outcome, receive


class LifecycleCases(Base):
    async def record_drift(self, results: Sequence[DriftResult]) -> IngestResult:
        """Count a detector's verdicts; fire or resolve the ModelDrift alerts they make."""
        with unavailable_when_transient():
            return await record_batch(self.pipeline, results)

    async def take_event(self, event: Event, dedup_key: str, *, actor: Actor) -> Outcome:
        """One validated Events API v2 event: trigger, resolve or acknowledge."""
        with unavailable_when_transient():
            return await receive(self.pipeline, event, dedup_key, actor=actor)

    async def registry_event(self, event: AliasMove | ModelSeen, *, receipt: str) -> str:
        """One registry webhook, once per delivery id: the change it records, if any."""
        with unavailable_when_transient():
            return await self.changes.delivered(event, receipt=receipt)
