"""Alert webhooks: POST /webhooks/{alertmanager,grafana,generic}.

Checks run cheapest first and none of them touches the database: bearer token
(401), body size (413), JSON (400), payload format (422). Only then are the
alerts committed, and 202 is answered after the commit. A transient database
failure answers 503, because Alertmanager retries 5xx and drops every 4xx.

The busiest path of the bot is served by a plain ASGI middleware in front of the
FastAPI app: skipping the framework's routing, dependency and middleware layers
saves about a third of what a single-alert request costs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.intake import PARSERS, PayloadError
from bot.metrics import Metrics
from bot.usecases import DatabaseUnavailable, UseCases
from bot.web.http import Rejected, check_token, decode_json, error_response, log_webhook, read_body

log = logging.getLogger(__name__)
PREFIX = "/webhooks/"


class AlertWebhooks:
    """Serves POST /webhooks/<source> for the sources in PARSERS; passes the rest on."""

    def __init__(self, app: ASGIApp, *, usecases: UseCases, metrics: Metrics,
                 tokens: Sequence[bytes], max_body: int) -> None:
        self.app = app
        self.usecases = usecases
        self.metrics = metrics
        self.tokens = tokens
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        source = path[len(PREFIX):] if path.startswith(PREFIX) else None
        if source not in PARSERS:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            response = error_response(405, f"{path} takes POST", headers={"Allow": "POST"})
        else:
            response = await self.receive(source, Headers(scope=scope), _body(receive))
        await response(scope, receive, send)

    async def receive(self, source: str, headers: Headers,
                      body: AsyncIterator[bytes]) -> JSONResponse:
        started = time.perf_counter()
        try:
            check_token(headers.get("authorization", ""), self.tokens)
            document = decode_json(await read_body(headers.get("content-length"), body,
                                                   self.max_body))
            try:
                alerts = PARSERS[source](document)
            except PayloadError as exc:
                raise Rejected(422, "format", f"not a valid {source} payload",
                               problems=exc.problems) from None
        except Rejected as exc:
            self.metrics.rejected.labels(source, exc.reason).inc()
            log_webhook(source, exc.status, reason=str(exc))
            return error_response(exc.status, str(exc), **exc.extra)
        try:
            result = await self.usecases.ingest(alerts)
        except DatabaseUnavailable as exc:
            log.warning("database unavailable while ingesting %s alerts: %s", source, exc)
            self.metrics.rejected.labels(source, "unavailable").inc()
            log_webhook(source, 503, reason="the incident database is unavailable")
            return error_response(503, "the incident database is unavailable; retry later",
                                  headers={"Retry-After": "5"})
        for alert in alerts:
            self.metrics.alerts.labels(source, alert.status.value).inc()
        self.metrics.ingest_seconds.labels(source).observe(time.perf_counter() - started)
        log_webhook(source, 202, alerts=len(alerts), opened=result.opened, changed=result.changed)
        return JSONResponse(
            {"accepted": len(alerts), "incidents_opened": result.opened,
             "incidents_changed": sorted(result.changed)},
            status_code=202,
        )


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "http.disconnect":
            raise Rejected(400, "body", "the client went away before the whole body arrived")
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def register(app: FastAPI, *, usecases: UseCases, metrics: Metrics, tokens: Sequence[bytes],
             max_body: int) -> None:
    """`tokens`: ALERT_WEBHOOK_TOKEN's tokens, every one accepted; none: intake is open."""
    app.add_middleware(AlertWebhooks, usecases=usecases, metrics=metrics, tokens=tokens,
                       max_body=max_body)
