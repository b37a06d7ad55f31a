"""The Events API v2 models against PagerDuty's OpenAPI description, and what an event
becomes: labels, alert name, fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from bot.domain.alert import AlertStatus
from bot.intake import PayloadError
from bot.intake.pagerduty_events import (
    MAX_DEDUP_KEY,
    Event,
    Image,
    Link,
    Payload,
    alertname,
    parse,
    to_alert,
)

SPEC = json.loads((Path(__file__).resolve().parents[1] / "standins" / "specs"
                   / "events-v2.openapi.json").read_text())
ENQUEUE = SPEC["paths"]["/enqueue"]["post"]["requestBody"]["content"]["application/json"]
SCHEMAS = SPEC["components"]["schemas"]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _wire_names(model: type[BaseModel]) -> dict[str, Any]:
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _literal_values(annotation: Any) -> set[str]:
    if get_origin(annotation) is Literal:
        return set(get_args(annotation))
    return {value for arg in get_args(annotation) for value in _literal_values(arg)}


@pytest.mark.parametrize(("model", "schema"), [
    (Event, ENQUEUE["schema"]),
    (Payload, SCHEMAS["Payload"]),
    (Link, SCHEMAS["Links"]["items"]),
    (Image, SCHEMAS["Images"]["items"]),
])
def test_each_model_has_exactly_the_specs_properties_and_required_ones(model, schema):
    fields = _wire_names(model)
    assert set(fields) == set(schema["properties"])
    required = {name for name, field in fields.items() if field.is_required()}
    assert required == set(schema.get("required", []))


@pytest.mark.parametrize(("model", "field", "schema"), [
    (Event, "event_action", ENQUEUE["schema"]["properties"]["event_action"]),
    (Payload, "severity", SCHEMAS["Payload"]["properties"]["severity"]),
])
def test_enumerations_are_the_specs(model, field, schema):
    assert _literal_values(_wire_names(model)[field].annotation) == set(schema["enum"])


def test_nested_models_are_the_ones_the_spec_refers_to():
    properties = ENQUEUE["schema"]["properties"]
    assert _resolve(properties["payload"]) is SCHEMAS["Payload"]
    assert _resolve(properties["links"])["items"] is SCHEMAS["Links"]["items"]
    assert _resolve(properties["images"])["items"] is SCHEMAS["Images"]["items"]
    fields = _wire_names(Event)
    assert Payload in get_args(fields["payload"].annotation)
    assert {get_args(a)[0] for a in get_args(fields["links"].annotation) if get_args(a)} == {Link}
    assert {get_args(a)[0] for a in get_args(fields["images"].annotation) if get_args(a)} == {Image}


def test_the_specs_own_example_is_a_valid_event():
    example = ENQUEUE["examples"]["event"]["value"]
    event = parse(example)
    assert (event.event_action, event.dedup_key, event.payload.class_) == (
        "trigger", "srv01/mysql", "disk")
    assert event.payload.timestamp is not None  # "+0000": ISO 8601, wider than RFC 3339


ALERTMANAGER_TRIGGER = {  # as Alertmanager 0.25's pagerduty notifier encodes it
    "routing_key": "k", "dedup_key": "4ca1b2f0e3d5a6978877665544332211aabbccddeeff00112233445566778899",
    "event_action": "trigger", "client": "Alertmanager", "client_url": "http://am:9093/#/alerts",
    "payload": {
        "summary": "[FIRING:2] ModelErrorRateHigh churn (critical production)",
        "source": "Alertmanager", "severity": "critical",
        "custom_details": {"firing": "Labels:\n - alertname = ModelErrorRateHigh\n",
                           "resolved": "", "num_firing": "2", "num_resolved": "0",
                           "model": "churn", "environment": "production"}},
}


def test_an_alertmanager_trigger_becomes_one_alert_named_without_its_count():
    alert = to_alert(parse(ALERTMANAGER_TRIGGER), ALERTMANAGER_TRIGGER["dedup_key"])
    assert alert.status is AlertStatus.FIRING
    assert alert.fingerprint == ALERTMANAGER_TRIGGER["dedup_key"]
    assert dict(alert.labels) == {
        "alertname": "ModelErrorRateHigh churn (critical production)", "severity": "critical",
        "source": "Alertmanager", "model": "churn", "environment": "production"}
    assert alert.annotations["description"].startswith("Labels:")
    assert alert.generator_url == "http://am:9093/#/alerts"


@pytest.mark.parametrize(("summary", "klass", "expected"), [
    ("[FIRING:1] Drift churn", None, "Drift churn"),
    ("[FIRING:12] Drift churn", None, "Drift churn"),
    ("[RESOLVED] Drift churn", None, "Drift churn"),
    ("Drift [FIRING:1] churn", None, "Drift [FIRING:1] churn"),  # only a leading one
    ("[FIRING:1] Drift churn", "ModelDrift", "ModelDrift"),
    ("[FIRING:1]", None, "[FIRING:1]"),  # nothing left: the summary as sent
])
def test_alertname_is_the_class_or_the_summary_without_alertmanagers_status(summary, klass,
                                                                             expected):
    payload = Payload.model_validate({"summary": summary, "severity": "info", "source": "s",
                                      **({"class": klass} if klass else {})})
    assert alertname(payload) == expected


def test_details_cannot_pose_as_the_named_fields_and_only_strings_become_labels():
    event = parse({"routing_key": "k", "event_action": "trigger", "payload": {
        "summary": "s", "severity": "warning", "source": "host", "component": "db",
        "group": "prod", "class": "disk",
        "custom_details": {"severity": "critical", "alertname": "x", "load avg": 0.75,
                          "team": "ds", "nested": {"a": "b"}}}})
    labels = to_alert(event, "k1").labels
    assert labels == {"alertname": "disk", "severity": "warning", "source": "host",
                      "component": "db", "group": "prod", "class": "disk", "team": "ds"}


def test_a_dedup_key_longer_than_the_record_keeps_is_hashed_to_the_same_fingerprint():
    key = "k" * MAX_DEDUP_KEY
    event = parse({**ALERTMANAGER_TRIGGER, "dedup_key": key})
    first, second = to_alert(event, key), to_alert(event, key)
    assert first.fingerprint == second.fingerprint and first.fingerprint.startswith("sha256:")


@pytest.mark.parametrize(("body", "names"), [
    ({"routing_key": "k", "event_action": "trigger"}, "payload is required to trigger"),
    ({"routing_key": "k", "event_action": "resolve"}, "dedup_key is required to resolve"),
    ({"routing_key": "k", "event_action": "acknowledge"}, "dedup_key is required to acknowledge"),
    ({"routing_key": "k", "event_action": "snooze", "dedup_key": "d"}, "event_action"),
    ({**ALERTMANAGER_TRIGGER, "dedup_key": "d" * (MAX_DEDUP_KEY + 1)}, "dedup_key"),
    ({**ALERTMANAGER_TRIGGER, "payload": {**ALERTMANAGER_TRIGGER["payload"],
                                          "severity": "page"}}, "payload.severity"),
    ({**ALERTMANAGER_TRIGGER, "payload": {"summary": "s", "severity": "info"}},
     "payload.source: required"),
    ({**ALERTMANAGER_TRIGGER, "payload": {**ALERTMANAGER_TRIGGER["payload"],
                                          "timestamp": "yesterday"}}, "payload.timestamp"),
    ({**ALERTMANAGER_TRIGGER, "links": [{"text": "no href"}]}, "links[0].href: required"),
])
def test_invalid_events_name_the_problem(body, names):
    with pytest.raises(PayloadError) as raised:
        parse(body)
    assert names in str(raised.value)


def test_a_resolve_without_payload_takes_the_labels_it_is_given():
    event = parse({"routing_key": "k", "event_action": "resolve", "dedup_key": "d"})
    alert = to_alert(event, "d", labels={"alertname": "A"})
    assert (alert.status, dict(alert.labels), alert.fingerprint) == (
        AlertStatus.RESOLVED, {"alertname": "A"}, "d")
