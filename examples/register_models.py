"""Registers the demo's model in MLflow and moves its `champion` alias.

    python examples/register_models.py --tracking-uri http://127.0.0.1:5000
        model `churn`: v1 (tag quality=good) and v2 (tag quality=bad); champion → v1
    python examples/register_models.py --tracking-uri http://127.0.0.1:5000 --promote-bad
        champion → the newest version tagged quality=bad (v2): the bad deploy

Each version comes from its own run (with training metrics), its source being the run's
artifacts (`runs:/<run_id>/model`: MLflow accepts that without an artifact actually being
there). The alias is moved with the bot's own registry client
(`bot.runbooks.registry.ModelRegistry.set_alias`), which records the move in tags on the
registered model, so the bot's `what_changed` knows which version served before and the
rollback runbook knows where to go back to. Setting up again changes nothing.

examples/model_server.py serves whatever `champion` points to and fails most predictions
of a version tagged quality=bad.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the bot, from a checkout

from bot.runbooks.registry import ModelRegistry  # noqa: E402

API = "/api/2.0/mlflow/"
ALIAS = "champion"
VERSIONS = (  # (quality, training metrics, description)
    ("good", {"auc": 0.91, "accuracy": 0.87}, "Gradient boosting on 12 months of data."),
    ("bad", {"auc": 0.93, "accuracy": 0.88},
     "Retrained with the new feature pipeline (schema mismatch in production)."),
)


class Mlflow:
    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client, self.url = client, url.rstrip("/")

    def call(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        response = self.client.request(method, f"{self.url}{API}{endpoint}", **kwargs)
        if response.status_code != 200:
            raise SystemExit(f"MLflow {method} {endpoint} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def versions(self, model: str) -> list[dict[str, Any]]:
        found = self.call("GET", "model-versions/search",
                          params={"filter": f"name='{model}'", "max_results": 100})
        return sorted(found.get("model_versions", []), key=lambda v: int(v["version"]))

    def create_version(self, model: str, quality: str, metrics: dict[str, float], description: str) -> str:
        run_id = self.call("POST", "runs/create", json={"experiment_id": "0", "run_name": f"{model}-{quality}"}
                           )["run"]["info"]["run_id"]
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            self.call("POST", "runs/log-metric", json={"run_id": run_id, "key": key, "value": value,
                                                       "timestamp": now, "step": 0})
        self.call("POST", "runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": now})
        return self.call("POST", "model-versions/create", json={
            "name": model, "source": f"runs:/{run_id}/model", "run_id": run_id, "description": description,
            "tags": [{"key": "quality", "value": quality}]})["model_version"]["version"]


def setup(mlflow: Mlflow, model: str) -> tuple[str, str]:
    """The model with one good and one bad version (created when missing): (good, bad)."""
    if mlflow.client.get(f"{mlflow.url}{API}registered-models/get", params={"name": model}).status_code != 200:
        mlflow.call("POST", "registered-models/create",
                    json={"name": model, "description": "Customer churn propensity (oncall-bot demo)."})
    by_quality: dict[str, str] = {}
    for version in mlflow.versions(model):
        quality = {t["key"]: t["value"] for t in version.get("tags", [])}.get("quality")
        by_quality.setdefault(quality, version["version"])
    for quality, metrics, description in VERSIONS:
        if quality not in by_quality:
            by_quality[quality] = mlflow.create_version(model, quality, metrics, description)
    return by_quality["good"], by_quality["bad"]


async def move_alias(tracking_uri: str, model: str, version: str) -> str | None:
    async with httpx.AsyncClient(timeout=10) as client:
        registry = ModelRegistry(client, tracking_uri, clock=lambda: datetime.now(UTC))
        return await registry.set_alias(model, ALIAS, version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"))
    parser.add_argument("--model", default="churn")
    parser.add_argument("--promote-bad", action="store_true",
                        help="move champion to the bad version (the deploy that goes wrong)")
    args = parser.parse_args(argv)
    with httpx.Client(timeout=10) as client:
        good, bad = setup(Mlflow(client, args.tracking_uri), args.model)
    target = bad if args.promote_bad else good
    before = asyncio.run(move_alias(args.tracking_uri, args.model, target))
    print(f"{args.model}: v{good} quality=good, v{bad} quality=bad; "
          f"{ALIAS}: v{before or '-'} → v{target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
