"""End to end with real monitoring: a bad model version is caught, paged, diagnosed and
rolled back. Real MLflow, Prometheus and Alertmanager, the example model server and its
traffic, the bot as `oncall-bot serve`, and the Slack and PagerDuty stand-ins; the steps
are examples/demo/scenario.py's `Demo`, the same ones `oncall-bot demo` narrates.

About two minutes, most of it MLflow starting and the rollback's health check, which
passes once the bad version's failures have left the alert's health_window (see
examples/alert_rules.yml, keep_firing_for).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.demo.scenario import MODEL, ON_CALL, STORY, Demo, DemoError


def in_order(kinds: list[str], story: tuple[str, ...]) -> bool:
    """Whether `story` appears in `kinds` as a subsequence (other entries may come between)."""
    remaining = iter(kinds)
    return all(kind in remaining for kind in story)


@pytest.fixture
def demo(tmp_path: Path):
    with Demo(tmp_path / "demo", deadline_seconds=300) as running:
        try:
            running.start()
        except DemoError as exc:
            pytest.fail(str(exc))
        yield running


def test_a_bad_version_is_caught_paged_diagnosed_and_rolled_back(demo: Demo):
    try:
        story(demo)
    except DemoError as exc:
        pytest.fail(str(exc))


def story(demo: Demo) -> None:
    good, bad = demo.good, demo.bad
    assert (good, bad) == ("1", "2")
    assert demo.champion() == good and demo.serving() == good

    demo.promote_bad_version()
    incident = demo.wait_for_incident()
    # Through real Alertmanager: the webhook source, and Prometheus's labels on the alert.
    assert incident.source == "alertmanager"
    assert (incident.model, incident.version, incident.environment) == (MODEL, bad, "production")
    assert (incident.tier, incident.runbook) == ("L1", "error-rate-high")
    (occurrence,) = demo.rows("SELECT labels, annotations FROM alertoccurrence WHERE incident_id = :i",
                              i=incident.id)
    labels = occurrence.labels if isinstance(occurrence.labels, dict) else json.loads(occurrence.labels)
    assert labels["alertname"] == "ModelErrorRateHigh" and labels["model_version"] == bad

    trigger = demo.wait_for_page()
    assert trigger["event"]["routing_key"] and trigger["dedup_key"] == incident.key

    diagnostics = demo.wait_for_diagnostics()
    assert "error-rate-high" in diagnostics and "what_changed" in diagnostics
    assert f"serves v{bad}" in diagnostics and f"v{good}" in diagnostics

    demo.acknowledge()
    assert demo.pagerduty.alert_status(incident.key) == "acknowledged"

    preview, started = demo.roll_back()
    assert f"v{bad} → v{good}" in preview["text"]
    assert "Rolling back" in started["text"]
    rollback = demo.wait_for_rollback()
    assert rollback.startswith("succeeded") and f"v{bad} → v{good}" in rollback
    assert "health check after: passed" in rollback
    assert demo.champion() == good  # the alias moved back in MLflow
    assert demo.serving() == good  # and the model server followed it
    ratio = demo.error_ratio(window="15s")
    assert ratio is not None and ratio < 0.05, f"error ratio after the rollback: {ratio}"

    resolved = demo.wait_for_resolved()
    assert (resolved.state, resolved.resolved_by) == ("resolved", "alertmanager")
    assert demo.pagerduty.alert_status(incident.key) == "resolved"
    triggers = [e for e in demo.pagerduty.events_for(incident.key) if e["event"]["event_action"] == "trigger"]
    assert len(triggers) == 1  # paged exactly once, through every repeat from Alertmanager
    assert len(demo.pagerduty.triggers()) == 1

    record = demo.record()
    kinds = [entry.kind for entry in record["timeline"]]
    assert in_order(kinds, STORY), kinds
    actors = {entry.kind: entry.actor for entry in record["timeline"]}
    assert actors["acknowledged"] == actors["rollback_started"] == f"slack:{ON_CALL['slack_id']}"
    assert actors["resolved"] == "alertmanager"
    assert 0 < record["mtta"] < record["mttr"] < 300
