"""Intake parsers: bundled examples, normalization rules, and 422 messages."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.domain.alert import (
    MAX_FINGERPRINT,
    MAX_NAME,
    Alert,
    AlertStatus,
    alert_fingerprint,
    label_fingerprint,
)
from bot.intake import PARSERS, PayloadError
from bot.web.http import Rejected, check_token, decode_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

LABELS = {
    "alertname": "ModelErrorRateHigh",
    "environment": "production",
    "instance": "10.42.3.17:8080",
    "job": "churn-scorer",
    "model": "churn",
    "model_version": "7",
    "severity": "critical",
}
ANNOTATIONS = {
    "description": "5.83% of churn v7 predictions failed over the last 10 minutes (threshold 5%).",
    "runbook_url": "https://runbooks.example.com/ml/model-error-rate-high",
    "summary": "Model churn v7 error rate above 5% in production",
}
PROMETHEUS_URL = (
    "https://prometheus.example.com/graph?g0.expr=model%3Aprediction_error_ratio%3Arate10m"
    "%7Bmodel%3D%22churn%22%7D+%3E+0.05&g0.tab=1"
)
GRAFANA_DASHBOARD = (
    "https://grafana.example.com/d/ml-model-health?from=1777882350000&orgId=1&to=1777886011000"
)


def at(hour: int, minute: int, second: int, micro: int = 0) -> datetime:
    return datetime(2026, 5, 4, hour, minute, second, micro, tzinfo=UTC)


def load(name: str) -> object:
    return json.loads((EXAMPLES / name).read_text())


def am_alert(status: str = "firing", **fields: object) -> dict:
    return {
        "status": status,
        "labels": dict(LABELS),
        "annotations": dict(ANNOTATIONS),
        "startsAt": "2026-05-04T09:12:31.483Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": PROMETHEUS_URL,
        "fingerprint": "1cbf45ffda1b28e6",
    } | fields


def am_payload(*alerts: dict, version: str = "4") -> dict:
    return {"version": version, "status": "firing", "receiver": "bot", "alerts": list(alerts)}


AM_FIRING = Alert(
    fingerprint="1cbf45ffda1b28e6",
    status=AlertStatus.FIRING,
    labels=LABELS,
    annotations=ANNOTATIONS,
    starts_at=at(9, 12, 31, 483000),
    ends_at=None,
    source="alertmanager",
    generator_url=PROMETHEUS_URL,
)

EXAMPLE_CASES = [
    # The examples carry no date: an incident from them starts when it is sent.
    ("alertmanager", "alertmanager-firing.json", [replace(AM_FIRING, starts_at=None)]),
    (
        "alertmanager",
        "alertmanager-resolved.json",
        [
            Alert(
                fingerprint="1cbf45ffda1b28e6",
                status=AlertStatus.RESOLVED,
                labels=LABELS,
                annotations=ANNOTATIONS,
                starts_at=None,
                ends_at=None,
                source="alertmanager",
                generator_url=PROMETHEUS_URL,
            )
        ],
    ),
    (
        "grafana",
        "grafana-firing.json",
        [
            Alert(
                fingerprint="d6ad02958464d4d5",
                status=AlertStatus.FIRING,
                labels=LABELS | {"grafana_folder": "ML models"},
                annotations=ANNOTATIONS
                | {"dashboard_url": GRAFANA_DASHBOARD, "panel_url": GRAFANA_DASHBOARD + "&viewPanel=4"},
                starts_at=None,
                ends_at=None,
                source="grafana",
                generator_url="https://grafana.example.com/alerting/grafana/fdk2m9x0q4bnkd/view?orgId=1",
            )
        ],
    ),
    (
        "generic",
        "generic-firing.json",
        [
            Alert(
                fingerprint=label_fingerprint(LABELS),
                status=AlertStatus.FIRING,
                labels=LABELS,
                annotations=ANNOTATIONS,
                starts_at=None,
                ends_at=None,
                source="generic",
                generator_url="https://monitor.example.com/models/churn/checks/error-rate",
            )
        ],
    ),
]


@pytest.mark.parametrize(("source", "filename", "expected"), EXAMPLE_CASES)
def test_bundled_examples_parse_to_expected_alerts(source, filename, expected):
    assert PARSERS[source](load(filename)) == expected


def test_examples_expose_model_identity():
    for source, filename, _ in EXAMPLE_CASES:
        (alert,) = PARSERS[source](load(filename))
        assert (alert.model, alert.version, alert.environment, alert.severity) == (
            "churn",
            "7",
            "production",
            "critical",
        )


def test_firing_and_resolved_examples_share_identity():
    (firing,) = PARSERS["alertmanager"](load("alertmanager-firing.json"))
    (resolved,) = PARSERS["alertmanager"](load("alertmanager-resolved.json"))
    assert firing.fingerprint == resolved.fingerprint
    assert (firing.status, resolved.status) == (AlertStatus.FIRING, AlertStatus.RESOLVED)


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
def test_mixed_batch_keeps_each_alert_status(source):
    version = "4" if source == "alertmanager" else "1"
    resolved = am_alert("resolved", endsAt="2026-05-04T09:41:16+02:00", fingerprint="aa")
    alerts = PARSERS[source](am_payload(am_alert(), resolved, version=version))
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert alerts[1].ends_at == datetime.fromisoformat("2026-05-04T09:41:16+02:00")
    assert {a.source for a in alerts} == {source}


def test_alertmanager_empty_batch_is_valid():
    assert PARSERS["alertmanager"](am_payload()) == []


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("endsAt", "0001-01-01T00:00:00Z", None),
        ("startsAt", "0001-01-01T00:00:00Z", None),
        ("endsAt", "2026-05-04T09:41:16.123456789Z", at(9, 41, 16, 123456)),
        ("endsAt", "2026-05-04t09:41:16z", at(9, 41, 16)),
    ],
)
def test_alertmanager_timestamps(field, value, expected):
    (alert,) = PARSERS["alertmanager"](am_payload(am_alert(**{field: value})))
    assert (alert.starts_at if field == "startsAt" else alert.ends_at) == expected


def test_missing_fingerprint_is_computed_from_labels_in_any_order():
    forward = am_alert()
    del forward["fingerprint"]
    backward = am_alert(fingerprint="", labels=dict(reversed(LABELS.items())))
    (first,) = PARSERS["alertmanager"](am_payload(forward))
    (second,) = PARSERS["alertmanager"](am_payload(backward))
    assert first.fingerprint == second.fingerprint == label_fingerprint(LABELS)


def test_unknown_fields_are_ignored():
    (alert,) = PARSERS["alertmanager"](am_payload(am_alert(silenced=True)) | {"new": {"x": 1}})
    assert alert == AM_FIRING


def test_grafana_annotation_set_by_rule_author_wins_over_link():
    document = load("grafana-firing.json")
    document["alerts"][0]["annotations"]["dashboard_url"] = "https://wiki.example.com/churn"
    document["alerts"][0]["panelURL"] = ""
    (alert,) = PARSERS["grafana"](document)
    assert alert.annotations["dashboard_url"] == "https://wiki.example.com/churn"
    assert "panel_url" not in alert.annotations


GENERIC_MINIMAL = {"alertname": "DataDrift", "model": "churn", "severity": "warning"}


def test_generic_defaults():
    (alert,) = PARSERS["generic"](GENERIC_MINIMAL)
    assert alert == Alert(
        fingerprint=label_fingerprint(GENERIC_MINIMAL),
        status=AlertStatus.FIRING,
        labels=GENERIC_MINIMAL,
        annotations={},
        source="generic",
    )


def test_generic_explicit_fields_win_over_labels():
    document = GENERIC_MINIMAL | {
        "version": "8",
        "summary": "drift",
        "labels": {"model": "other", "model_version": "1", "severity": "info", "team": "ml"},
        "annotations": {"summary": "ignored", "dashboard": "d"},
    }
    (alert,) = PARSERS["generic"](document)
    assert alert.labels == GENERIC_MINIMAL | {"model_version": "8", "team": "ml"}
    assert alert.annotations == {"summary": "drift", "dashboard": "d"}


def test_generic_label_kept_when_field_absent():
    (alert,) = PARSERS["generic"](GENERIC_MINIMAL | {"labels": {"model_version": "3", "env": "dev"}})
    assert (alert.version, alert.environment) == ("3", "dev")


def test_generic_batch_and_resolution():
    resolved = GENERIC_MINIMAL | {
        "status": "resolved",
        "fingerprint": "drift-churn",
        "ends_at": "2026-05-04T10:00:00Z",
    }
    alerts = PARSERS["generic"]({"alerts": [GENERIC_MINIMAL, resolved]})
    assert [(a.status, a.fingerprint, a.ends_at) for a in alerts] == [
        (AlertStatus.FIRING, label_fingerprint(GENERIC_MINIMAL), None),
        (AlertStatus.RESOLVED, "drift-churn", at(10, 0, 0)),
    ]
    assert PARSERS["generic"]({"alerts": [GENERIC_MINIMAL] * 1000})


def _with(document: dict, path: tuple, value: object) -> dict:
    """Copy of ``document`` with the value at ``path`` replaced, or deleted when value is ``...``."""
    result = copy.deepcopy(document)
    target = result
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


AM = am_payload(am_alert(), am_alert())
GRAFANA = am_payload(am_alert(), version="1")
BAD_TIME = "must be an RFC 3339 timestamp such as 2026-05-04T09:12:31Z"

INVALID_CASES = [
    ("alertmanager", "not json object", "body: must be an object"),
    ("alertmanager", ["alerts"], "body: must be an object"),
    ("alertmanager", _with(AM, ("version",), "3"), "version: expected '4', got '3'"),
    ("alertmanager", _with(AM, ("version",), ...), "version: required"),
    ("alertmanager", _with(AM, ("alerts",), {"0": {}}), "alerts: must be a list"),
    ("alertmanager", _with(AM, ("alerts",), ...), "alerts: required"),
    ("alertmanager", _with(AM, ("alerts", 1), "firing"), "alerts[1]: must be an object"),
    (
        "alertmanager",
        _with(AM, ("alerts", 1, "status"), "pending"),
        "alerts[1].status: must be 'firing' or 'resolved'",
    ),
    ("alertmanager", _with(AM, ("alerts", 1, "labels"), ["a"]), "alerts[1].labels: must be an object"),
    ("alertmanager", _with(AM, ("alerts", 1, "labels", "job"), 7), "alerts[1].labels.job: must be a string"),
    ("alertmanager", _with(AM, ("alerts", 0, "labels"), {}), "alerts[0].labels: must not be empty"),
    (
        "alertmanager",
        _with(AM, ("alerts", 0, "annotations", "summary"), None),
        "alerts[0].annotations.summary: must be a string",
    ),
    ("alertmanager", _with(AM, ("alerts", 0, "startsAt"), "yesterday"), f"alerts[0].startsAt: {BAD_TIME}"),
    ("alertmanager", _with(AM, ("alerts", 0, "endsAt"), "2026-05-04T09:41:16"), f"alerts[0].endsAt: {BAD_TIME}"),
    ("alertmanager", _with(AM, ("alerts", 0, "endsAt"), "2026-13-04T09:41:16Z"), f"alerts[0].endsAt: {BAD_TIME}"),
    ("alertmanager", _with(AM, ("alerts", 0, "endsAt"), 1777886476), f"alerts[0].endsAt: {BAD_TIME}"),
    ("grafana", _with(GRAFANA, ("version",), "4"), "version: expected '1', got '4'"),
    ("grafana", _with(GRAFANA, ("alerts", 0, "status"), "alerting"), "alerts[0].status: must be 'firing' or 'resolved'"),
    ("grafana", _with(GRAFANA, ("alerts", 0, "dashboardURL"), None), "alerts[0].dashboardURL: must be a string"),
    ("generic", "ModelErrorRateHigh", "body: must be an object"),
    ("generic", _with(GENERIC_MINIMAL, ("alertname",), ...), "alertname: required"),
    ("generic", _with(GENERIC_MINIMAL, ("model",), ...), "model: required"),
    ("generic", _with(GENERIC_MINIMAL, ("model",), ""), "model: must not be empty"),
    ("generic", _with(GENERIC_MINIMAL, ("severity",), ...), "severity: required"),
    (
        "generic",
        _with(GENERIC_MINIMAL, ("severity",), "CRITICAL"),
        "severity: must be 'critical', 'page', 'error', 'warning' or 'info'",
    ),
    ("generic", _with(GENERIC_MINIMAL, ("status",), "ok"), "status: must be 'firing' or 'resolved'"),
    ("generic", _with(GENERIC_MINIMAL, ("version",), 7), "version: must be a string"),
    ("generic", _with(GENERIC_MINIMAL, ("labels",), {"team": 1}), "labels.team: must be a string"),
    ("generic", _with(GENERIC_MINIMAL, ("starts_at",), "2026-05-04"), f"starts_at: {BAD_TIME}"),
    ("generic", {"alerts": GENERIC_MINIMAL}, "alerts: must be a list"),
    ("generic", {"alerts": [GENERIC_MINIMAL, {"model": "churn"}]}, "alerts[1].alertname: required"),
    (
        "generic",
        {"alerts": [GENERIC_MINIMAL] * 1001},
        "alerts: must have at most 1000 items, got 1001",
    ),
]


@pytest.mark.parametrize(("source", "document", "problem"), INVALID_CASES)
def test_invalid_documents_name_the_field(source, document, problem):
    with pytest.raises(PayloadError) as caught:
        PARSERS[source](document)
    assert problem in caught.value.problems
    assert problem in str(caught.value)


def test_all_problems_reported_but_capped():
    broken = am_payload(*[am_alert(status="x")] * 30)
    with pytest.raises(PayloadError) as caught:
        PARSERS["alertmanager"](broken)
    assert caught.value.problems[0] == "alerts[0].status: must be 'firing' or 'resolved'"
    assert caught.value.problems[-1] == "... and 10 more problems"
    assert len(caught.value.problems) == 21


# -- Hostile values: normalised, never a refused batch (issue 10) --------------------

@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": "b\\u0000c", "k\\u0000": 1}', {"a": "bc", "k": 1}),
        (b'["\\ud800", "x\\udfffy", "\\ud83d\\ude00"]', ["\ufffd", "x\ufffdy", "\U0001F600"]),
        ('["\ud800"]'.encode("utf-8", "surrogatepass"), ["\ufffd"]),
        ('{"a": "\u00e9"}'.encode("utf-16"), {"a": "\u00e9"}),
        (b'{"q": "' + b"[" * 1000 + b'"}', {"q": "[" * 1000}),  # brackets in a string
        (b"[" * 64 + b"]" * 64, json.loads(b"[" * 64 + b"]" * 64)),
    ],
)
def test_decoded_text_is_storable(body, expected):
    assert decode_json(body) == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 65 + b"]" * 65, "nested deeper than 64"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested deeper than 64"),
        (b'["\\"' + b"[" * 100 + b'"]' + b"[" * 100, "nested deeper than 64"),
        (b"1" * 5000, "not valid JSON"),
        (b"\xff\xfe\xfd", "not valid JSON"),
        (b'{"a": 1', "not valid JSON"),
    ],
)
def test_bodies_not_json_or_nested_too_deep_are_refused_400(body, problem):
    with pytest.raises(Rejected) as refused:
        decode_json(body)
    assert refused.value.status == 400 and problem in str(refused.value)


def test_two_tokens_are_each_accepted_and_anything_else_refused():
    tokens = (b"old", b"new")
    check_token("Bearer old", tokens)
    check_token("Bearer new", tokens)
    for wrong in ("Bearer other", "Bearer old,new", "", "old", "Bearer \u00e9"):
        with pytest.raises(Rejected):
            check_token(wrong, tokens)
    check_token("", ())  # no token configured: open intake


def test_a_fingerprint_longer_than_the_record_keeps_is_hashed_stably():
    long = "f" * 129
    (first,) = PARSERS["alertmanager"](am_payload(am_alert(fingerprint=long)))
    (again,) = PARSERS["alertmanager"](am_payload(am_alert(fingerprint=long)))
    assert first.fingerprint == again.fingerprint == alert_fingerprint(long, LABELS)
    assert len(first.fingerprint) <= MAX_FINGERPRINT and first.fingerprint != long[:128]
    assert alert_fingerprint("f" * 128, LABELS) == "f" * 128


def test_a_huge_model_label_is_kept_whole_and_its_name_cut():
    labels = {**LABELS, "model": "m" * 100_000}
    (alert,) = PARSERS["alertmanager"](am_payload(am_alert(labels=labels)))
    assert alert.labels["model"] == "m" * 100_000
    assert alert.model is not None and len(alert.model) == MAX_NAME and alert.model[-1] == "…"


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"])
def test_a_time_outside_what_utc_can_hold_is_unset_and_the_alert_kept(value):
    (alert,) = PARSERS["alertmanager"](am_payload(am_alert(startsAt=value)))
    assert alert.starts_at is None
