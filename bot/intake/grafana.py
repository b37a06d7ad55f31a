"""Grafana unified alerting webhook payloads (protocol version "1").

Grafana sends the Alertmanager body plus extras (``orgId``, ``title``, ``state``,
``message``; per alert ``silenceURL``, ``dashboardURL``, ``panelURL``, ``values``,
...), so alerts are read exactly as in the Alertmanager parser. The one addition:
``dashboardURL``/``panelURL`` are the links a responder wants first, and
``Alert`` has no field for them, so they are copied into annotations as
``dashboard_url``/``panel_url`` when non-empty, unless the rule author already
set an annotation of that name (theirs wins).
"""

from __future__ import annotations

from typing import Annotated

from bot.domain.alert import Alert
from bot.intake import Wire, expect, validate
from bot.intake.alertmanager import WebhookAlert


class GrafanaAlert(WebhookAlert):
    dashboardURL: str = ""
    panelURL: str = ""

    def links(self) -> dict[str, str]:
        found = {"dashboard_url": self.dashboardURL, "panel_url": self.panelURL}
        return {name: url for name, url in found.items() if url}


class Payload(Wire):
    version: Annotated[str, expect("1")]
    alerts: list[GrafanaAlert]


def parse(document: object) -> list[Alert]:
    """Alerts of one Grafana notification, in the order sent (may be empty)."""
    return [
        alert.to_alert("grafana", annotations={**alert.links(), **alert.annotations})
        for alert in validate(Payload, document).alerts
    ]
