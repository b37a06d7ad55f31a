"""Alertmanager ``webhook_config`` payloads (protocol version "4").

Only what becomes an ``Alert`` is validated: ``version`` (so a future protocol
fails loudly) and each alert. Group-level fields (``status``, ``receiver``,
``groupKey``, ``commonLabels``, ...) merely summarise the alerts, so they are
ignored rather than allowed to reject a usable batch. One batch can mix firing
and resolved alerts; each keeps its own status.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bot.domain.alert import Alert, AlertStatus, alert_fingerprint
from bot.intake import Status, StringMap, Timestamp, Wire, expect, validate


class WebhookAlert(Wire):
    """One entry of ``alerts[]``; attribute names mirror the wire so error paths do too."""

    status: Status
    # Alertmanager always sends alertname, but an empty label set is the only
    # thing that makes an alert unidentifiable, so that is what we reject.
    labels: Annotated[StringMap, Field(min_length=1)]
    annotations: StringMap = {}
    startsAt: Timestamp = None
    endsAt: Timestamp = None
    generatorURL: str = ""
    fingerprint: str = ""

    def to_alert(self, source: str, annotations: StringMap | None = None) -> Alert:
        return Alert(
            # Alertmanager's own fingerprint keeps our identity equal to the one
            # its UI and silences use; the label hash is for senders that omit it.
            fingerprint=alert_fingerprint(self.fingerprint, self.labels),
            status=AlertStatus(self.status),
            labels=self.labels,
            annotations=self.annotations if annotations is None else annotations,
            starts_at=self.startsAt,
            ends_at=self.endsAt,
            source=source,
            generator_url=self.generatorURL or None,
        )


class Payload(Wire):
    version: Annotated[str, expect("4")]
    alerts: list[WebhookAlert]


def parse(document: object) -> list[Alert]:
    """Alerts of one Alertmanager notification, in the order sent (may be empty)."""
    return [alert.to_alert("alertmanager") for alert in validate(Payload, document).alerts]
