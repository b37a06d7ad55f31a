"""POST /webhooks/cloudevents: drift detectors' events in both modes, both ways to
authenticate, and a ModelDrift alert that resolves only after clean batches in a row."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from bot.settings import DEFAULT_ROUTING_FILE
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess

SOURCE = "io.seldon.serving.seldon-seldondeployment-churn-drift"
TYPE = "io.seldon.serving.inference.drift"


@pytest.fixture
def drift_bot(bot_env: dict[str, str], tmp_path: Path) -> Iterator[BotProcess]:
    routing = yaml.safe_load(DEFAULT_ROUTING_FILE.read_text())
    routing["defaults"]["drift_resolve_after"] = 3
    routing["drift_sources"] = [{
        "source": r"io\.seldon\.serving\.seldon-seldondeployment-(?P<model>.+)-drift",
        "labels": {"environment": "production"}, "features": ["age", "income", "tenure"]}]
    config = tmp_path / "routing.yaml"
    config.write_text(yaml.safe_dump(routing))
    process = BotProcess({**bot_env, "ONCALL_CONFIG": str(config), "ACCESS_LOG": "true"},
                         log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def verdict(is_drift: object, **data: object) -> dict[str, object]:
    return {"data": {"is_drift": is_drift, "p_val": 0.001 if is_drift else 0.4,
                     "distance": 0.3, "threshold": 0.05, **data},
            "meta": {"name": "KSDrift", "detector_type": "offline"}}


def binary(bot: BotProcess, body: dict[str, object], *, path: str = "/webhooks/cloudevents",
           authorization: str | None = f"Bearer {WEBHOOK_TOKEN}", event_id: str = "e1"):
    """As the alibi-detect server sends it: binary mode, its JSON text JSON-encoded again."""
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-type": TYPE, "ce-source": SOURCE,
               "Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return bot.http.post(path, content=json.dumps(json.dumps(body)), headers=headers)


def structured(bot: BotProcess, body: dict[str, object], *, path: str):
    event = {"specversion": "1.0", "id": "s1", "type": TYPE, "source": SOURCE,
             "datacontenttype": "application/json", "data": body}
    return bot.http.post(path, content=json.dumps(event),
                         headers={"Content-Type": "application/cloudevents+json"})


def incidents(bot: BotProcess) -> list:
    return bot.rows("SELECT id, state, model, environment, title FROM incident")


def test_drift_fires_model_drift_and_resolves_after_three_clean_batches_in_a_row(drift_bot):
    token_path = f"/webhooks/cloudevents/{WEBHOOK_TOKEN}"
    response = binary(drift_bot, verdict(1), path=token_path, authorization=None)
    assert response.status_code == 202, response.text
    assert response.json()["drifting"] == 1
    [incident] = incidents(drift_bot)
    assert (incident.state, incident.model, incident.environment) == (
        "triggered", "churn", "production")
    occurrence = drift_bot.rows("SELECT labels, annotations FROM alertoccurrence")[0]
    labels = occurrence.labels if isinstance(occurrence.labels, dict) \
        else json.loads(occurrence.labels)
    assert labels["alertname"] == "ModelDrift" and "feature" not in labels
    # Clean, clean, drift again, then three clean: only the third clean one in a row resolves.
    for is_drift, state in [(0, "triggered"), (0, "triggered"), (1, "triggered"),
                            (0, "triggered"), (0, "triggered"), (0, "resolved")]:
        send = binary if is_drift else structured
        kwargs = {"path": token_path} if send is structured else {}
        assert send(drift_bot, verdict(is_drift), **kwargs).status_code == 202
        assert incidents(drift_bot)[0].state == state
    assert drift_bot.rows("SELECT key FROM driftcounter") == []
    assert len(incidents(drift_bot)) == 1
    assert WEBHOOK_TOKEN not in drift_bot.log()
    assert "/webhooks/cloudevents/<token>" in drift_bot.log()


def test_per_feature_verdicts_become_a_feature_label_each_counted_on_its_own(drift_bot):
    assert binary(drift_bot, verdict([0, 1, 1])).status_code == 202
    rows = drift_bot.rows("SELECT labels FROM alertoccurrence ORDER BY id")
    features = [(r.labels if isinstance(r.labels, dict) else json.loads(r.labels))["feature"]
                for r in rows]
    assert features == ["income", "tenure"]
    assert len(incidents(drift_bot)) == 1  # features group into the model's one incident
    for _ in range(2):  # income clean twice, tenure still drifting
        assert binary(drift_bot, verdict([0, 0, 1])).status_code == 202
    assert drift_bot.rows("SELECT feature, clean_batches FROM driftcounter ORDER BY feature") \
        == [("income", 2), ("tenure", 0)]
    assert binary(drift_bot, verdict([0, 0, 1])).status_code == 202
    states = drift_bot.rows("SELECT status FROM alertoccurrence ORDER BY id")
    assert [s.status for s in states] == ["resolved", "firing"]
    assert incidents(drift_bot)[0].state == "triggered"


def test_a_wrong_or_missing_token_is_refused_in_the_header_and_in_the_path(drift_bot):
    assert binary(drift_bot, verdict(0)).status_code == 202  # something recorded
    before = drift_bot.snapshot()
    for response in (
        binary(drift_bot, verdict(1), authorization=None),
        binary(drift_bot, verdict(1), authorization="Bearer wrong"),
        binary(drift_bot, verdict(1), path="/webhooks/cloudevents/wrong", authorization=None),
        binary(drift_bot, verdict(1), path=f"/webhooks/cloudevents/{WEBHOOK_TOKEN}x",
               authorization=None),
        structured(drift_bot, verdict(1), path="/webhooks/cloudevents/"),
    ):
        assert response.status_code == 401, response.text
    assert drift_bot.snapshot() == before
    assert drift_bot.rows("SELECT key FROM driftcounter") == []


def test_what_is_not_a_drift_cloudevent_is_refused_naming_the_problem(drift_bot):
    path = f"/webhooks/cloudevents/{WEBHOOK_TOKEN}"
    before = drift_bot.snapshot()
    outlier = {"data": {"is_outlier": [1], "instance_score": [0.9]}, "meta": {"name": "VAE"}}
    cases = [
        (binary(drift_bot, outlier), 422, "data.is_drift: required"),
        (drift_bot.http.post(path, content=b"{}", headers={"Content-Type": "application/json"}),
         422, "no ce-specversion header"),
        (drift_bot.http.post(path, content=b"{nope",
                             headers={"Content-Type": "application/cloudevents+json"}),
         400, "not valid JSON"),
        (drift_bot.http.post(path, content=b"[]",
                             headers={"Content-Type": "application/cloudevents-batch+json"}),
         415, "batched"),
    ]
    for response, status, names in cases:
        assert response.status_code == status, response.text
        assert names in json.dumps(response.json())
    assert drift_bot.snapshot() == before


def test_two_replicas_taking_one_detectors_batches_at_once_share_one_count(drift_bot,
                                                                           tmp_path):
    other = BotProcess({**drift_bot.env, "ACCESS_LOG": "false"},
                       log_path=tmp_path / "other.log", token=WEBHOOK_TOKEN)
    other.start()
    try:
        replicas = [drift_bot, other]
        # Both insert the detector's first counter at once: one commit fails and is
        # retried, never answered 5xx.
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(
                lambda i: binary(replicas[i % 2], verdict([1, 1]), event_id=f"d{i}"),
                range(16)))
        assert [a.status_code for a in answers] == [202] * 16, [a.text for a in answers]
        assert drift_bot.rows("SELECT feature, clean_batches FROM driftcounter "
                              "ORDER BY feature") == [("age", 0), ("income", 0)]
        assert len(incidents(drift_bot)) == 1
        # Clean batches counted across replicas: the third in a row resolves, wherever it lands.
        for replica, state in [(other, "triggered"), (drift_bot, "triggered"),
                               (other, "resolved")]:
            assert binary(replica, verdict([0, 0])).status_code == 202
            assert incidents(drift_bot)[0].state == state
        assert drift_bot.rows("SELECT key FROM driftcounter") == []
    finally:
        other.stop()
