"""What a page says: the PagerDuty Events API v2 trigger built from an incident.

Every field is cut to fit what PagerDuty accepts, because a refused trigger is a
page never sent: `summary` to 1,024 characters, the whole event below 512 KB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

SUMMARY_LIMIT = 1024  # PagerDuty rejects longer payload.summary values
# PagerDuty documents no limit for source, component, group and class; they are
# names, so they are kept as short as the one name field it does bound (dedup_key).
FIELD_LIMIT = 255
LABEL_LIMIT = 1024  # each label name and value in custom_details
# PagerDuty refuses events over 512 KB; the labels get what the other fields leave.
LABELS_BUDGET = 256 * 1024

_SEVERITY = {"critical": "critical", "page": "critical", "error": "error",
             "warning": "warning", "info": "info"}


def pagerduty_severity(severity: str | None) -> str:
    """PagerDuty knows four severities; anything unknown pages as `error`."""
    return _SEVERITY.get((severity or "").lower(), "error")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _details_labels(labels: Mapping[str, str]) -> dict[str, str]:
    clipped = {_clip(name, LABEL_LIMIT): _clip(value, LABEL_LIMIT)
               for name, value in labels.items()}
    if len(json.dumps(clipped).encode()) <= LABELS_BUDGET:
        return clipped
    return {"note": f"{len(labels)} labels, too many for a PagerDuty event; "
                    "the incident record keeps them all"}


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
    payload: dict[str, Any] = {
        "summary": _clip(title, SUMMARY_LIMIT),
        "source": _clip(model or labels.get("instance") or source, FIELD_LIMIT),
        "severity": pagerduty_severity(severity),
        "custom_details": {"incident": incident_id, "labels": _details_labels(labels)},
    }
    if model:
        payload["component"] = _clip(model, FIELD_LIMIT)
    if environment:
        payload["group"] = _clip(environment, FIELD_LIMIT)
    if alertname:
        payload["class"] = _clip(alertname, FIELD_LIMIT)
    return payload
