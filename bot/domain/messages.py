"""Slack messages for incidents: data in, Block Kit out, rendered by Jinja2 templates."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

LINK_ANNOTATIONS = (("runbook_url", "Runbook"), ("dashboard_url", "Dashboard"),
                    ("panel_url", "Panel"))


@dataclass(frozen=True, slots=True)
class IncidentView:
    """What an incident message shows; built from the incident row by the caller."""

    id: int
    title: str
    state: str
    tier: str
    route: str
    model: str | None = None
    version: str | None = None
    environment: str | None = None
    severity: str | None = None
    team: str | None = None
    description: str | None = None
    alert_count: int = 1
    firing: int = 1
    triggered_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def status_line(self) -> str:
        parts = [f"{self.firing} of {self.alert_count} alert(s) firing"]
        if self.triggered_at:
            parts.append(f"opened {self.triggered_at:%Y-%m-%d %H:%M:%S} UTC")
        if self.acknowledged_by:
            parts.append(f"acknowledged by {self.acknowledged_by}")
        if self.resolved_at:
            parts.append(f"resolved {self.resolved_at:%H:%M:%S} UTC by {self.resolved_by}")
        return " · ".join(parts)

    @property
    def links(self) -> list[dict[str, str]]:
        return [
            {"url": self.annotations[key], "label": label}
            for key, label in LINK_ANNOTATIONS
            if str(self.annotations.get(key, "")).startswith(("http://", "https://"))
        ]


def mrkdwn(text: object) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate_to(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@cache
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("bot", "templates"), undefined=StrictUndefined,
                      autoescape=False)
    env.filters["mrkdwn"] = mrkdwn
    env.filters["truncate_to"] = truncate_to
    return env


def incident_message(view: IncidentView) -> tuple[str, list[dict[str, Any]]]:
    """Fallback text (notifications, screen readers) and blocks for an incident."""
    blocks = json.loads(_environment().get_template("slack/incident.json.j2").render(i=view))
    text = f"[{view.state.upper()}] {view.tier} #{view.id}: {view.title}"
    return truncate_to(text, 3000), blocks
