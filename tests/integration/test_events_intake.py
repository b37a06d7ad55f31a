"""POST /v2/enqueue: a real Alertmanager paging the bot through `pagerduty_configs` with
`url:`, PagerDuty's answer shapes, integration keys, and acknowledge passed on."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.harness import BotProcess, free_port, wait_for

KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # 32 characters, as PagerDuty's integration keys
OTHER_KEY = "0f9e8d7c6b5a49382716050403020100"


@pytest.fixture
def intake_bot(bot_env: dict[str, str], tmp_path: Path) -> Iterator[BotProcess]:
    process = BotProcess({**bot_env, "EVENTS_INTAKE_ROUTING_KEYS": f"{OTHER_KEY}, {KEY}"},
                         log_path=tmp_path / "bot.log", token=None)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def enqueue(bot: BotProcess, body: object) -> httpx.Response:
    return bot.http.post("/v2/enqueue", content=json.dumps(body),
                         headers={"Content-Type": "application/json"})


def trigger(dedup_key: str | None = "d-1", **payload: object) -> dict[str, object]:
    body: dict[str, object] = {
        "routing_key": KEY, "event_action": "trigger", "client": "Sample Monitoring",
        "payload": {"summary": "Churn error rate high", "severity": "critical",
                    "source": "scorer-1", "custom_details": {"model": "churn"}, **payload}}
    if dedup_key is not None:
        body["dedup_key"] = dedup_key
    return body


class Alertmanager:
    def __init__(self, directory: Path, *, receiver_url: str, routing_key: str) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            pytest.fail("Alertmanager is not installed: apt-get install prometheus-alertmanager")
        self.url = f"http://127.0.0.1:{free_port()}"
        config = directory / "alertmanager.yml"
        config.write_text(json.dumps({
            "route": {"receiver": "bot", "group_by": ["alertname", "model"],
                      "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "bot", "pagerduty_configs": [{
                "routing_key": routing_key, "url": receiver_url, "send_resolved": True,
                "severity": "critical", "class": "{{ .CommonLabels.alertname }}",
                "details": {"model": "{{ .CommonLabels.model }}"}}]}]}))
        self.log = directory / "alertmanager.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.path={directory / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}",
                 "--cluster.listen-address=", "--log.level=debug"],
                stdout=out, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=30, what="Alertmanager to start")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Alertmanager exited:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def post(self, labels: dict[str, str], *, resolved: bool = False) -> None:
        now = datetime.now(UTC)
        alert = {"labels": labels, "annotations": {"summary": "error rate above 5%"},
                 "startsAt": (now - timedelta(minutes=1)).isoformat()}
        if resolved:
            alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
        response = httpx.post(f"{self.url}/api/v2/alerts", json=[alert], timeout=5)
        assert response.status_code == 200, response.text

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def test_a_real_alertmanager_pages_once_through_the_bot_and_resolves(intake_bot, pagerduty,
                                                                     tmp_path):
    manager = Alertmanager(tmp_path, receiver_url=f"{intake_bot.url}/v2/enqueue",
                           routing_key=KEY)
    try:
        labels = {"alertname": "ModelErrorRateHigh", "model": "churn", "severity": "critical"}
        manager.post({**labels, "instance": "a"})
        incident = intake_bot.until(lambda: intake_bot.rows(
            "SELECT id, key, title FROM incident"), what="the incident", timeout=20)[0]
        intake_bot.until(lambda: pagerduty.triggers(), what="the page")
        # The group grows: Alertmanager sends [FIRING:2] under the same dedup_key.
        manager.post({**labels, "instance": "b"})
        intake_bot.until(lambda: intake_bot.rows(
            "SELECT repeats FROM alertoccurrence WHERE repeats > 0"),
            what="the second notification", timeout=20)
        manager.post({**labels, "instance": "a"}, resolved=True)
        manager.post({**labels, "instance": "b"}, resolved=True)
        intake_bot.until(lambda: intake_bot.rows(
            "SELECT id FROM incident WHERE state = 'resolved'"), what="the resolve", timeout=20)
        intake_bot.until(lambda: pagerduty.alert_status(incident.key) == "resolved",
                         what="PagerDuty to hear of the resolve")
    finally:
        manager.stop()
    assert len(intake_bot.rows("SELECT id FROM incident")) == 1
    assert [e["event"]["dedup_key"] for e in pagerduty.triggers()] == [incident.key]
    occurrence = intake_bot.rows("SELECT fingerprint, labels, source FROM alertoccurrence")[0]
    labels = json.loads(occurrence.labels) if isinstance(occurrence.labels, str) \
        else occurrence.labels
    assert (labels["alertname"], labels["model"], occurrence.source) == (
        "ModelErrorRateHigh", "churn", "events-api")
    assert len(occurrence.fingerprint) == 64  # Alertmanager's hash of the group key


def test_answers_take_pagerdutys_shapes_and_a_trigger_without_key_gets_one(intake_bot):
    response = enqueue(intake_bot, trigger(dedup_key=None))
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["message"]) == ("success", "Event processed")
    generated = body["dedup_key"]
    assert len(generated) == 32
    assert intake_bot.rows("SELECT fingerprint FROM alertoccurrence")[0].fingerprint == generated
    resolve = {"routing_key": KEY, "event_action": "resolve", "dedup_key": generated}
    assert enqueue(intake_bot, resolve).json()["dedup_key"] == generated
    intake_bot.until(lambda: intake_bot.rows(
        "SELECT id FROM incident WHERE state = 'resolved'"), what="the resolve")


BAD = [
    ({**trigger(), "routing_key": "0" * 32}, "routing_key: not an integration key"),
    ({**trigger(), "routing_key": KEY[:-1]}, "routing_key: not an integration key"),
    ({k: v for k, v in trigger().items() if k != "routing_key"}, "routing_key: required"),
    ({**trigger(), "routing_key": 7}, "routing_key: required"),
    (trigger(severity="page"), "payload.severity"),
    ({"routing_key": KEY, "event_action": "resolve"}, "dedup_key is required to resolve"),
    ("[not json", "not valid JSON"),
    ('{"routing_key": "' + KEY + '", "pad": "' + "x" * 600_000 + '"}', "limit"),
]


def test_a_bad_key_or_body_is_an_invalid_event_and_changes_nothing(intake_bot):
    assert enqueue(intake_bot, trigger("kept")).status_code == 202
    intake_bot.until(intake_bot.outbox_settled, what="the page and the Slack message")
    before = intake_bot.snapshot()
    for body, names in BAD:
        raw = body if isinstance(body, str) else json.dumps(body)
        response = intake_bot.http.post("/v2/enqueue", content=raw)
        assert response.status_code == 400, response.text
        answer = response.json()
        assert (answer["status"], answer["message"]) == ("invalid event",
                                                         "Event object is invalid")
        assert any(names in error for error in answer["errors"]), (names, answer)
    assert intake_bot.snapshot() == before
    assert KEY not in intake_bot.log() and OTHER_KEY not in intake_bot.log()


def test_with_no_keys_configured_every_event_is_refused(bot):
    response = enqueue(bot, trigger())
    assert response.status_code == 400
    assert "EVENTS_INTAKE_ROUTING_KEYS" in response.json()["errors"][0]
    assert bot.rows("SELECT id FROM incident") == []


def test_acknowledge_acknowledges_the_incident_and_is_passed_on_to_pagerduty(intake_bot,
                                                                          pagerduty):
    assert enqueue(intake_bot, trigger("ack-me")).status_code == 202
    incident = intake_bot.until(lambda: intake_bot.rows("SELECT id, key FROM incident"),
                                what="the incident")[0]
    intake_bot.until(lambda: pagerduty.alert_status(incident.key) == "triggered",
                     what="the page")
    ack = {"routing_key": KEY, "event_action": "acknowledge", "dedup_key": "ack-me",
           "client": "Grafana"}
    response = enqueue(intake_bot, ack)
    assert response.status_code == 202 and response.json()["dedup_key"] == "ack-me"
    row = intake_bot.rows("SELECT state, acknowledged_by FROM incident")[0]
    assert (row.state, row.acknowledged_by) == ("acknowledged", "events-api:key2")
    intake_bot.until(lambda: pagerduty.alert_status(incident.key) == "acknowledged",
                     what="PagerDuty to hear of the acknowledge")
    actions = [e["event"]["event_action"] for e in pagerduty.events_for(incident.key)]
    assert actions == ["trigger", "acknowledge"]
    # An acknowledge naming no open alert is processed, as PagerDuty does, and changes nothing.
    intake_bot.until(intake_bot.outbox_settled, what="the acknowledge's Slack update")
    before = intake_bot.snapshot()
    assert enqueue(intake_bot, {**ack, "dedup_key": "nothing-open"}).status_code == 202
    assert intake_bot.snapshot() == before
