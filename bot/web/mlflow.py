"""POST /webhooks/mlflow: MLflow OSS 3.x model registry webhooks become model changes.

MLflow signs each delivery (mlflow/webhooks/delivery.py, 3.17): `X-MLflow-Signature:
v1,<base64 HMAC-SHA256(secret, "{delivery_id}.{timestamp}.{body}")>` with the
`X-MLflow-Delivery-Id` (a uuid4) and `X-MLflow-Timestamp` (unix seconds) headers.
Unsigned, wrongly signed, or stamped more than five minutes from our clock: 401,
nothing changed. With no MLFLOW_WEBHOOK_SECRET every delivery is refused. A delivery
applied before (same signed delivery id: MLflow's retries resend it unchanged, an
attacker's replay too) is answered 200 and changes nothing. A database failure is
503, which MLflow retries (429 and 5xx, three times).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.domain.changes import EventError, parse_event
from bot.usecases import DatabaseUnavailable, UseCases
from bot.web.http import Rejected, decode_json, error_response, log_webhook, read_body

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # a registry event is a few hundred bytes; tags and descriptions more
TOLERANCE_SECONDS = 300
_DELIVERY_ID_LENGTH = 100  # MLflow sends a uuid4 (36); WebhookReceipt.id keeps 200


def signature_valid(secret: bytes, delivery_id: str, timestamp: str, body: bytes,
                    header: str) -> bool:
    """MLflow's v1 signature, compared in constant time. The body is signed as sent."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = b"v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest())
    return hmac.compare_digest(expected, header.strip().encode())


def _fresh(timestamp: str, now: datetime) -> bool:
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    return abs(now.timestamp() - sent) <= TOLERANCE_SECONDS


def register(app: FastAPI, *, usecases: UseCases, secret: bytes | None) -> None:
    @app.post("/webhooks/mlflow")
    async def mlflow_webhook(request: Request) -> JSONResponse:
        try:
            if secret is None:
                raise Rejected(401, "signature", "MLFLOW_WEBHOOK_SECRET is not configured, so no "
                               "MLflow webhook can be verified")
            body = await read_body(request.headers.get("content-length"), request.stream(),
                                   MAX_BODY)
            delivery_id = request.headers.get("x-mlflow-delivery-id", "")
            timestamp = request.headers.get("x-mlflow-timestamp", "")
            header = request.headers.get("x-mlflow-signature", "")
            if not (delivery_id and timestamp and header) or not signature_valid(
                    secret, delivery_id, timestamp, body, header):
                raise Rejected(401, "signature", "missing or wrong X-MLflow-Signature")
            if not _fresh(timestamp, usecases.now()):
                raise Rejected(401, "signature", "X-MLflow-Timestamp is more than five minutes "
                               "from the bot's clock: a stale or replayed delivery")
            if len(delivery_id) > _DELIVERY_ID_LENGTH:
                raise Rejected(400, "format", "X-MLflow-Delivery-Id is too long")
            try:
                event = parse_event(decode_json(body))
            except EventError as exc:
                raise Rejected(422, "format", f"not an MLflow registry webhook: {exc}") from None
        except Rejected as exc:
            log_webhook("mlflow", exc.status, reason=str(exc))
            return error_response(exc.status, str(exc), **exc.extra)
        if event is None:
            log_webhook("mlflow", 200, reason="event not acted on")
            return JSONResponse({"result": "event not acted on"})
        try:
            outcome = await usecases.registry_event(event, receipt=f"mlflow:{delivery_id}")
        except DatabaseUnavailable:
            log_webhook("mlflow", 503, reason="the incident database is unavailable")
            return error_response(503, "the incident database is unavailable; retry later",
                                  headers={"Retry-After": "5"})
        log_webhook("mlflow", 200, reason=outcome)
        return JSONResponse({"result": outcome})
