"""Drift verdicts: CloudEvents as the alibi-detect server sends them, the clean-batch
count that keeps drift from flapping, and the labels a routing file maps a source to."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime

import pytest

from bot.domain.alert import AlertStatus
from bot.domain.drift import DriftResult, DriftSource, drift_alert, labels_for, step
from bot.intake import PayloadError
from bot.intake.cloudevents import Unsupported, drift_results, parse
from bot.web.http import Rejected, decode_json

# What alibi-detect's KSDrift.predict returns with drift_type="feature", as JSON.
FEATURE_VERDICT = {"data": {"is_drift": [0, 1, 0], "p_val": [0.4, 0.001, 0.2],
                            "distance": [0.05, 0.31, 0.08], "threshold": 0.05},
                   "meta": {"name": "KSDrift", "detector_type": "offline", "data_type": None}}
BATCH_VERDICT = {"data": {"is_drift": 1, "p_val": [0.4, 0.001], "distance": [0.05, 0.31],
                          "threshold": 0.025}, "meta": {"name": "KSDrift"}}
BINARY = {"ce-specversion": "1.0", "ce-id": "e1", "ce-type": "io.seldon.serving.inference.drift",
          "ce-source": "io.seldon.serving.churncd", "content-type": "application/json"}


def alibi_body(verdict: dict) -> bytes:
    """The server JSON-encodes the JSON text of the verdict again (seldon-core
    adserver/server.py: SetData(json.dumps(...)) marshalled with json.dumps)."""
    return json.dumps(json.dumps(verdict)).encode()


def test_the_alibi_detect_servers_binary_event_is_read_through_its_double_encoding():
    event = parse(BINARY, alibi_body(FEATURE_VERDICT), decode_json)
    assert (event.id, event.source, event.type) == (
        "e1", "io.seldon.serving.churncd", "io.seldon.serving.inference.drift")
    results = drift_results(event)
    assert [(r.feature, r.drifting, r.p_val, r.distance, r.threshold) for r in results] == [
        (0, False, 0.4, 0.05, 0.05), (1, True, 0.001, 0.31, 0.05), (2, False, 0.2, 0.08, 0.05)]
    assert {r.method for r in results} == {"KSDrift"}


def test_a_plain_json_binary_body_and_a_structured_event_say_the_same():
    plain = drift_results(parse(BINARY, json.dumps(BATCH_VERDICT).encode(), decode_json))
    structured = {"specversion": "1.0", "id": "e1", "type": BINARY["ce-type"],
                  "source": BINARY["ce-source"], "datacontenttype": "application/json",
                  "data": BATCH_VERDICT}
    headers = {"content-type": "application/cloudevents+json; charset=utf-8"}
    from_data = drift_results(parse(headers, json.dumps(structured).encode(), decode_json))
    encoded = {**{k: v for k, v in structured.items() if k != "data"},
               "data_base64": base64.b64encode(json.dumps(BATCH_VERDICT).encode()).decode()}
    from_base64 = drift_results(parse(headers, json.dumps(encoded).encode(), decode_json))
    assert plain == from_data == from_base64
    # A batch verdict over per-feature tests: the smallest p-value, the largest distance.
    assert [(r.feature, r.drifting, r.p_val, r.distance) for r in plain] == [
        (None, True, 0.001, 0.31)]


@pytest.mark.parametrize(("headers", "body", "names"), [
    ({"content-type": "application/json"}, b"{}", "no ce-specversion header"),
    ({**BINARY, "ce-specversion": "0.3"}, alibi_body(BATCH_VERDICT), "ce-specversion"),
    ({k: v for k, v in BINARY.items() if k != "ce-source"}, alibi_body(BATCH_VERDICT),
     "ce-source: required"),
    ({**BINARY, "ce-source": "s" * 1025}, alibi_body(BATCH_VERDICT), "ce-source: longer"),
    ({"content-type": "application/cloudevents+json"}, b"[]", "JSON object"),
    ({"content-type": "application/cloudevents+json"},
     json.dumps({"specversion": "1.0", "id": "1", "source": "s", "data": {}}).encode(),
     "type: required"),
    ({"content-type": "application/cloudevents+json"},
     json.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                 "data_base64": "not base64!"}).encode(), "data_base64"),
])
def test_what_is_not_a_cloudevent_is_named(headers, body, names):
    with pytest.raises(PayloadError) as raised:
        parse(headers, body, decode_json)
    assert names in str(raised.value)


@pytest.mark.parametrize(("data", "names"), [
    ({"data": {"p_val": 0.3}}, "data.is_drift: required"),
    ({"data": {"is_drift": 2}}, "must be 0 or 1"),
    ({"data": {"is_drift": [0, "yes"]}}, "each feature's verdict"),
    ({"data": {"is_drift": [0] * 1001}}, "more than 1000 features"),
    ({"data": {"is_drift": 1, "p_val": "low"}}, "data.p_val: must be a number"),
])
def test_what_is_not_a_drift_verdict_is_named(data, names):
    with pytest.raises(PayloadError) as raised:
        drift_results(parse(BINARY, json.dumps(data).encode(), decode_json))
    assert names in str(raised.value)


def test_batched_mode_is_refused_and_bad_nested_json_is_a_json_error():
    with pytest.raises(Unsupported):
        parse({"content-type": "application/cloudevents-batch+json"}, b"[]", decode_json)
    with pytest.raises(Rejected):
        parse(BINARY, json.dumps("{not json").encode(), decode_json)


@pytest.mark.parametrize(("clean", "drifting", "expected"), [
    (None, True, (0, AlertStatus.FIRING)),   # drift fires
    (0, True, (0, AlertStatus.FIRING)),      # and keeps firing
    (2, True, (0, AlertStatus.FIRING)),      # drift again starts the count over
    (None, False, (None, None)),             # clean and not firing: nothing kept
    (0, False, (1, None)),                   # one clean batch: still firing
    (1, False, (2, None)),
    (2, False, (None, AlertStatus.RESOLVED)),  # the third in a row resolves
])
def test_an_alert_resolves_only_after_resolve_after_clean_batches_in_a_row(clean, drifting,
                                                                           expected):
    assert step(clean, drifting, 3) == expected


def test_drift_that_comes_and_goes_stays_one_firing_alert():
    clean, sent = None, []
    for drifting in [True, False, False, True, False, True, False, False, False, False]:
        clean, status = step(clean, drifting, 3)
        sent.append(status)
    assert [s for s in sent if s is AlertStatus.RESOLVED] == [AlertStatus.RESOLVED]
    assert sent.index(AlertStatus.RESOLVED) == 8


SOURCES = (
    DriftSource(re.compile(r"io\.seldon\.serving\.(?P<model>[a-z0-9-]+?)cd"),
                {"environment": "production", "severity": "critical"}, ("age", "income")),
    DriftSource(re.compile(r".*"), {"team": "ml-platform"}),
)


def result(detector: str, feature: int | None = None) -> DriftResult:
    return DriftResult(detector=detector, feature=feature, drifting=True, p_val=0.001,
                       threshold=0.05)


@pytest.mark.parametrize(("detector", "feature", "labels"), [
    ("io.seldon.serving.churncd", None, {"alertname": "ModelDrift", "model": "churn",
                                         "environment": "production", "severity": "critical"}),
    ("io.seldon.serving.churncd", 1, {"alertname": "ModelDrift", "model": "churn",
                                      "environment": "production", "severity": "critical",
                                      "feature": "income"}),
    ("io.seldon.serving.churncd", 7, {"alertname": "ModelDrift", "model": "churn",
                                      "environment": "production", "severity": "critical",
                                      "feature": "7"}),  # past the names: its position
    ("other-detector", 0, {"alertname": "ModelDrift", "model": "other-detector",
                           "severity": "warning", "team": "ml-platform", "feature": "0"}),
])
def test_the_first_matching_source_maps_the_labels(detector, feature, labels):
    assert labels_for(result(detector, feature), SOURCES) == labels


def test_without_sources_the_model_is_the_events_source():
    assert labels_for(result("churn"), ()) == {"alertname": "ModelDrift", "model": "churn",
                                               "severity": "warning"}


def test_the_alert_of_a_counter_keeps_its_fingerprint_from_firing_to_resolved():
    labels = labels_for(result("io.seldon.serving.churncd", 1), SOURCES)
    now = datetime(2026, 12, 6, tzinfo=UTC)
    firing = drift_alert(result("io.seldon.serving.churncd", 1), labels, AlertStatus.FIRING,
                         "ab" * 32, now)
    resolved = drift_alert(result("io.seldon.serving.churncd", 1), labels,
                           AlertStatus.RESOLVED, "ab" * 32, now)
    assert firing.fingerprint == resolved.fingerprint and firing.labels == resolved.labels
    assert firing.annotations["summary"] == (
        "Drift in model churn, feature income: p-value 0.001 (threshold 0.05)")
