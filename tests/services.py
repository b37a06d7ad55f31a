"""Real MLflow and Prometheus on 127.0.0.1 for tests, one of each per session.

Import the fixtures into a test module (or list this module in conftest's
`pytest_plugins`): `mlflow_server`, `prometheus_server` (with `model_metrics`, the
endpoint it scrapes) and `model_endpoint`. A missing server fails the test with how
to install it; nothing is skipped.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import start_http_server
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

MLFLOW_VERSION = "3.17.2"
STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(what: str, ready, process: subprocess.Popen, log: Path, seconds: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{what} not ready after {seconds}s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# --- MLflow -------------------------------------------------------------------------------

@dataclass
class MlflowServer:
    """`mlflow server` on a SQLite store, and helpers that set up the registry through its REST API."""

    url: str
    client: httpx.Client = field(repr=False)

    def call(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        response = self.client.request(method, f"{self.url}/api/2.0/mlflow/{endpoint}", **kwargs)
        assert response.status_code == 200, f"{method} {endpoint}: {response.status_code} {response.text}"
        return response.json()

    def create_model(self, name: str) -> None:
        self.call("POST", "registered-models/create", json={"name": name})

    def create_run(self, metrics: dict[str, float]) -> str:
        run_id = self.call("POST", "runs/create", json={"experiment_id": "0"})["run"]["info"]["run_id"]
        for key, value in metrics.items():
            self.call("POST", "runs/log-metric", json={"run_id": run_id, "key": key, "value": value,
                                                       "timestamp": int(time.time() * 1000), "step": 0})
        return run_id

    def create_version(self, name: str, *, run_id: str | None = None, tags: dict[str, str] | None = None) -> str:
        """A version whose source is the run's artifacts (MLflow refuses a bare local path
        unless it lies inside the run's artifact directory) or, without a run, an s3:// URI."""
        body: dict[str, Any] = {"name": name, "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        if run_id:
            body.update(run_id=run_id, source=f"runs:/{run_id}/model")
        else:
            body["source"] = f"s3://models/{name}/{time.time_ns()}"
        return self.call("POST", "model-versions/create", json=body)["model_version"]["version"]

    def set_alias_outside_bot(self, name: str, alias: str, version: str) -> None:
        """Move an alias the way the MLflow UI or client does: no oncall-bot tags."""
        self.call("POST", "registered-models/alias", json={"name": name, "alias": alias, "version": version})

    def alias(self, name: str, alias: str) -> str:
        reply = self.call("GET", "registered-models/alias", params={"name": name, "alias": alias})
        return reply["model_version"]["version"]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    try:
        import mlflow  # noqa: F401  (only to tell a missing install apart from a failing server)
    except ImportError:
        pytest.fail(f"MLflow is not installed: {sys.executable} -m pip install mlflow=={MLFLOW_VERSION}")
    directory = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = directory / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{directory}/mlflow.db",
             "--default-artifact-root", str(directory / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=directory, env={
                **os.environ,
                # Test-only: let its webhooks reach the bot on loopback over plain http.
                "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
                # Webhook secrets are stored encrypted; without a key each start makes one.
                "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(
                    os.urandom(32)).decode(),
                # It caches the webhook list per event for 60 s: a subscription a test
                # just made would miss the moves of the next minute.
                "MLFLOW_WEBHOOK_CACHE_TTL": "1",
            })
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=10) as client:
        try:
            _wait_for("mlflow server", lambda: client.get(f"{url}/health").status_code == 200, process, log)
            yield MlflowServer(url=url, client=client)
        finally:
            _stop(process)


# --- the metrics a model server exports ---------------------------------------------------

@dataclass
class ModelHealth:
    """What one (model, environment) looks like to Prometheus; tests change it at will."""

    error_ratio: float = 0.01
    predictions_per_second: float = 100.0
    latency_seconds: float = 0.1  # every prediction falls in the bucket just above this
    drift: dict[str, float] = field(default_factory=dict)  # feature -> score
    feature_age_seconds: dict[str, float] = field(default_factory=dict)  # feature set -> age
    version: str = "1"


LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ModelMetrics:
    """A collector computing counters from elapsed time, so rates equal the configured ones."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], ModelHealth] = {}
        self.started = time.time()

    def collect(self):
        elapsed = time.time() - self.started
        predictions = CounterMetricFamily("model_predictions", "predictions served",
                                          labels=["model", "environment", "model_version"])
        errors = CounterMetricFamily("model_prediction_errors", "failed predictions",
                                     labels=["model", "environment", "model_version"])
        latency = HistogramMetricFamily("model_prediction_latency_seconds", "prediction latency",
                                        labels=["model", "environment"])
        drift = GaugeMetricFamily("model_prediction_drift_score", "drift against training",
                                  labels=["model", "environment", "feature"])
        freshness = GaugeMetricFamily("feature_last_updated_timestamp_seconds", "last feature update",
                                      labels=["model", "environment", "feature_set"])
        for (model, environment), health in list(self.models.items()):
            count = health.predictions_per_second * elapsed
            predictions.add_metric([model, environment, health.version], count)
            errors.add_metric([model, environment, health.version], count * health.error_ratio)
            buckets = [(str(b), count if b >= health.latency_seconds else 0.0) for b in LATENCY_BUCKETS]
            latency.add_metric([model, environment], [*buckets, ("+Inf", count)],
                               sum_value=count * health.latency_seconds)
            for feature, score in health.drift.items():
                drift.add_metric([model, environment, feature], score)
            for feature_set, age in health.feature_age_seconds.items():
                freshness.add_metric([model, environment, feature_set], time.time() - age)
        yield from (predictions, errors, latency, drift, freshness)


@dataclass
class PrometheusServer:
    url: str
    metrics: ModelMetrics

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector; empty while Prometheus is still starting (it answers 503)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        if response.status_code != 200:
            return []
        return response.json()["data"]["result"]


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus scraping a ModelMetrics endpoint every second; ready once it holds samples.

    Register the models a test needs in `prometheus_server.metrics.models` before
    querying (the counters start at the fixture's start, so rates hold at once).
    """
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is not installed: apt-get install prometheus (binary /usr/bin/prometheus)")
    metrics = ModelMetrics()
    registry = CollectorRegistry()
    registry.register(metrics)
    metrics_port = free_port()
    server, thread = start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "models", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, cwd=directory)
    prometheus = PrometheusServer(url=f"http://127.0.0.1:{port}", metrics=metrics)

    def has_samples() -> bool:
        up = prometheus.query('up{job="models"} == 1')
        samples = prometheus.query('count_over_time(up{job="models"}[1m])')
        return bool(up) and bool(samples) and float(samples[0]["value"][1]) >= 3

    try:
        _wait_for("prometheus", has_samples, process, log)
        yield prometheus
    finally:
        _stop(process)
        server.shutdown()
        thread.join(timeout=5)


# --- a model's HTTP endpoint --------------------------------------------------------------

@dataclass
class ModelEndpoint:
    """Answers every GET with `status` and `body` after `unhealthy_for` failing (503) requests."""

    url: str = ""
    status: int = 200
    body: dict[str, Any] = field(default_factory=lambda: {"ready": True})
    unhealthy_for: int = 0
    requests: int = 0


@pytest.fixture
def model_endpoint() -> Iterator[ModelEndpoint]:
    endpoint = ModelEndpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            endpoint.requests += 1
            status = 503 if endpoint.requests <= endpoint.unhealthy_for else endpoint.status
            data = json.dumps(endpoint.body if status < 500 else {"ready": False}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


__all__ = ["MlflowServer", "ModelEndpoint", "ModelHealth", "ModelMetrics", "PrometheusServer", "free_port",
           "mlflow_server", "model_endpoint", "prometheus_server"]
