"""GET /healthz (liveness plus a database check) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bot.db import Database
from bot.metrics import Metrics


def register(app: FastAPI, *, db: Database, metrics: Metrics) -> None:
    def database_ok() -> bool:
        try:
            with db.read() as session:
                session.exec(text("SELECT 1"))  # type: ignore[call-overload]
            return True
        except SQLAlchemyError:
            return False

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = await to_thread.run_sync(database_ok)
        return JSONResponse({"status": "ok" if ok else "database unavailable"},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def scrape() -> Response:
        body = await to_thread.run_sync(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
