"""GET /healthz (the process answers), GET /readyz (it can serve: the database answers
and its schema is one this code runs on) and GET /metrics (Prometheus text).

Kubernetes restarts a pod whose liveness probe fails and only stops routing to one
whose readiness probe fails: a database blip must do the latter, never the former.
"""

from __future__ import annotations

import logging

from anyio import to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from bot.db import Database, is_transient, known_revisions, schema_problem
from bot.metrics import Metrics

log = logging.getLogger(__name__)


def register(app: FastAPI, *, db: Database, metrics: Metrics) -> None:
    def not_ready() -> str | None:
        try:
            stamped = db.schema_revision()
        except SQLAlchemyError as exc:
            log.warning("readiness: the database does not answer: %s", type(exc).__name__)
            return "database unavailable"
        head, known = known_revisions()
        return schema_problem(stamped, head, known)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        problem = await to_thread.run_sync(not_ready)
        return JSONResponse({"status": problem or "ok"}, status_code=503 if problem else 200,
                            headers={"Retry-After": "5"} if problem else None)

    @app.get("/metrics")
    async def scrape() -> Response:
        try:
            body = await to_thread.run_sync(metrics.exposition)
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            log.warning("metrics: the database does not answer: %s", type(exc).__name__)
            return JSONResponse({"status": "database unavailable"}, status_code=503,
                                headers={"Retry-After": "5"})
        return Response(body, media_type=CONTENT_TYPE_LATEST)
