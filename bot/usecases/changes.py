"""Model changes: recording alias moves (MLflow webhooks, polls), naming them on the
incidents that follow them, and answering "what changed?".

A move is recorded once whoever reports it (see bot.domain.changes): the bot's record
of the alias is moved compare-and-set in the transaction that stores the change, so a
webhook, a poll and another replica racing on one move store one row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TypeVar

from anyio import to_thread
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot.clock import Clock
from bot.domain.changes import AliasMove, Change, ModelSeen, change_note, preceding
from bot.domain.routing import RoutingConfig
from bot.models import Incident
from bot.pipeline import Pipeline
from bot.ports import ModelRegistry
from bot.runbooks.registry import RegistryError
from bot.store import changes as store
from bot.store import owe
from bot.store.incidents import add_timeline

log = logging.getLogger(__name__)
T = TypeVar("T")
_ATTEMPTS = 3  # a concurrent first record of the alias fails ours once; then it is a move
# Models named only by alerts are polled while they alert: this long after their last incident opened.
POLL_ALERTS_WITHIN = timedelta(days=30)


class _Moved(Exception):
    """Another transaction moved the alias record between our read and our write."""


class ModelChanges:
    """Built once in create_app. `registry` is None when MLFLOW_TRACKING_URI is not set:
    webhooks are still recorded, without authors, and nothing is polled."""

    def __init__(self, pipeline: Pipeline, *, registry: ModelRegistry | None,
                 routing: RoutingConfig, clock: Clock) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.routing = routing
        self.clock = clock

    def serving_alias(self, model: str, labels: dict[str, str] | None = None) -> str:
        return (labels or {}).get("model_alias") or self.routing.serving_alias(model)

    # --- recording -------------------------------------------------------------------

    async def delivered(self, event: AliasMove | ModelSeen, *, receipt: str) -> str:
        """Apply one verified webhook delivery; its `receipt` (the delivery id) makes a
        repeat change nothing. Returns what happened, for the log line."""
        if await self._read(lambda s: store.receipt_seen(receipt, session=s)):
            return "duplicate delivery"
        if isinstance(event, ModelSeen):
            learnt = await self.learn(event.model, receipt=receipt)
            return "model learnt" if learnt else "model known"
        return await self.record(event, source="webhook", receipt=receipt)

    async def learn(self, model: str, *, receipt: str | None = None) -> bool:
        """First news of `model`: read what its serving alias serves now, so a later move
        has a from-version. False when the bot knew it already (or the registry failed)."""
        alias = self.routing.serving_alias(model)
        if await self._read(lambda s: store.alias_record(model, alias, session=s)) is not None:
            if receipt:
                await self._keep(receipt)
            return False
        if self.registry is None:
            return False
        try:
            version = await self.registry.serving_version(model, alias)
        except RegistryError as exc:
            log.warning("could not read %s@%s from the registry: %s", model, alias, exc)
            return False

        def baseline(session: Session, now: datetime) -> bool:
            if receipt:
                if store.receipt_seen(receipt, session=session):
                    return False
                store.keep_receipt(receipt, session=session, now=now)
            if store.alias_record(model, alias, session=session) is not None:
                return False
            store.add_alias_record(model, alias, version, session=session, at=now)
            return True

        try:
            return await self.pipeline.transact(baseline)
        except IntegrityError:  # learnt by a concurrent delivery or poll
            return False

    async def record(self, move: AliasMove, *, source: str, receipt: str | None = None) -> str:
        """Record that `move.alias` serves `move.version` as of `move.at`, unless the bot's
        record already says so or saw a later state."""
        author = None
        if move.version is not None and self.registry is not None:
            try:
                author = await self.registry.version_author(move.model, move.version)
            except RegistryError as exc:
                log.info("no author for %s v%s: %s", move.model, move.version, exc)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self.pipeline.transact(
                    lambda session, now: self._apply(move, author, source, receipt,
                                                     session=session, now=now))
            except (IntegrityError, _Moved):
                if attempt == _ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _apply(self, move: AliasMove, author: str | None, source: str, receipt: str | None, *,
               session: Session, now: datetime) -> str:
        if receipt:
            if store.receipt_seen(receipt, session=session):
                return "duplicate delivery"
            store.keep_receipt(receipt, session=session, now=now)
        record = store.alias_record(move.model, move.alias, session=session)
        if record is None:
            store.add_alias_record(move.model, move.alias, move.version, session=session,
                                   at=move.at)
            before = None
        elif record.version == move.version:
            return "already recorded"
        elif record.observed_at > move.at:
            return "older than what the bot saw since"
        else:
            before = record.version
            if not store.move_alias_record(move.model, move.alias, expected=before,
                                           version=move.version, session=session, at=move.at):
                raise _Moved
        if before is None and move.version is None:
            return "nothing to record"
        change = Change(move.model, move.alias, before, move.version, move.at, author, source)
        store.add_change(change, session=session, now=now)
        self._note_followers(change, session=session, now=now)
        return "recorded"

    # --- polling ---------------------------------------------------------------------

    async def poll(self) -> int:
        """Read the serving alias of every model the bot knows; record the moves no webhook
        reported. Returns how many were recorded."""
        if self.registry is None:
            return 0
        since = self.clock() - POLL_ALERTS_WITHIN
        models = self.routing.named_models() | await self._read(
            lambda s: store.known_models(session=s, alerts_since=since))
        recorded = 0
        for model in sorted(models):
            alias = self.routing.serving_alias(model)
            record = await self._read(lambda s, m=model, a=alias: store.alias_record(m, a, session=s))
            if record is None:
                await self.learn(model)
                continue
            try:
                version = await self.registry.serving_version(model, alias)
            except RegistryError as exc:
                log.warning("poll: could not read %s@%s: %s", model, alias, exc)
                continue
            if version != record.version:
                outcome = await self.record(AliasMove(model, alias, version, self.clock()),
                                            source="poll")
                recorded += outcome == "recorded"
        return recorded

    async def run_polls(self, every_seconds: float, leading: Callable[[], bool]) -> None:
        """Poll every `every_seconds` while this process leads the timers (one poller
        among replicas; a takeover's overlap is harmless: a move is recorded once)."""
        while True:
            await asyncio.sleep(every_seconds)
            if not leading():
                continue
            try:
                found = await self.poll()
                if found:
                    log.info("registry poll recorded %d model change(s) no webhook reported",
                             found)
            except Exception:
                log.exception("registry poll failed; trying again in %ss", every_seconds)

    # --- incidents -------------------------------------------------------------------

    def _note_followers(self, change: Change, *, session: Session, now: datetime) -> None:
        """Open incidents that opened within the change window after `change` name it, and
        their Slack message is brought up to date."""
        if change.to_version is None:
            return
        for incident in store.incidents_after(change.model, since=change.moved_at,
                                              until=change.moved_at + self.routing.change_window,
                                              session=session):
            if self.serving_alias(change.model, incident.labels) != change.alias:
                continue
            add_timeline(incident, store.NOTE_KIND, change_note(change, incident.triggered_at),
                         session=session, actor="bot", now=now)
            owe(incident, "model_changed", session=session, policy=self.pipeline.policy,
                now=now)

    def note_openings(self, incident_ids: Iterable[int], *, session: Session,
                      now: datetime) -> None:
        """In intake's transaction: each new incident whose model's serving alias moved
        within the change window before it opened says so on its timeline (its first
        Slack post, made after this commit, shows it)."""
        for incident in store.incidents_by_id(list(incident_ids), session=session):
            change = self._preceding(incident, session=session)
            if change is not None:
                add_timeline(incident, store.NOTE_KIND,
                             change_note(change, incident.triggered_at),
                             session=session, actor="bot", now=now)

    def _preceding(self, incident: Incident, *, session: Session) -> Change | None:
        if not incident.model:
            return None
        window = self.routing.change_window
        alias = self.serving_alias(incident.model, incident.labels)
        return preceding(store.changes_between(
            session=session, since=incident.triggered_at - window, until=incident.triggered_at,
            model=incident.model, alias=alias), incident.triggered_at, window)

    async def change_before(self, incident_id: int) -> Change | None:
        """The serving-alias move the incident followed (within the change window), if any."""
        def find(session: Session) -> Change | None:
            incident = session.get(Incident, incident_id)
            return self._preceding(incident, session=session) if incident else None

        return await self._read(find)

    # --- reading ---------------------------------------------------------------------

    async def recent(self, *, model: str | None, period: timedelta) -> list[Change]:
        since = self.clock() - period
        return await self._read(lambda s: store.recent_changes(session=s, since=since,
                                                                model=model))

    async def latest(self, model: str, alias: str) -> Change | None:
        """The newest recorded move of `model`'s `alias` (runbooks' what_changed)."""
        return await self._read(lambda s: store.latest_change(model, alias, session=s))

    async def _keep(self, receipt: str) -> None:
        def keep(session: Session, now: datetime) -> None:
            if not store.receipt_seen(receipt, session=session):
                store.keep_receipt(receipt, session=session, now=now)

        try:
            await self.pipeline.transact(keep)
        except IntegrityError:
            pass

    async def _read(self, work: Callable[[Session], T]) -> T:
        def run() -> T:
            with self.pipeline.db.read() as session:
                return work(session)

        return await to_thread.run_sync(run)
