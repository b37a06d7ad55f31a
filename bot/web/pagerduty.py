"""POST /webhooks/pagerduty: PagerDuty v3 webhooks (acknowledged and resolved in PagerDuty).

The body's HMAC-SHA256 under PAGERDUTY_WEBHOOK_SECRET must match one of the
`v1=` signatures (several during secret rotation), compared in constant time;
anything else is 401 and changes nothing. PagerDuty delivers at least once, so an
event whose `event.id` was applied before is answered 202 and ignored. The id is
inside the signed body: the unsigned X-Webhook-Id header would let anyone replay a
signed event under a new id. An event that happened (`event.occurred_at`) before
the incident last reopened is about the incident's earlier life, and is ignored
too, as are events for incidents the bot does not know. A transient database
failure answers 503, which PagerDuty retries.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.domain.messages import md
from bot.domain.permissions import Act
from bot.usecases import Actor, DatabaseUnavailable, UseCases
from bot.web.http import Rejected, decode_json, error_response, log_webhook, read_body

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # PagerDuty drops webhooks over 256 KB itself
_ACTIONS = {"incident.acknowledged": Act.ACKNOWLEDGE, "incident.resolved": Act.RESOLVE}


def signature_valid(secret: bytes, body: bytes, header: str) -> bool:
    expected = "v1=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    # Check every offered signature, so timing says nothing about which one matched.
    results = [hmac.compare_digest(expected.encode(), part.strip().encode())
               for part in header.split(",") if part.strip()]
    return any(results)


def _event(document: object) -> dict[str, Any]:
    event = document.get("event") if isinstance(document, dict) else None
    if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
        raise Rejected(422, "format", "not a PagerDuty v3 webhook: event.event_type is missing")
    if not isinstance(event.get("data"), dict):
        raise Rejected(422, "format", "not a PagerDuty v3 webhook: event.data is missing")
    if not isinstance(event.get("id"), str) or not event["id"]:
        raise Rejected(422, "format", "not a PagerDuty v3 webhook: event.id is missing")
    agent = event.get("agent")
    if agent is not None and not (isinstance(agent, dict)
                                  and isinstance(agent.get("summary") or "", str)):
        raise Rejected(422, "format", "not a PagerDuty v3 webhook: event.agent is not a "
                       "reference with a summary")
    return event


def _occurred_at(event: dict[str, Any]) -> datetime:
    try:
        occurred = datetime.fromisoformat(event.get("occurred_at"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        occurred = None
    if occurred is None or occurred.tzinfo is None:
        raise Rejected(422, "format", "not a PagerDuty v3 webhook: event.occurred_at is not "
                       "an ISO 8601 time with its offset")
    return occurred


def _receipt(event_id: str) -> str:
    """The key an event is remembered by: its id, hashed when longer than the record keeps."""
    if len(event_id) <= _RECEIPT_LENGTH:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


_RECEIPT_LENGTH = 200  # WebhookReceipt.id


def _actor(event: dict[str, Any]) -> Actor:
    """Who acted in PagerDuty. The agent's name is anyone's to choose, so it is shown
    as escaped text (never a mention), without control characters, at most 100 long."""
    agent = event.get("agent")
    summary = agent.get("summary") if isinstance(agent, dict) else None
    name = "".join(ch for ch in str(summary or "") if ch.isprintable())[:100] or "PagerDuty"
    return Actor(id=f"pagerduty:{name}", mention=md("{} (in PagerDuty)", name), via="pagerduty")


def register(app: FastAPI, *, usecases: UseCases, secret: bytes | None) -> None:
    @app.post("/webhooks/pagerduty", status_code=202)
    async def pagerduty_webhook(request: Request) -> JSONResponse:
        try:
            if secret is None:
                raise Rejected(401, "signature", "PAGERDUTY_WEBHOOK_SECRET is not configured, so "
                               "no webhook can be verified")
            body = await read_body(request.headers.get("content-length"), request.stream(),
                                   MAX_BODY)
            header = request.headers.get("x-pagerduty-signature", "")
            if not header or not signature_valid(secret, body, header):
                raise Rejected(401, "signature", "missing or wrong X-PagerDuty-Signature")
            event = _event(decode_json(body))
            action = _ACTIONS.get(event["event_type"])
            key = event["data"].get("incident_key")
            if action is None or not isinstance(key, str):
                log_webhook("pagerduty", 202, reason="event type not acted on")
                return JSONResponse({"ignored": f"{event['event_type']} is not acted on"},
                                    status_code=202)
            occurred = _occurred_at(event)
        except Rejected as exc:
            log_webhook("pagerduty", exc.status, reason=str(exc))
            return error_response(exc.status, str(exc), **exc.extra)
        try:
            outcome, changed = await usecases.apply_pagerduty_event(
                receipt=_receipt(event["id"]), incident_key=key, act=action, occurred=occurred,
                actor=_actor(event))
        except DatabaseUnavailable:
            log_webhook("pagerduty", 503, reason="the incident database is unavailable")
            return error_response(503, "the incident database is unavailable; retry later",
                                  headers={"Retry-After": "5"})
        # Our own outcome, up to its first colon (the rest may quote people's names).
        log_webhook("pagerduty", 202, changed=changed,
                    reason=None if changed else outcome.split(":")[0])
        return JSONResponse({"result": outcome}, status_code=202)
