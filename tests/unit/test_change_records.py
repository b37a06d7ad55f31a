"""Model changes, pure parts: MLflow's webhook bodies and signatures (checked against
MLflow's own code), the change an incident followed, how changes read in Slack, the
`/oncall changes` command and the routing-file keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent
from mlflow.webhooks.delivery import _generate_hmac_signature
from mlflow.webhooks.types import get_example_payload_for_event

from bot.domain.changes import (
    EVENTS,
    AliasMove,
    Change,
    EventError,
    ModelSeen,
    change_note,
    changes_text,
    parse_event,
    preceding,
)
from bot.domain.commands import CommandError, parse_command
from bot.domain.messages import IncidentView, incident_message
from bot.domain.routing import RoutingError, parse_routing
from bot.web.mlflow import signature_valid

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def mlflow_body(entity: str, action: str) -> dict:
    """A delivery body as mlflow/webhooks/delivery.py builds it, with MLflow's example data."""
    event = WebhookEvent(WebhookEntity(entity), WebhookAction(action))
    return {"entity": event.entity.value, "action": event.action.value,
            "timestamp": NOW.isoformat(), "data": get_example_payload_for_event(event)}


@pytest.mark.parametrize(("entity", "action"), EVENTS)
def test_every_subscribed_event_parses_from_mlflows_own_example(entity, action):
    body = mlflow_body(entity, action)
    event = parse_event(json.loads(json.dumps(body)))
    data = body["data"]
    if entity == "model_version_alias":
        assert event == AliasMove(data["name"], data["alias"], data.get("version"), NOW)
    else:
        assert event == ModelSeen(data["name"])


def test_an_event_not_subscribed_to_is_ignored():
    assert parse_event(mlflow_body("registered_model", "created")) is None


@pytest.mark.parametrize(("body", "problem"), [
    ([], "not a JSON object"),
    ({"entity": 1, "action": "created"}, "entity and action"),
    ({"entity": "model_version_alias", "action": "created", "data": []}, "data: expected"),
    ({"entity": "model_version_alias", "action": "created", "timestamp": NOW.isoformat(),
      "data": {"name": "", "alias": "champion", "version": "1"}}, "data.name"),
    ({"entity": "model_version_alias", "action": "created", "timestamp": NOW.isoformat(),
      "data": {"name": "m", "alias": "x" * 300, "version": "1"}}, "data.alias"),
    ({"entity": "model_version_alias", "action": "created", "timestamp": "2026-12-06T12:00:00",
      "data": {"name": "m", "alias": "champion", "version": "1"}}, "timestamp"),
])
def test_malformed_bodies_are_refused_naming_the_field(body, problem):
    with pytest.raises(EventError, match=problem):
        parse_event(body)


def test_the_signature_is_mlflows_and_any_change_breaks_it():
    body = json.dumps(mlflow_body("model_version_alias", "created"))
    header = _generate_hmac_signature("s3cret", "d-1", "1765022400", body)
    assert signature_valid(b"s3cret", "d-1", "1765022400", body.encode(), header)
    assert not signature_valid(b"other", "d-1", "1765022400", body.encode(), header)
    assert not signature_valid(b"s3cret", "d-2", "1765022400", body.encode(), header)
    assert not signature_valid(b"s3cret", "d-1", "1765022401", body.encode(), header)
    assert not signature_valid(b"s3cret", "d-1", "1765022400", body.encode() + b" ", header)
    assert not signature_valid(b"s3cret", "d-1", "1765022400", body.encode(), "v1," + "A" * 44)


def change(minutes_before: int, before: str | None, after: str | None, author=None) -> Change:
    return Change("churn", "champion", before, after, NOW - timedelta(minutes=minutes_before),
                  author)


def test_the_latest_move_within_the_window_before_the_incident_is_the_one_it_followed():
    moves = [change(200, "5", "6"), change(30, "6", "7"), change(14, "7", "8"), change(-5, "8", "9")]
    assert preceding(moves, NOW, timedelta(hours=2)) == moves[2]
    assert preceding(moves[:1], NOW, timedelta(hours=2)) is None  # outside the window
    assert preceding([change(3, "7", None)], NOW, timedelta(hours=2)) is None  # a deletion


def test_the_note_names_the_move_and_its_author():
    assert change_note(change(14, "6", "7"), NOW) == "Changed 14 min before: churn champion v6 → v7"
    assert (change_note(change(14, "6", "7", "alice"), NOW)
            == "Changed 14 min before: churn champion v6 → v7 (by alice)")
    assert change_note(change(150, None, "1"), NOW) == (
        "Changed 2 h 30 min before: churn champion (none) → v1")


def test_hostile_names_are_shown_as_text_on_the_incident_message_and_in_the_list():
    hostile = Change("<!channel>", "<https://evil.example|x>", "1", "2", NOW, "<@U0BOSS>")
    note = change_note(hostile, NOW)
    _, blocks = incident_message(IncidentView(id=1, title="t", state="triggered", tier="L1",
                                              route="r", change_note=note))
    shown = json.dumps(blocks)
    assert "Changed 0 min before: &lt;!channel&gt; &lt;https://evil.example|x&gt;" in shown
    assert "<!channel>" not in shown and "<@U0BOSS>" not in shown
    listed = changes_text([hostile], now=NOW, model=None, period=timedelta(hours=24))
    assert "<!channel>" not in listed and "&lt;@U0BOSS&gt;" in listed
    assert changes_text([], now=NOW, model="churn", period=timedelta(hours=24)) == (
        "No model changes of churn in the last 1d.")


@pytest.mark.parametrize(("text", "model", "period"), [
    ("changes", None, timedelta(hours=24)),
    ("changes churn", "churn", timedelta(hours=24)),
    ("changes 7d", None, timedelta(days=7)),
    ("changes churn 2h", "churn", timedelta(hours=2)),
    ("changes 2h churn", "churn", timedelta(hours=2)),
])
def test_changes_command(text, model, period):
    command = parse_command(text)
    assert command.name == "changes" and command.filters.get("model") == model
    assert command.duration == period


@pytest.mark.parametrize("text", ["changes churn fraud", "changes 1h 2h", "changes churn 0s"])
def test_changes_command_refuses_more_than_a_model_and_a_period(text):
    with pytest.raises(CommandError, match="/oncall changes"):
        parse_command(text)


def routing(extra: str = "") -> dict:
    import yaml

    return yaml.safe_load(f"""
version: 1
{extra}
routes:
  - name: churn
    matchers: ['model="churn"']
    tier: L1
  - name: fraud-and-more
    matchers: ['model=~"fraud|ads-ctr"', 'severity="critical"']
    tier: L1
  - name: anything
    matchers: ['model=~"img.*"']
    tier: L0
  - name: default
    tier: L0
""")


def test_routing_file_change_window_serving_alias_and_the_models_it_names():
    config = parse_routing(routing("defaults: {change_window: 45m, serving_alias: prod}\n"
                                   "models: {ranker: {serving_alias: live}}"))
    assert config.change_window == timedelta(minutes=45)
    assert config.serving_alias("churn") == "prod" and config.serving_alias("ranker") == "live"
    assert config.named_models() == {"churn", "fraud", "ads-ctr", "ranker"}  # not a pattern
    default = parse_routing(routing())
    assert default.change_window == timedelta(hours=2) and default.serving_alias("x") == "champion"


def test_a_model_without_its_serving_alias_is_refused_naming_the_key():
    with pytest.raises(RoutingError, match="models.churn.serving_alias"):
        parse_routing(routing("models: {churn: {}}"))
