"""POST /webhooks/pagerduty: PagerDuty v3 webhooks (acknowledged and resolved in PagerDuty).

The body's HMAC-SHA256 under PAGERDUTY_WEBHOOK_SECRET must match one of the
`v1=` signatures (several during secret rotation), compared in constant time;
anything else is 401 and changes nothing. PagerDuty delivers at least once, so a
delivery whose X-Webhook-Id (or event id) was applied before is answered 202 and
ignored; so are events for incidents the bot does not know. A transient database
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
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from bot.db import is_transient
from bot.domain.messages import md
from bot.incident_actions import ActionRefused, Actor, acknowledge, locked_by_key, resolve
from bot.models import WebhookReceipt
from bot.pipeline import Pipeline
from bot.store import DeliveryPolicy
from bot.web.http import Rejected, decode_json, error_response, read_body

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # PagerDuty drops webhooks over 256 KB itself
_ACTIONS = {"incident.acknowledged": "acknowledge", "incident.resolved": "resolve"}


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
    return event


def _actor(event: dict[str, Any]) -> Actor:
    """Who acted in PagerDuty. The agent's name is anyone's to choose, so it is shown
    as escaped text (never a mention), without control characters, at most 100 long."""
    agent = event.get("agent")
    summary = agent.get("summary") if isinstance(agent, dict) else None
    name = "".join(ch for ch in str(summary or "") if ch.isprintable())[:100] or "PagerDuty"
    return Actor(id=f"pagerduty:{name}", mention=md("{} (in PagerDuty)", name), via="pagerduty")


def register(app: FastAPI, *, pipeline: Pipeline, policy: DeliveryPolicy,
             secret: bytes | None) -> None:
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
        except Rejected as exc:
            return error_response(exc.status, str(exc), **exc.extra)
        action = _ACTIONS.get(event["event_type"])
        key = event["data"].get("incident_key")
        if action is None or not isinstance(key, str):
            return JSONResponse({"ignored": f"{event['event_type']} is not acted on"},
                                status_code=202)
        receipt = request.headers.get("x-webhook-id") or str(event.get("id") or "")

        def apply(session: Session, now: datetime) -> str:
            if receipt:
                if session.get(WebhookReceipt, receipt) is not None:
                    return "duplicate delivery: already applied"
                session.add(WebhookReceipt(id=receipt, received_at=now))
                session.flush()
            incident = locked_by_key(key, session=session)
            if incident is None:
                return "unknown incident: ignored"
            perform = acknowledge if action == "acknowledge" else resolve
            try:
                return perform(incident, session=session, policy=policy, now=now,
                               actor=_actor(event)).message
            except ActionRefused as exc:
                return f"nothing to do: {exc}"

        try:
            outcome = await pipeline.transact(apply)
        except IntegrityError:  # the same delivery, applied by a concurrent request
            outcome = "duplicate delivery: already applied"
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            return error_response(503, "the incident database is unavailable; retry later",
                          headers={"Retry-After": "5"})
        return JSONResponse({"result": outcome}, status_code=202)
