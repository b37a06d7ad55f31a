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

from bot.metrics import Metrics
from bot.usecases import DatabaseUnavailable, UseCases

log = logging.getLogger(__name__)


def register(app: FastAPI, *, usecases: UseCases, metrics: Metrics) -> None:
    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        problem = await to_thread.run_sync(usecases.readiness_problem)
        return JSONResponse({"status": problem or "ok"}, status_code=503 if problem else 200,
                            headers={"Retry-After": "5"} if problem else None)

    @app.get("/metrics")
    async def scrape() -> Response:
        try:
            body = await to_thread.run_sync(metrics.exposition)
        except DatabaseUnavailable as exc:
            log.warning("metrics: the database does not answer: %s", exc)
            return JSONResponse({"status": "database unavailable"}, status_code=503,
                                headers={"Retry-After": "5"})
        return Response(body, media_type=CONTENT_TYPE_LATEST)
