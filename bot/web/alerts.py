"""Alert webhooks: POST /webhooks/{alertmanager,grafana,generic}.

Checks run cheapest first and none of them touches the database: bearer token
(401), body size (413), JSON (400), payload format (422). Only then are the
alerts committed, and 202 is answered after the commit. A transient database
failure answers 503, because Alertmanager retries 5xx and drops every 4xx.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from bot.db import is_transient
from bot.intake import PARSERS, PayloadError
from bot.metrics import Metrics
from bot.pipeline import Pipeline
from bot.web.http import Rejected, check_token, decode_json, error_response, read_body

log = logging.getLogger(__name__)


def register(app: FastAPI, *, pipeline: Pipeline, metrics: Metrics, token: bytes | None,
             max_body: int) -> None:
    router = APIRouter()

    async def receive(source: str, request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            check_token(request, token)
            document = decode_json(await read_body(request, max_body))
            try:
                alerts = PARSERS[source](document)
            except PayloadError as exc:
                raise Rejected(422, "format", f"not a valid {source} payload",
                               problems=exc.problems) from None
        except Rejected as exc:
            metrics.rejected.labels(source, exc.reason).inc()
            return error_response(exc.status, str(exc), **exc.extra)
        try:
            result = await pipeline.ingest(alerts)
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            log.warning("database unavailable while ingesting %s alerts: %s", source,
                        type(exc).__name__)
            metrics.rejected.labels(source, "unavailable").inc()
            return error_response(503, "the incident database is unavailable; retry later",
                          headers={"Retry-After": "5"})
        for alert in alerts:
            metrics.alerts.labels(source, alert.status.value).inc()
        metrics.ingest_seconds.labels(source).observe(time.perf_counter() - started)
        return JSONResponse(
            {"accepted": len(alerts), "incidents_opened": result.opened,
             "incidents_changed": sorted(result.changed)},
            status_code=202,
        )

    for source in PARSERS:
        router.add_api_route(
            f"/webhooks/{source}",
            _endpoint(receive, source),
            methods=["POST"],
            name=f"{source}_webhook",
            summary=f"Receive {source} alerts",
        )
    app.include_router(router)


def _endpoint(receive, source: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> JSONResponse:
        return await receive(source, request)

    return endpoint
