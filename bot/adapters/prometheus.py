"""Prometheus's HTTP API (`/api/v1/query`, `/api/v1/query_range`): PromQL for runbook steps.

Built once in create_app with PROMETHEUS_URL. It holds no client of its own: every query
goes through the run's guarded client (bot/adapters/http_probe.py), so the run's host
policy, the shared TLS trust (ONCALL_CA_BUNDLE) and the answer's size cap hold for it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bot.ports import Fetch, PrometheusError, Series


class PrometheusApi:
    """Implements `Prometheus`. `base_url`: the Prometheus asked when a query names none."""

    def __init__(self, base_url: str | None) -> None:
        self.base_url = base_url

    async def query(self, fetch: Fetch, promql: str, *, at: float, url: str | None = None,
                    range_s: float | None = None, step_s: float = 60.0,
                    timeout: float | None = None) -> list[Series]:
        base_url = url or self.base_url
        if not base_url:
            raise PrometheusError("no Prometheus to ask: set PROMETHEUS_URL or the step's url")
        if range_s:
            endpoint = "/api/v1/query_range"
            params: dict[str, Any] = {"query": promql, "start": at - range_s, "end": at,
                                      "step": step_s}
        else:
            endpoint, params = "/api/v1/query", {"query": promql, "time": at}
        response = await fetch.request("GET", base_url.rstrip("/") + endpoint, params=params,
                                       timeout=timeout)
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"Prometheus answered {response.status_code} and not JSON: "
                                  f"{response.text[:200]}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            found = body if isinstance(body, dict) else {}
            raise PrometheusError(f"Prometheus refused the query: {found.get('errorType')}: "
                                  f"{found.get('error')}")
        return _series(body.get("data") or {})


def _series(data: Mapping[str, Any]) -> list[Series]:
    """(labels, non-NaN sample values) of each series in an instant or range answer."""
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        result = [{"metric": {}, "value": result}]
    found = []
    for item in result or []:
        raw = item.get("values") or ([item["value"]] if "value" in item else [])
        values = [float(v) for _ts, v in raw if not math.isnan(float(v))]
        found.append(Series(item.get("metric", {}), values))
    return found
