"""What a page says: the PagerDuty Events API v2 trigger built from an incident."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUMMARY_LIMIT = 1024  # PagerDuty rejects longer payload.summary values

_SEVERITY = {"critical": "critical", "page": "critical", "error": "error",
             "warning": "warning", "info": "info"}


def pagerduty_severity(severity: str | None) -> str:
    """PagerDuty knows four severities; anything unknown pages as `error`."""
    return _SEVERITY.get((severity or "").lower(), "error")


def trigger_payload(
    *,
    title: str,
    severity: str | None,
    model: str | None,
    environment: str | None,
    alertname: str,
    incident_id: int,
    labels: Mapping[str, str],
    source: str,
) -> dict[str, Any]:
    """The `payload` object of a trigger event (summary, source and severity are required)."""
    summary = title if len(title) <= SUMMARY_LIMIT else title[: SUMMARY_LIMIT - 1] + "…"
    payload: dict[str, Any] = {
        "summary": summary,
        "source": model or labels.get("instance") or source,
        "severity": pagerduty_severity(severity),
        "custom_details": {"incident": incident_id, "labels": dict(labels)},
    }
    if model:
        payload["component"] = model
    if environment:
        payload["group"] = environment
    if alertname:
        payload["class"] = alertname
    return payload
