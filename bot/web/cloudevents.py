"""POST /webhooks/cloudevents: drift detectors' CloudEvents (binary or structured mode).

Authenticated as the alert webhooks are (ALERT_WEBHOOK_TOKEN as a bearer token), or,
for senders that cannot set a header (a Knative trigger, a detector's reply URL), by
the same token as the last path segment: `/webhooks/cloudevents/<token>`, compared in
constant time as well. The access log never shows that segment (bot/web/access.py).
Checks run before anything is written: token (401), size (413), JSON (400), a
CloudEvent holding a drift verdict (422; batched mode 415). A transient database
failure answers 503, which Knative and the detectors' senders retry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.intake import PayloadError
from bot.intake.cloudevents import Unsupported, drift_results, parse
from bot.metrics import Metrics
from bot.usecases import DatabaseUnavailable, UseCases
from bot.web.http import Rejected, check_token, decode_json, error_response, log_webhook, read_body

log = logging.getLogger(__name__)
SOURCE = "cloudevents"
PATH = "/webhooks/cloudevents"


def register(app: FastAPI, *, usecases: UseCases, metrics: Metrics, tokens: Sequence[bytes],
             max_body: int) -> None:
    """`tokens`: ALERT_WEBHOOK_TOKEN's, every one accepted; none: intake is open."""

    async def receive(request: Request, authorization: str) -> JSONResponse:
        try:
            check_token(authorization, tokens)
            body = await read_body(request.headers.get("content-length"), request.stream(),
                                   max_body)
            headers = {name.lower(): value for name, value in request.headers.items()}
            try:
                results = drift_results(parse(headers, body, decode_json))
            except PayloadError as exc:
                raise Rejected(422, "format", "not a drift detector's CloudEvent",
                               problems=exc.problems) from None
            except Unsupported as exc:
                raise Rejected(415, "format", str(exc)) from None
        except Rejected as exc:
            metrics.rejected.labels(SOURCE, exc.reason).inc()
            log_webhook(SOURCE, exc.status, reason=str(exc))
            return error_response(exc.status, str(exc), **exc.extra)
        try:
            result = await usecases.record_drift(results)
        except DatabaseUnavailable as exc:
            log.warning("database unavailable while recording drift: %s", type(exc).__name__)
            metrics.rejected.labels(SOURCE, "unavailable").inc()
            log_webhook(SOURCE, 503, reason="the incident database is unavailable")
            return error_response(503, "the incident database is unavailable; retry later",
                                  headers={"Retry-After": "5"})
        drifting = sum(r.drifting for r in results)
        log_webhook(SOURCE, 202, alerts=len(results), opened=result.opened,
                    changed=result.changed)
        return JSONResponse({"verdicts": len(results), "drifting": drifting,
                             "incidents_opened": result.opened,
                             "incidents_changed": sorted(result.changed)}, status_code=202)

    @app.post(PATH, status_code=202)
    async def with_bearer(request: Request) -> JSONResponse:
        return await receive(request, request.headers.get("authorization", ""))

    @app.post(PATH + "/{token:path}", status_code=202)
    async def with_path_token(request: Request, token: str) -> JSONResponse:
        return await receive(request, f"Bearer {token}")
