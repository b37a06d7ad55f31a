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
    escalated_team: str | None = None
    can_roll_back: bool = False  # a rollback runbook serves the incident's model
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def status_line(self) -> str:
        """mrkdwn, already escaped: Slack users are shown as mentions."""
        parts = [f"{self.firing} of {self.alert_count} alert(s) firing"]
        if self.triggered_at:
            parts.append(f"opened {self.triggered_at:%Y-%m-%d %H:%M:%S} UTC")
        if self.acknowledged_by:
            parts.append(f"acknowledged by {actor_mrkdwn(self.acknowledged_by)}")
        if self.escalated_team:
            parts.append(f"escalated to {mrkdwn(self.escalated_team)}")
        if self.resolved_at:
            parts.append(f"resolved {self.resolved_at:%H:%M:%S} UTC by "
                         f"{actor_mrkdwn(self.resolved_by or '')}")
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


def actor_mrkdwn(actor: str) -> str:
    """A timeline actor as Slack shows it: `slack:U123` becomes a mention."""
    kind, _, ident = actor.partition(":")
    if kind == "slack" and ident.isalnum():
        return f"<@{ident}>"
    return mrkdwn(ident if kind == "pagerduty" and ident else actor)


def truncate_to(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@cache
def _environment() -> Environment:
    # The templates ship with the package: no need to stat them at every message.
    env = Environment(loader=PackageLoader("bot", "templates"), undefined=StrictUndefined,
                      autoescape=False, auto_reload=False)
    env.filters["mrkdwn"] = mrkdwn
    env.filters["truncate_to"] = truncate_to
    return env


def incident_message(view: IncidentView) -> tuple[str, list[dict[str, Any]]]:
    """Fallback text (notifications, screen readers) and blocks for an incident."""
    blocks = json.loads(_environment().get_template("slack/incident.json.j2").render(i=view))
    text = f"[{view.state.upper()}] {view.tier} #{view.id}: {view.title}"
    return truncate_to(text, 3000), blocks


@dataclass(frozen=True, slots=True)
class RunStepView:
    name: str
    status: str
    duration_s: float
    output: str


@dataclass(frozen=True, slots=True)
class RunView:
    """What a runbook run's thread reply shows."""

    title: str  # "Diagnostics", "Rollback", "Runbook run"
    runbook: str
    status: str
    total: int
    steps: list[RunStepView]


def run_message(view: RunView) -> tuple[str, list[dict[str, Any]]]:
    blocks = json.loads(_environment().get_template("slack/run.json.j2").render(r=view))
    return truncate_to(f"{view.title} {view.runbook}: {view.status}", 3000), blocks
