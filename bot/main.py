"""create_app(settings): the one place where the database, clients and workers are built."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from bot import store
from bot.adapters.pagerduty import PagerDutyEvents
from bot.adapters.slack import SlackChat
from bot.adapters.tls import client_ssl_context
from bot.clock import Clock, utcnow
from bot.db import Database
from bot.metrics import Metrics
from bot.outbox import Backoff, Dispatcher
from bot.pipeline import Pipeline
from bot.routing_file import load_routing
from bot.settings import Settings
from bot.store import DeliveryPolicy
from bot.web import alerts, health

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock = utcnow) -> FastAPI:
    """Build the bot. Nothing connects until the app starts (its lifespan), which
    first migrates the database, then starts the outbox dispatcher."""
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds)
    routing = load_routing(settings.oncall_config)
    policy = DeliveryPolicy(slack=settings.slack_enabled, pagerduty=settings.paging_enabled,
                            default_channel=settings.slack_alert_channel)

    def read_counts() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        with db.read() as session:
            return store.incident_counts(session=session), store.delivery_counts(session=session)

    metrics = Metrics(read_counts)
    tls = client_ssl_context(settings.oncall_ca_bundle)
    pager = PagerDutyEvents(
        settings.pagerduty_routing_key.get_secret_value(),
        base_url=settings.pagerduty_events_url, ssl_context=tls,
        timeout=settings.delivery_timeout_seconds,
        per_minute=settings.pagerduty_events_per_minute,
    ) if settings.pagerduty_routing_key else None
    chat = SlackChat(
        settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
        ssl_context=tls, timeout=settings.delivery_timeout_seconds,
    ) if settings.slack_bot_token else None
    dispatcher = Dispatcher(
        db, pager=pager, chat=chat, metrics=metrics, clock=clock,
        backoff=Backoff(settings.outbox_backoff_base_seconds, settings.outbox_backoff_max_seconds),
        poll_seconds=settings.outbox_poll_seconds,
        # Longer than one attempt can take (each send is bounded by the timeout).
        lease=timedelta(seconds=3 * settings.delivery_timeout_seconds + 5),
    )
    pipeline = Pipeline(db, routing=routing, policy=policy, on_owed=dispatcher.wake, clock=clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(db.upgrade)
        for line in settings.disabled_deliveries():
            log.warning(line)
        worker = asyncio.create_task(dispatcher.run(), name="outbox")
        try:
            yield
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            if chat is not None:
                await chat.close()
            if pager is not None:
                pager.close()
            db.dispose()

    app = FastAPI(title="oncall-bot", lifespan=lifespan)
    app.state.db = db
    app.state.pipeline = pipeline
    app.state.dispatcher = dispatcher
    alerts.register(
        app, pipeline=pipeline, metrics=metrics, max_body=settings.alert_max_body_bytes,
        token=settings.alert_webhook_token.get_secret_value().encode()
        if settings.alert_webhook_token else None,
    )
    health.register(app, db=db, metrics=metrics)
    return app
