"""Outermost ASGI middleware: a request id for every request's log lines, a count of
responses by handler and status (webhook 5xx are worth an alert), and the optional
access log (ACCESS_LOG=true).

The access log writes method, path, status, duration and client address only: never a
header (Authorization carries tokens), a query string or a body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot import logs
from bot.metrics import Metrics

log = logging.getLogger("oncall_bot.access")

# Paths the bot serves; any other is counted as "other", so a scanner's paths never
# become metric labels.
HANDLERS = frozenset({"/webhooks/alertmanager", "/webhooks/grafana", "/webhooks/generic",
                      "/webhooks/pagerduty", "/webhooks/cloudevents", "/v2/enqueue",
                      "/slack/events", "/healthz", "/readyz", "/metrics"})
# /webhooks/cloudevents/<token>: the path carries a secret, so it is logged and counted
# without it.
_TOKEN_PATH = "/webhooks/cloudevents/"
# A caller's X-Request-ID is kept only when it is short and plain (it goes into logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class AccessMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500  # an exception before the response started is a 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path, handler = _shown(scope.get("path", ""))
            self.metrics.responses.labels(handler, str(status)).inc()
            if self.access_log:
                client = scope.get("client")
                log.info("%s %s %d", scope.get("method"), path, status, extra={
                    "method": scope.get("method"), "path": path, "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "client": client[0] if client else None})
            logs.request_id.reset(token)


def _shown(path: str) -> tuple[str, str]:
    """The path as logged (no newline can forge a line in text logs; no path token) and
    the handler it is counted under."""
    if path.startswith(_TOKEN_PATH):
        return _TOKEN_PATH + "<token>", _TOKEN_PATH + "{token}"
    return repr(path)[1:-1][:200], path if path in HANDLERS else "other"
