"""The orchestrator: moves alerts through the pure core into the store and wakes delivery."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from anyio import to_thread
from sqlalchemy.exc import IntegrityError

from bot import store
from bot.clock import Clock, utcnow
from bot.db import Database
from bot.domain.alert import Alert
from bot.domain.routing import RoutingConfig
from bot.store import DeliveryPolicy, IngestResult

log = logging.getLogger(__name__)

# Two replicas may open an incident for the same group at the same moment; the
# database refuses the second (unique open_group_hash) and a retry joins the first.
_CONFLICT_RETRIES = 3


class Pipeline:
    def __init__(self, db: Database, *, routing: RoutingConfig, policy: DeliveryPolicy,
                 on_owed: Callable[[], None], clock: Clock = utcnow) -> None:
        self.db = db
        self.routing = routing
        self.policy = policy
        self.on_owed = on_owed
        self.clock = clock

    async def ingest(self, alerts: Sequence[Alert]) -> IngestResult:
        """Commit the alerts and what they change; returns once it is durable.

        Transient database errors (busy, down) propagate: the caller answers 503
        so that the sender retries.
        """
        result = await to_thread.run_sync(self._ingest, alerts)
        if result.deliveries:
            self.on_owed()
        return result

    def _ingest(self, alerts: Sequence[Alert]) -> IngestResult:
        for attempt in range(1, _CONFLICT_RETRIES + 1):
            try:
                with self.db.write() as session:
                    return store.apply_alerts(alerts, session=session, routing=self.routing,
                                              policy=self.policy, now=self.clock())
            except IntegrityError:
                if attempt == _CONFLICT_RETRIES:
                    raise
                log.info("concurrent incident change; retrying the batch (attempt %d)", attempt)
        raise AssertionError("unreachable")
