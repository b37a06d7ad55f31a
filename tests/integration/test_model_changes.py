"""Issue 13 items 1 and 2: MLflow registry webhooks and polls become model changes, and
incidents name the change they followed.

Against the real MLflow 3.17.2 server (its webhooks reach the bot on loopback: see
tests/services.py) and the bot as a real process. Deliveries the test sends itself are
signed with MLflow's own signing function, so the wire format is MLflow's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from sqlmodel import select

from bot.models import ModelChange
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import ROOT, BotProcess
from tests.integration.test_hostile_privilege import answer_to, press
from tests.integration.test_runbooks_in_incidents import alert_for
from tests.integration.test_slack_pagerduty import ON_CALL, PLATFORM, SIGNING_SECRET
from tests.services import mlflow_server  # noqa: F401

SECRET = "mlflow-webhook-secret-for-tests"


def routes(model: str) -> str:
    return f"""
version: 1
defaults: {{change_window: 30m}}
permissions: {{users: [{PLATFORM}], groups: [], on_call: true}}
models:
  {model}: {{serving_alias: champion}}
routes:
  - name: page
    matchers: ['severity=~"critical|page"']
    tier: L1
  - name: default
    tier: L0
"""


def start_bot(bot_env: dict, tmp_path: Path, mlflow, model: str, **extra: str) -> BotProcess:
    path = tmp_path / "routes.yaml"
    path.write_text(routes(model))
    runbooks = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", runbooks)
    env = {**bot_env, "ONCALL_CONFIG": str(path), "ONCALL_RUNBOOKS": str(runbooks),
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "MLFLOW_TRACKING_URI": mlflow.url,
           "MLFLOW_WEBHOOK_SECRET": SECRET, "MLFLOW_POLL_SECONDS": "0", **extra}
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    bot.start()
    return bot


@pytest.fixture
def model() -> str:
    return f"churn-{uuid.uuid4().hex[:8]}"  # the MLflow server outlives one test


def delivery(model: str, version: str | None, *, secret: str = SECRET, sent: float | None = None,
             delivery_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A model_version_alias delivery as MLflow's delivery.py builds and signs it."""
    body = json.dumps({
        "entity": "model_version_alias", "action": "created" if version else "deleted",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"name": model, "alias": "champion", **({"version": version} if version else {})}})
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(sent if sent is not None else time.time()))
    return body.encode(), {
        "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, stamp, body)}


def changes(bot, model: str | None = None) -> list[tuple]:
    return [tuple(r) for r in bot.rows(
        "SELECT model, alias, from_version, to_version, source FROM modelchange ORDER BY id")
        if model is None or r[0] == model]


def subscribe(bot, mlflow) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PUBLIC_"))}
    env.update(DATABASE_URL=bot.env["DATABASE_URL"], MLFLOW_TRACKING_URI=mlflow.url,
               MLFLOW_WEBHOOK_SECRET=SECRET)
    return subprocess.run([sys.executable, "-m", "bot", "mlflow", "subscribe", "--url", bot.url],
                          env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def signed_unsigned_stale_and_replayed(bot, model: str) -> None:
    """Deliveries made here, signed as MLflow signs them: only a good, fresh, first one counts."""
    body, headers = delivery(model, "3")
    refused = [
        {k: v for k, v in headers.items() if k != "X-MLflow-Signature"},  # unsigned
        {**headers, "X-MLflow-Signature": delivery(model, "3", secret="guess")[1][
            "X-MLflow-Signature"]},  # another secret
        {**headers, "X-MLflow-Delivery-Id": str(uuid.uuid4())},  # signed under another id
    ]
    for sent in refused:
        answer = bot.http.post("/webhooks/mlflow", content=body, headers=sent)
        assert answer.status_code == 401 and "X-MLflow-Signature" in answer.json()["error"]
    stale_body, stale = delivery(model, "3", sent=time.time() - 301)
    answer = bot.http.post("/webhooks/mlflow", content=stale_body, headers=stale)
    assert answer.status_code == 401 and "five minutes" in answer.json()["error"]
    tampered = body.replace(b'"3"', b'"4"')
    assert bot.http.post("/webhooks/mlflow", content=tampered, headers=headers).status_code == 401
    assert changes(bot) == [] and bot.rows("SELECT id FROM webhookreceipt") == []

    answer = bot.http.post("/webhooks/mlflow", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json() == {"result": "recorded"}
    # MLflow's retry of that delivery, or a replay within the five minutes: nothing.
    again = bot.http.post("/webhooks/mlflow", content=body, headers=headers)
    assert again.status_code == 200 and again.json() == {"result": "duplicate delivery"}
    # The same move told again in a new delivery: one move, one record.
    body2, headers2 = delivery(model, "3")
    assert bot.http.post("/webhooks/mlflow", content=body2,
                         headers=headers2).json() == {"result": "already recorded"}
    assert changes(bot) == [(model, "champion", None, "3", "webhook")]
    assert SECRET not in bot.log()


def test_mlflow_deliveries_then_a_real_move_named_by_the_incident_after_it_and_rolled_back(
        bot_env, tmp_path, slack, mlflow_server, model):  # noqa: F811
    """One bot for both (each start costs seconds): deliveries signed here, good and bad;
    then MLflow's own, after `mlflow subscribe`."""
    bot = start_bot(bot_env, tmp_path, mlflow_server, model)
    hooks: list[dict] = []
    try:
        signed_unsigned_stale_and_replayed(bot, f"{model}-direct")
        created = subscribe(bot, mlflow_server)
        hooks = [h for h in mlflow_server.call("GET", "webhooks").get("webhooks", [])
                 if h["url"].startswith(bot.url)]
        assert created.returncode == 0 and "subscribed" in created.stdout, created.stderr
        again = subscribe(bot, mlflow_server)
        assert again.returncode == 0 and "already delivers" in again.stdout
        assert len(hooks) == 1
        time.sleep(1.5)  # MLflow caches its webhook list for MLFLOW_WEBHOOK_CACHE_TTL (1 s here)
        mlflow_server.create_model(model)
        good = mlflow_server.create_version(model)
        bad = mlflow_server.create_version(model)
        bot.until(lambda: bot.rows("SELECT version FROM modelalias WHERE model = :m", m=model),
                  what="the bot to learn the model from model_version.created")
        mlflow_server.set_alias_outside_bot(model, "champion", good)
        bot.until(lambda: len(changes(bot, model)) == 1, what="the first move")
        mlflow_server.set_alias_outside_bot(model, "champion", bad)
        bot.until(lambda: len(changes(bot, model)) == 2, timeout=10,
                  what="the move, within seconds")
        assert changes(bot, model) == [(model, "champion", None, good, "webhook"),
                                (model, "champion", good, bad, "webhook")]

        # The alert comes five minutes after the move (the bot's clock is its own: the
        # move is dated back instead, as if it had happened then).
        with bot.db.write() as session:
            for change in session.exec(select(ModelChange).where(ModelChange.model == model)):
                change.moved_at -= timedelta(minutes=5)
        assert bot.post("alertmanager", alert_for(model)).status_code == 202
        ((incident_id,),) = bot.rows("SELECT id FROM incident")
        note = f"Changed 5 min before: {model} champion v{good} → v{bad}"
        ((detail,),) = bot.rows("SELECT detail FROM timelineentry WHERE kind = 'model_change'")
        assert detail == note
        (message,) = bot.until(slack.top_level_messages, what="the incident's message")
        assert note in json.dumps(message["blocks"], ensure_ascii=False)

        preview = answer_to(bot, slack, press(bot, slack, "incident_rollback", str(incident_id),
                                              PLATFORM))
        assert f"v{bad} → v{good}" in preview, preview
        ((target,),) = bot.rows("SELECT to_version FROM rollbackconfirmation")
        assert target == good

        answer = answer_to(bot, slack, press_command(bot, slack, f"changes {model} 1h"))
        assert f"v{good} → v{bad}" in answer and "webhook" in answer
        # Diagnostics' what_changed read the record: when, and from which version.
        ((output,),) = bot.until(lambda: bot.rows(
            "SELECT output FROM stepresult WHERE name = 'what_changed'"), timeout=60,
            what="the diagnostics' what_changed step")
        assert "change record, by webhook" in output and f"previous version: v{good}" in output
    finally:
        for hook in hooks:
            mlflow_server.client.delete(f"{mlflow_server.url}/api/2.0/mlflow/webhooks/"
                                        f"{hook['webhook_id']}")
        bot.stop()


def press_command(bot, slack, command: str) -> str:
    from tests.standins.signing import slack_headers, slash_command_body

    name = f"cmd-{time.monotonic_ns()}"
    body = slash_command_body(command, user_id=ON_CALL, response_url=slack.response_url(name))
    assert bot.http.post("/slack/events", content=body,
                         headers=slack_headers(SIGNING_SECRET, body)).status_code == 200
    return name


def test_polling_records_a_move_no_webhook_reported_once(bot_env, tmp_path, mlflow_server,  # noqa: F811
                                                         model):
    mlflow_server.create_model(model)
    before = mlflow_server.create_version(model)
    after = mlflow_server.create_version(model)
    mlflow_server.set_alias_outside_bot(model, "champion", before)
    bot = start_bot(bot_env, tmp_path, mlflow_server, model, MLFLOW_POLL_SECONDS="0.2")
    try:
        bot.until(lambda: bot.rows("SELECT version FROM modelalias WHERE model = :m", m=model),
                  what="the first poll to learn what champion serves")
        assert changes(bot) == []  # learning a model is not a change
        mlflow_server.set_alias_outside_bot(model, "champion", after)  # no webhook subscribed
        bot.until(lambda: changes(bot), what="a poll to find the move")
        # The webhook MLflow would have sent arrives late: the move is recorded already.
        body, headers = delivery(model, after)
        assert bot.http.post("/webhooks/mlflow", content=body,
                             headers=headers).json() == {"result": "already recorded"}
        time.sleep(1)  # five more polls: none records the move again
        assert changes(bot) == [(model, "champion", before, after, "poll")]
    finally:
        bot.stop()


def test_no_secret_configured_refuses_every_delivery(tmp_path, model):
    from fastapi.testclient import TestClient

    from bot.main import create_app
    from bot.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db", mlflow_webhook_secret="")
    assert ("MLflow webhooks are refused: MLFLOW_WEBHOOK_SECRET is not set"
            in settings.disabled_deliveries())
    body, headers = delivery(model, "1")
    answer = TestClient(create_app(settings)).post("/webhooks/mlflow", content=body,
                                                   headers=headers)
    assert answer.status_code == 401
    assert "MLFLOW_WEBHOOK_SECRET is not configured" in answer.json()["error"]


def test_subscribe_without_a_secret_says_so(tmp_path, mlflow_server):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PUBLIC_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/x.db", MLFLOW_TRACKING_URI=mlflow_server.url)
    done = subprocess.run([sys.executable, "-m", "bot", "mlflow", "subscribe", "--url",
                           "http://127.0.0.1:9"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 2 and "MLFLOW_WEBHOOK_SECRET is not set" in done.stderr
    assert not [h for h in mlflow_server.call("GET", "webhooks").get("webhooks", [])
                if h["url"].startswith("http://127.0.0.1:9/")]


def test_the_scorecard_reads_its_speed_side_from_the_change_records(database_url):
    """The loader's part of the hand-computed quarter (tests/unit/test_speed.py): the
    records in a real database, the routing file's window, serving alias and teams."""
    from bot.db import Database
    from bot.domain.routing import parse_routing
    from bot.models import Incident
    from bot.reports import as_dict, scorecard_for

    routing = parse_routing({"version": 1, "defaults": {"change_window": "2h"},
                             "teams": {"ds-churn": {}},
                             "routes": [{"name": "churn", "matchers": ['model="churn"'],
                                         "tier": "L1", "team": "ds-churn"},
                                        {"name": "default", "tier": "L0"}]})
    db = Database(database_url)
    db.upgrade()
    t0 = datetime(2026, 7, 6, 10, tzinfo=UTC)
    with db.write() as session:
        for before, after, when in ((None, "1", t0 - timedelta(days=10)), ("1", "2", t0),
                                    ("2", "1", t0 + timedelta(hours=1)),
                                    ("1", "3", t0 + timedelta(days=2))):
            session.add(ModelChange(model="churn", alias="champion", from_version=before,
                                    to_version=after, moved_at=when, source="webhook",
                                    recorded_at=when))
        session.add(Incident(key="k1", group_key="g", group_hash="h1", title="errors",
                             state="resolved", tier="L1", route="churn", team="ds-churn",
                             model="churn", source="alertmanager",
                             triggered_at=t0 + timedelta(minutes=30), last_alert_at=t0,
                             resolved_at=t0 + timedelta(minutes=75)))
    try:
        with db.read() as session:
            card = scorecard_for(session=session, since=t0 - timedelta(days=1),
                                 until=t0 + timedelta(days=7), now=t0 + timedelta(days=7),
                                 routing=routing)
        speed = as_dict(card)["speed"]
        assert speed["models_shipped"] == {
            "total": 2, "by_model": {"churn": 2}, "by_team": {"ds-churn": 2},
            "by_week": {"2026-07-06": 2}, "by_quarter": {"2026-Q3": 2}}
        assert speed["change_failure_rate"] == 0.5
        assert speed["failed_changes"] == [{"model": "churn", "version": "2",
                                            "at": "2026-07-06T10:00:00Z", "why": "incident #1",
                                            "time_to_restore_seconds": 3600.0}]
    finally:
        db.dispose()


def test_one_move_told_by_a_webhook_and_a_poll_on_two_replicas_at_once_is_stored_once(
        database_url, tmp_path):
    """Two replicas (apps on one database) record the same move at the same moment, one as
    a webhook and one as a poll would: the compare-and-set lets exactly one store it."""
    import asyncio

    from bot.domain.changes import AliasMove
    from bot.main import create_app
    from bot.settings import Settings

    replicas = [create_app(Settings(database_url=database_url)) for _ in range(2)]
    replicas[0].state.db.upgrade()
    first, second = (app.state.changes for app in replicas)
    now = datetime.now(UTC)

    async def race() -> list[str]:
        await first.record(AliasMove("churn", "champion", "6", now - timedelta(hours=1)),
                           source="webhook")
        results = []
        for attempt in range(5):  # several rounds, so the two really overlap at least once
            version = str(7 + attempt)
            results += await asyncio.gather(
                first.record(AliasMove("churn", "champion", version, now + timedelta(
                    seconds=attempt)), source="webhook"),
                second.record(AliasMove("churn", "champion", version, now + timedelta(
                    seconds=attempt, milliseconds=1)), source="poll"))
        return results

    try:
        outcomes = asyncio.run(race())
        assert sorted(set(outcomes)) == ["already recorded", "recorded"]
        assert outcomes.count("recorded") == 5
        rows = [(r.from_version, r.to_version) for r in _all_changes(replicas[0])]
        assert rows == [(None, "6"), ("6", "7"), ("7", "8"), ("8", "9"), ("9", "10"),
                        ("10", "11")]
    finally:
        for app in replicas:
            app.state.db.dispose()


def _all_changes(app) -> list[ModelChange]:
    with app.state.db.read() as session:
        return list(session.exec(select(ModelChange).order_by(ModelChange.id)).all())
