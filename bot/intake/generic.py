"""Our own small JSON format, for ML monitors that are not Alertmanager or Grafana.

A body is one alert object, or ``{"alerts": [...]}`` with at most 1000 of them
(the cap bounds the work one request can cause). The named fields exist so a
monitor cannot forget what routing needs; they are folded into labels and
annotations so the rest of the bot sees the same shape from every source.
See docs/intake.md for the field reference.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bot.domain.alert import Alert, AlertStatus, alert_fingerprint
from bot.intake import Status, StringMap, Timestamp, Wire, validate

MAX_ALERTS = 1000

NonEmpty = Annotated[str, Field(min_length=1)]


class GenericAlert(Wire):
    alertname: NonEmpty
    model: NonEmpty
    severity: Literal["critical", "page", "error", "warning", "info"]
    status: Status = "firing"
    version: str | None = None
    environment: str | None = None
    summary: str | None = None
    description: str | None = None
    labels: StringMap = {}
    annotations: StringMap = {}
    starts_at: Timestamp = None
    ends_at: Timestamp = None
    fingerprint: str | None = None
    generator_url: str | None = None

    def to_alert(self) -> Alert:
        # Explicit fields override same-named keys in labels/annotations: they
        # are the documented, validated way to say these things.
        named = {
            "alertname": self.alertname,
            "model": self.model,
            "model_version": self.version,
            "environment": self.environment,
            "severity": self.severity,
        }
        labels = {**self.labels, **{k: v for k, v in named.items() if v is not None}}
        texts = {"summary": self.summary, "description": self.description}
        annotations = {**self.annotations, **{k: v for k, v in texts.items() if v is not None}}
        return Alert(
            fingerprint=alert_fingerprint(self.fingerprint, labels),
            status=AlertStatus(self.status),
            labels=labels,
            annotations=annotations,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            source="generic",
            generator_url=self.generator_url or None,
        )


class Batch(Wire):
    alerts: Annotated[list[GenericAlert], Field(max_length=MAX_ALERTS)]


def parse(document: object) -> list[Alert]:
    """Alerts of one generic body; an object with an ``alerts`` key is a batch."""
    if isinstance(document, dict) and "alerts" in document:
        return [alert.to_alert() for alert in validate(Batch, document).alerts]
    return [validate(GenericAlert, document).to_alert()]
