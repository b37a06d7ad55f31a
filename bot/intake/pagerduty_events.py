"""PagerDuty Events API v2 bodies (`POST /v2/enqueue`), as Alertmanager's
`pagerduty_configs`, Grafana's PagerDuty contact point and PagerDuty's clients send them.

The models are written from PagerDuty's OpenAPI description of `/enqueue`
(tests/unit/test_pagerduty_events.py checks them against it), plus the limits its
documentation states and the schema does not: `dedup_key` at most 255 characters and
required unless the action is `trigger`, `payload` required for `trigger`.

`routing_key` is checked by the HTTP edge before anything else; here it is only a
required string. Mapping an event to an `Alert` is pure: the dedup_key is the
fingerprint, labels come from the payload's named fields and `custom_details`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from bot.domain.alert import Alert, AlertStatus, alert_fingerprint
from bot.intake import Wire, validate

MAX_DEDUP_KEY = 255
Action = Literal["trigger", "acknowledge", "resolve"]
Severity = Literal["critical", "warning", "error", "info"]
# Alertmanager's default details: they describe one notification (which alerts, how
# many), not the alert, and change from one notification to the next.
ALERTMANAGER_DETAILS = ("firing", "resolved", "num_firing", "num_resolved")
# Alertmanager's default summary starts "[FIRING:3] " or "[RESOLVED] ".
_STATUS_PREFIX = re.compile(r"^\s*\[(?:FIRING:\d+|RESOLVED)\]\s*")
SOURCE = "events-api"


def _iso_time(value: object) -> datetime | None:
    """ISO 8601 with an offset: PagerDuty's own example writes `+0000`, which RFC 3339
    does not allow, so this is wider than the other parsers' timestamps."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise PydanticCustomError(
        "iso8601", "must be an ISO 8601 time with its offset, e.g. 2026-05-04T09:12:31Z")


IsoTime = Annotated[datetime | None, PlainValidator(_iso_time)]


class Link(Wire):
    href: str
    text: str | None = None


class Image(Wire):
    src: str
    href: str | None = None
    alt: str | None = None


class Payload(Wire):
    summary: str
    severity: Severity
    source: str
    timestamp: IsoTime = None
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(default=None, alias="class")
    custom_details: dict[str, Any] | None = None


class Event(Wire):
    routing_key: str
    event_action: Action
    dedup_key: Annotated[str, Field(min_length=1, max_length=MAX_DEDUP_KEY)] | None = None
    payload: Payload | None = None
    client: str | None = None
    client_url: str | None = None
    links: list[Link] | None = None
    images: list[Image] | None = None

    @model_validator(mode="after")
    def _required_by_action(self) -> Event:
        if self.event_action == "trigger" and self.payload is None:
            raise PydanticCustomError("required_for_action", "payload is required to trigger")
        if self.event_action != "trigger" and self.dedup_key is None:
            raise PydanticCustomError("required_for_action", "dedup_key is required to {action}",
                                      {"action": self.event_action})
        return self


def parse(document: object) -> Event:
    """The event, or PayloadError naming each problem by its field path."""
    return validate(Event, document)


def alertname(payload: Payload) -> str:
    """`class`; without one, the summary less Alertmanager's leading `[FIRING:N]` or
    `[RESOLVED]`, so that one Alertmanager group stays one alert as its count changes."""
    if payload.class_:
        return payload.class_
    return _STATUS_PREFIX.sub("", payload.summary, count=1).strip() or payload.summary


def labels_of(payload: Payload) -> dict[str, str]:
    """The string values of `custom_details` (less Alertmanager's own), then the named
    fields over them: a detail cannot pose as the severity or the alert's name."""
    details = payload.custom_details or {}
    labels = {key: value for key, value in details.items()
              if isinstance(value, str) and key not in ALERTMANAGER_DETAILS}
    named = {"alertname": alertname(payload), "severity": payload.severity,
             "source": payload.source, "component": payload.component,
             "group": payload.group, "class": payload.class_}
    labels.update({key: value for key, value in named.items() if value})
    return labels


def annotations_of(event: Event) -> dict[str, str]:
    payload = event.payload
    if payload is None:
        return {}
    annotations = {"summary": payload.summary}
    firing = (payload.custom_details or {}).get("firing")
    if isinstance(firing, str) and firing.strip():
        annotations["description"] = firing.strip()
    if event.links:
        annotations["dashboard_url"] = event.links[0].href
    return annotations


def to_alert(event: Event, dedup_key: str, *, labels: dict[str, str] | None = None) -> Alert:
    """The alert a trigger or resolve stands for. `labels`: those to use instead of the
    payload's (a resolve carries none, or other ones, and must find its trigger's group)."""
    payload = event.payload
    return Alert(
        fingerprint=alert_fingerprint(dedup_key, {}),
        status=AlertStatus.FIRING if event.event_action == "trigger" else AlertStatus.RESOLVED,
        labels=labels if labels is not None else labels_of(payload) if payload else {},
        annotations=annotations_of(event),
        starts_at=payload.timestamp if payload and event.event_action == "trigger" else None,
        ends_at=payload.timestamp if payload and event.event_action == "resolve" else None,
        source=SOURCE,
        generator_url=event.client_url or None,
    )
