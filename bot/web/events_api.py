"""POST /v2/enqueue: PagerDuty's Events API v2, so that whatever can page PagerDuty at a
configurable URL (Alertmanager's `pagerduty_configs` with `url:`, Grafana's PagerDuty
contact point, PagerDuty's client libraries) pages through the bot instead.

As at PagerDuty, the body's `routing_key` is the only authentication: it must be one
of EVENTS_INTAKE_ROUTING_KEYS, compared in constant time with every one of them, and
with none set every event is refused. The key never reaches a log line or the record.
Answers take PagerDuty's shapes: 202 `{status, message, dedup_key}`; 400 `{status,
message, errors}` for a wrong key or body (senders do not retry a 400); 503 while the
database is unavailable (they retry 5xx).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.intake import PayloadError
from bot.intake.pagerduty_events import parse
from bot.metrics import Metrics
from bot.usecases import DatabaseUnavailable, UseCases
from bot.usecases.events_intake import integration
from bot.web.http import Rejected, decode_json, log_webhook, read_body

log = logging.getLogger(__name__)
SOURCE = "events-api"
MAX_BODY = 512 * 1024  # PagerDuty's own limit for one event


def _invalid(problems: Sequence[str]) -> JSONResponse:
    return JSONResponse({"status": "invalid event", "message": "Event object is invalid",
                         "errors": list(problems)}, status_code=400)


def key_number(document: object, keys: Sequence[bytes]) -> int:
    """Which accepted key (1-based) the body's routing_key is; Rejected when none.
    Every key is compared, so timing says nothing about which matched or how nearly."""
    if not keys:
        raise Rejected(400, "token", "this receiver accepts no integration key: "
                       "EVENTS_INTAKE_ROUTING_KEYS is not set")
    offered = document.get("routing_key") if isinstance(document, dict) else None
    if not isinstance(offered, str):
        raise Rejected(400, "token", "routing_key: required, an integration key")
    results = [hmac.compare_digest(offered.encode(), key) for key in keys]
    if not any(results):
        raise Rejected(400, "token", "routing_key: not an integration key this receiver accepts")
    return results.index(True) + 1


def register(app: FastAPI, *, usecases: UseCases, metrics: Metrics,
             keys: Sequence[bytes]) -> None:
    """`keys`: EVENTS_INTAKE_ROUTING_KEYS, every one accepted; none: every event refused."""

    @app.post("/v2/enqueue", status_code=202)
    async def enqueue(request: Request) -> JSONResponse:
        try:
            document = decode_json(await read_body(request.headers.get("content-length"),
                                                   request.stream(), MAX_BODY))
            number = key_number(document, keys)
            try:
                event = parse(document)
            except PayloadError as exc:
                raise Rejected(400, "format", "not a valid Events API v2 event",
                               problems=exc.problems) from None
        except Rejected as exc:
            metrics.rejected.labels(SOURCE, exc.reason).inc()
            log_webhook(SOURCE, exc.status, reason=str(exc))
            problems = exc.extra.get("problems")
            return _invalid(problems if isinstance(problems, list) else [str(exc)])
        # PagerDuty makes the key of a trigger that has none, and returns it.
        dedup_key = event.dedup_key or uuid.uuid4().hex
        try:
            outcome = await usecases.take_event(event, dedup_key,
                                                actor=integration(number, event.client))
        except DatabaseUnavailable as exc:
            log.warning("database unavailable while taking an Events API event: %s",
                        type(exc).__name__)
            metrics.rejected.labels(SOURCE, "unavailable").inc()
            log_webhook(SOURCE, 503, reason="the incident database is unavailable")
            return JSONResponse({"status": "unavailable", "message":
                                 "the incident database is unavailable; retry later",
                                 "errors": []}, status_code=503, headers={"Retry-After": "5"})
        if event.event_action != "acknowledge":
            metrics.alerts.labels(SOURCE, "firing" if event.event_action == "trigger"
                                  else "resolved").inc()
        log_webhook(SOURCE, 202, alerts=0 if event.event_action == "acknowledge" else 1,
                    opened=outcome.opened, changed=outcome.changed)
        return JSONResponse({"status": "success", "message": "Event processed",
                             "dedup_key": dedup_key}, status_code=202)
