"""create_app(settings): the one place where the database, clients and workers are built."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot import retention, store
from bot.adapters.http_probe import HttpProbe
from bot.adapters.mlflow import MlflowRegistry
from bot.adapters.oncall import PagerDutyNotes, PagerDutyOnCall
from bot.adapters.pagerduty import PagerDutyEvents
from bot.adapters.prometheus import PrometheusApi
from bot.adapters.slack import SlackChat
from bot.adapters.tls import client_ssl_context
from bot.clock import Clock, Monotonic, utcnow
from bot.db import Database, unavailable_when_transient
from bot.domain.delivery import parse_mention
from bot.metrics import Metrics, RecordSnapshot
from bot.outbox import Backoff, Dispatcher, PageAlarm
from bot.permissions import Gatekeeper
from bot.pipeline import Pipeline
from bot.routing_file import load_routing
from bot.runbooks import RunContext, configured, load_runbooks, unmet_prerequisites
from bot.runs import RunWorker
from bot.settings import Settings, routing_keys
from bot.slack_app import build_slack_app
from bot.store import DeliveryPolicy
from bot.store.leader import LeaderLock
from bot.timers import LEADER_APPLICATION_NAME, LEADER_LOCK, TimerService
from bot.usecases import UseCases
from bot.usecases.changes import ModelChanges
from bot.usecases.console import Console
from bot.web import alerts, cloudevents, events_api, health, slack_events
from bot.web import console as console_web
from bot.web import mlflow as mlflow_webhook
from bot.web import pagerduty as pagerduty_webhook
from bot.web.access import AccessMiddleware

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock = utcnow,
               monotonic: Monotonic = time.monotonic) -> FastAPI:
    """Build the bot. Nothing connects until the app starts (its lifespan), which
    first migrates the database, then starts the outbox dispatcher. `clock` tells the time
    of day; `monotonic` times the rate limits and intake's load average."""
    db = Database(settings.database_url, lock_timeout=settings.database_lock_timeout_seconds,
                  pool_size=settings.database_pool_size)
    routing = load_routing(settings.oncall_config)
    # Read once, now: a key variable changed later changes nothing until a restart.
    keys = routing_keys(routing)
    policy = DeliveryPolicy(slack=settings.slack_enabled, pagerduty=settings.paging_enabled,
                            default_channel=settings.slack_alert_channel,
                            pagerduty_notes=settings.pagerduty_api_token is not None,
                            routing_keys_set=frozenset(keys))

    def read_record() -> RecordSnapshot:
        """A transient database failure fails the scrape with DatabaseUnavailable (503)."""
        now = clock()
        with unavailable_when_transient(), db.read() as session:
            outbox = store.outbox_stats(session=session)
            return RecordSnapshot(
                incidents=store.open_incident_counts(session=session),
                pending={target: s.pending for target, s in outbox.items()},
                failed={target: s.failed for target, s in outbox.items()},
                oldest_pending_seconds={
                    target: max(0.0, (now - s.oldest_pending).total_seconds())
                    for target, s in outbox.items() if s.oldest_pending is not None},
                pages_undelivered=store.pages_owed_since(
                    session=session, since=now - settings.page_undelivered_alert_after))

    metrics = Metrics(read_record, leading=lambda: timers.scheduler is not None)
    runbooks = (load_runbooks(settings.oncall_runbooks) if settings.oncall_runbooks.is_dir()
                else {})
    tls = client_ssl_context(settings.oncall_ca_bundle)
    pager = PagerDutyEvents(
        settings.pagerduty_routing_key.get_secret_value(),
        base_url=settings.pagerduty_events_url, ssl_context=tls,
        timeout=settings.delivery_timeout_seconds,
        per_minute=settings.pagerduty_events_per_minute, routing_keys=keys, monotonic=monotonic,
    ) if settings.pagerduty_routing_key else None
    chat = SlackChat(
        settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
        ssl_context=tls, timeout=settings.delivery_timeout_seconds,
    ) if settings.slack_bot_token else None
    notes = PagerDutyNotes(
        settings.pagerduty_api_token.get_secret_value(), base_url=settings.pagerduty_api_url,
        ssl_context=tls, timeout=settings.delivery_timeout_seconds,
        from_email=settings.pagerduty_from_email,
    ) if settings.pagerduty_api_token else None
    dispatcher = Dispatcher(
        db, pager=pager, chat=chat, notes=notes, metrics=metrics, clock=clock, monotonic=monotonic,
        runbooks=runbooks, intake_load=lambda: pipeline.load(),
        backoff=Backoff(settings.outbox_backoff_base_seconds, settings.outbox_backoff_max_seconds),
        poll_seconds=settings.outbox_poll_seconds,
        budget=settings.delivery_retry_budget,
        alarm=PageAlarm(after=settings.page_undelivered_alert_after,
                        mention=parse_mention(settings.page_undelivered_mention),
                        default_channel=settings.slack_alert_channel),
        # Longer than one attempt can take (each send is bounded by the timeout).
        lease=timedelta(seconds=3 * settings.delivery_timeout_seconds + 5),
    )
    pipeline = Pipeline(db, routing=routing, policy=policy, courier=dispatcher,
                        on_runs=lambda: runs.wake(), clock=clock, monotonic=monotonic,
                        runbooks=runbooks,
                        on_opened=lambda ids, *, session, now: changes.note_openings(
                            ids, session=session, now=now))
    registry = MlflowRegistry(
        settings.mlflow_tracking_uri, ssl_context=tls, timeout=settings.delivery_timeout_seconds,
        clock=clock) if settings.mlflow_tracking_uri else None
    changes = ModelChanges(pipeline, registry=registry, routing=routing, clock=clock)
    # Every run fetches through this one guarded client, within its runbook's host policy.
    probe = HttpProbe(ssl_context=tls)
    prometheus = PrometheusApi(settings.prometheus_url)
    runs = RunWorker(
        db, runbooks=runbooks, policy=policy, on_owed=dispatcher.wake, clock=clock,
        poll_seconds=settings.outbox_poll_seconds,
        # Renewed while the run goes on; a dead process's runs are free again this soon.
        lease=timedelta(seconds=3 * settings.delivery_timeout_seconds + 5),
        context=lambda **facts: RunContext(
            prometheus_url=settings.prometheus_url, mlflow_uri=settings.mlflow_tracking_uri,
            allowed_hosts=settings.runbook_http_allowed_hosts, probe=probe, prometheus=prometheus,
            clock=clock, recorded_change=changes.latest, secrets=(*settings.secret_values(),
                                  *(key.get_secret_value() for key in keys.values())), **facts),
    )
    oncall = PagerDutyOnCall(
        settings.pagerduty_api_token.get_secret_value(), base_url=settings.pagerduty_api_url,
        ssl_context=tls, timeout=settings.delivery_timeout_seconds,
        escalation_policy_ids=settings.id_list(settings.pagerduty_escalation_policy_ids),
        schedule_ids=settings.id_list(settings.pagerduty_schedule_ids),
    ) if settings.pagerduty_api_token else None
    console = Console(db=db, secret=settings.console_secret.get_secret_value()
                      if settings.console_secret else None,
                      public_url=settings.public_url, clock=clock,
                      slack=chat.client if chat is not None else None)
    usecases = UseCases(
        pipeline=pipeline, db=db, routing=routing, policy=policy, oncall=oncall,
        gatekeeper=Gatekeeper(routing.permissions, slack=chat.client, oncall=oncall)
        if chat is not None else None,
        runbooks=runbooks, registry=registry, changes=changes, console=console)
    timers = TimerService(
        usecases, leader=LeaderLock(db, key=LEADER_LOCK, application_name=LEADER_APPLICATION_NAME),
        jobstore_engine=db.jobstore_engine, routing=routing,
        reconcile_seconds=settings.timer_reconcile_seconds)
    slack_app = build_slack_app(
        signing_secret=settings.slack_signing_secret.get_secret_value()
        if settings.slack_signing_secret else "",
        client=chat.client, usecases=usecases,
    ) if chat is not None and (settings.slack_signing_secret or settings.slack_app_token) else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(db.upgrade)
        for line in settings.disabled_deliveries():
            log.warning(line)
        for line in unmet_prerequisites(runbooks, configured(runs.context())):
            log.warning(line)
        if chat is not None:
            chat.start()
        socket_mode = None
        if slack_app is not None and settings.slack_app_token:
            socket_mode = AsyncSocketModeHandler(slack_app,
                                                 settings.slack_app_token.get_secret_value())
            await socket_mode.connect_async()
        workers = [asyncio.create_task(dispatcher.run(), name="outbox"),
                   asyncio.create_task(timers.run(), name="timers"),
                   asyncio.create_task(runs.run(), name="runbooks"),
                   asyncio.create_task(retention.run_periodically(
                       db, lambda: settings.retention_cutoffs(clock()),
                       every_seconds=settings.retention_interval_seconds), name="retention")]
        if registry is not None and settings.mlflow_poll_seconds > 0:
            workers.append(asyncio.create_task(changes.run_polls(
                settings.mlflow_poll_seconds, leading=lambda: timers.scheduler is not None),
                name="registry-poll"))
        try:
            yield
        finally:
            # A send that finishes within a delivery timeout is recorded, not repeated.
            await dispatcher.drain(settings.delivery_timeout_seconds + 2)
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if socket_mode is not None:
                await socket_mode.close_async()
            if chat is not None:
                await chat.close()
            await probe.aclose()
            if registry is not None:
                await registry.close()
            for client in (pager, oncall, notes):
                if client is not None:
                    client.close()
            db.dispose()

    # No /docs, /redoc or /openapi.json: nobody needs them, and they map the bot for anyone.
    app = FastAPI(title="oncall-bot", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.db = db
    app.state.pipeline = pipeline
    app.state.usecases = usecases
    app.state.dispatcher = dispatcher
    app.state.timers = timers
    app.state.runs = runs
    app.state.console = console
    app.state.changes = changes
    alerts.register(
        app, usecases=usecases, metrics=metrics, max_body=settings.alert_max_body_bytes,
        tokens=settings.alert_webhook_tokens,
    )
    health.register(app, usecases=usecases, metrics=metrics)
    events_api.register(app, usecases=usecases, metrics=metrics,
                        keys=settings.events_intake_keys)
    cloudevents.register(app, usecases=usecases, metrics=metrics,
                         tokens=settings.alert_webhook_tokens,
                         max_body=settings.alert_max_body_bytes)
    pagerduty_webhook.register(
        app, usecases=usecases,
        secret=settings.pagerduty_webhook_secret.get_secret_value().encode()
        if settings.pagerduty_webhook_secret else None,
    )
    console_web.register(app, console=console)
    mlflow_webhook.register(
        app, usecases=usecases,
        secret=settings.mlflow_webhook_secret.get_secret_value().encode()
        if settings.mlflow_webhook_secret else None)
    if slack_app is not None and settings.slack_signing_secret:
        slack_events.register(app, slack_app=slack_app)
    # Added last, so it is outermost: it sees every response, the alert webhooks' too.
    app.add_middleware(AccessMiddleware, metrics=metrics, access_log=settings.access_log)

    return app
