"""A small model server for the end-to-end demo: serves whatever version MLflow's alias
points to, and exposes the metrics the shipped runbooks query.

    python examples/model_server.py --port 8000 --mlflow http://127.0.0.1:5000

- `POST /predict` with `{"instances": [[...], ...]}` (or any JSON, or nothing) answers
  `{"predictions": [...], "model": ..., "model_version": ...}`; a failed prediction answers
  500. With no version to serve (MLflow unreachable, no alias yet) it answers 503 and
  counts nothing: that is not the model's fault.
- `GET /metrics`: Prometheus text. `model_predictions_total` and
  `model_prediction_errors_total` (labels model, environment, model_version: every request
  is counted in the first, every failed one in both), `model_prediction_latency_seconds`
  (histogram), `model_prediction_drift_score` (gauge, labels model, environment,
  model_version, feature) and `model_serving_info` (1 for the version served now).
- `GET /healthz`: `{"model", "alias", "model_version", "quality"}`; 503 until a version is loaded.

Which version: `GET /api/2.0/mlflow/registered-models/alias?name=MODEL&alias=ALIAS` on
`MLFLOW_TRACKING_URI` (or `--mlflow`), polled every `--poll` seconds (default 1), so a
moved alias is served within about a second.

A "bad" version: one whose model-version tag `quality` is `bad` (`mlflow` UI or
`MlflowClient().set_model_version_tag(name, version, "quality", "bad")`). It fails 9 of
every 10 predictions, deterministically (every prediction whose sequence number is not a
multiple of 10), so an error-rate alert fires within seconds. Any other version fails none.

Standard library plus prometheus_client (a dependency of the bot) only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import urlopen

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("model_server")

BAD_TAG = ("quality", "bad")
BAD_FAILS_EVERY = 10  # a bad version succeeds on 1 prediction in 10
FEATURES = ("tenure_months", "monthly_charges", "support_calls")


class Model:
    """The served version and its behaviour; swapped atomically by the poller."""

    def __init__(self, name: str, environment: str, registry: CollectorRegistry) -> None:
        self.name, self.environment = name, environment
        self.version: str | None = None
        self.bad = False
        self.lock = threading.Lock()
        self.sequence = 0
        labels = ("model", "environment", "model_version")
        self.predictions = Counter("model_predictions", "Predictions asked for (failed ones too).",
                                   labels, registry=registry)
        self.errors = Counter("model_prediction_errors", "Predictions that failed.", labels,
                              registry=registry)
        self.latency = Histogram("model_prediction_latency_seconds", "Time to answer a prediction.",
                                 labels, registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.drift = Gauge("model_prediction_drift_score", "PSI of each input feature against training.",
                           (*labels, "feature"), registry=registry)
        self.info = Gauge("model_serving_info", "1 for the version this server serves now.", labels,
                          registry=registry)

    def load(self, version: str, bad: bool) -> None:
        with self.lock:
            if version == self.version and bad == self.bad:
                return
            previous = self.version
            self.version, self.bad = version, bad
        labels = (self.name, self.environment, version)
        # Series exist from 0 before the first prediction, so rate() sees the first failures.
        self.predictions.labels(*labels)
        self.errors.labels(*labels)
        self.latency.labels(*labels)
        for feature in FEATURES:
            self.drift.labels(*labels, feature).set(0.04 + 0.01 * FEATURES.index(feature))
        if previous is not None:
            self.info.labels(self.name, self.environment, previous).set(0)
        self.info.labels(*labels).set(1)
        log.warning("serving %s v%s%s (was v%s)", self.name, version, " [quality=bad]" if bad else "",
                    previous)

    def predict(self, instances: list[Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            version, bad = self.version, self.bad
            self.sequence += 1
            sequence = self.sequence
        if version is None:
            return 503, {"error": f"no version of {self.name} to serve yet"}
        labels = (self.name, self.environment, version)
        started = time.perf_counter()
        time.sleep(random.uniform(0.002, 0.008) * (3 if bad else 1))
        self.predictions.labels(*labels).inc()
        failed = bad and sequence % BAD_FAILS_EVERY != 0
        self.latency.labels(*labels).observe(time.perf_counter() - started)
        if failed:
            self.errors.labels(*labels).inc()
            return 500, {"error": f"{self.name} v{version} failed to score", "model_version": version}
        scores = [round(random.random(), 4) for _ in instances or [None]]
        return 200, {"predictions": scores, "model": self.name, "model_version": version}


def alias_version(tracking_uri: str, model: str, alias: str, timeout: float = 2.0) -> tuple[str, bool] | None:
    """(version, bad) behind the alias, or None when MLflow has no such alias (yet)."""
    query = urlencode({"name": model, "alias": alias})
    url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}"
    try:
        with urlopen(url, timeout=timeout) as response:  # noqa: S310 (a configured http URL)
            found = json.load(response)["model_version"]
    except HTTPError as exc:
        if exc.code in (400, 404):  # RESOURCE_DOES_NOT_EXIST / INVALID_PARAMETER_VALUE
            return None
        raise
    tags = {t["key"]: t["value"] for t in found.get("tags", [])}
    return str(found["version"]), tags.get(BAD_TAG[0]) == BAD_TAG[1]


def poll_alias(model: Model, tracking_uri: str, alias: str, every: float, stop: threading.Event) -> None:
    """Reloads when the alias moves; MLflow being down keeps the current version."""
    while not stop.is_set():
        try:
            found = alias_version(tracking_uri, model.name, alias)
            if found is not None:
                model.load(*found)
        except (URLError, OSError, ValueError, KeyError) as exc:
            log.info("MLflow not answering (%s); still serving v%s", exc, model.version)
        stop.wait(every)


def make_handler(model: Model, alias: str, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                status = 200 if model.version else 503
                self._send(status, json.dumps({"model": model.name, "alias": alias,
                                               "model_version": model.version,
                                               "quality": "bad" if model.bad else "good"}).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self.path.startswith("/predict"):
                self._send(404, b'{"error": "not found"}')
                return
            try:
                document = json.loads(raw) if raw else {}
            except ValueError:
                self._send(400, b'{"error": "body is not JSON"}')
                return
            instances = document.get("instances", []) if isinstance(document, dict) else []
            status, body = model.predict(instances if isinstance(instances, list) else [])
            self._send(status, json.dumps(body).encode())

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--mlflow", default=os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"))
    parser.add_argument("--model", default="churn")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--environment", default="production")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between alias look-ups")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s model_server %(message)s")

    registry = CollectorRegistry()
    model = Model(args.model, args.environment, registry)
    stop = threading.Event()
    poller = threading.Thread(target=poll_alias, args=(model, args.mlflow, args.alias, args.poll, stop),
                              daemon=True)
    poller.start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(model, args.alias, registry))
    server.daemon_threads = True
    log.warning("listening on http://%s:%d, serving %s@%s from %s", args.host, server.server_address[1],
                args.model, args.alias, args.mlflow)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
