"""The operator's experiment from issue 11: SIGKILL the bot mid-storm, round after
round, and count what came out. No accepted alert may be lost, no group paged twice,
and no group may have two top-level incident messages in Slack.

Each round posts new L1 alert groups over HTTP from a thread while the bot is killed
at a random moment (fixed seed), then restarts it. `CHAOS_ROUNDS` runs more rounds
than the default 10."""

from __future__ import annotations

import os
import random
import threading
from collections import Counter

import httpx

from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "10"))
GROUPS_PER_ROUND = 10
SEED = 20261130


def _alert(name: str) -> dict:
    return {"version": "4", "status": "firing", "receiver": "oncall-bot",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "alerts": [{"status": "firing", "labels": {"alertname": name, "severity": "critical",
                                                       "model": "churn"},
                        "annotations": {"summary": f"{name} fired"},
                        "startsAt": "2026-11-30T10:00:00Z", "fingerprint": f"fp-{name}"}]}


def _storm(bot: BotProcess, names: list[str], accepted: list[str]) -> None:
    """Post each group's alert; keep the names the bot answered 2xx (accepted)."""
    for name in names:
        try:
            response = bot.post("alertmanager", _alert(name))
        except httpx.HTTPError:
            return  # killed: the rest of the round is not sent
        if response.is_success:
            accepted.append(name)


def _unexplained(standin) -> list[str]:
    """The stand-in's violations, less those of requests a kill cut short (their body
    ends before its Content-Length, so it cannot be parsed)."""
    cut = sum(len(r.raw) < int(r.headers.get("content-length") or 0)
              for r in standin.requests + standin.failed_requests)
    unparsable = [v for v in standin.violations
                  if v.endswith(("Body is not a JSON object", "invalid_json"))]
    rest = [v for v in standin.violations if v not in unparsable]
    return rest + unparsable[cut:]


def test_sigkill_mid_storm_loses_nothing_pages_once_and_posts_once(
        bot_env, tmp_path, slack, pagerduty):
    slack.add_channel("#ml-alerts")  # exists before the bot's first post, as in Slack
    rng = random.Random(SEED)
    bot = BotProcess(bot_env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    accepted: list[str] = []
    bot.start()
    try:
        for round_ in range(ROUNDS):
            names = [f"Chaos{round_:03d}x{i:02d}" for i in range(GROUPS_PER_ROUND)]
            storm = threading.Thread(target=_storm, args=(bot, names, accepted))
            storm.start()
            storm.join(timeout=rng.uniform(0.0, 1.0))  # the random moment
            bot.kill()
            storm.join()
            bot.start()
        # PostgreSQL: leases the killed processes held run out first (3 timeouts + 5 s).
        bot.until(bot.outbox_settled, timeout=60, what="the outbox after the last round")

        assert len(accepted) >= ROUNDS  # the storms did reach the bot
        stored = {r.fingerprint for r in bot.rows("SELECT fingerprint FROM alertoccurrence")}
        lost = sorted(n for n in accepted if f"fp-{n}" not in stored)
        assert lost == [], f"accepted alerts lost: {lost}"

        # Paged twice = PagerDuty opened two incidents for one dedup_key. A trigger sent
        # again while its alert is open (the process died after PagerDuty took it and
        # before that was recorded) is deduplicated by PagerDuty and wakes nobody.
        incidents = bot.rows("SELECT id, key, slack_ts FROM incident ORDER BY id")
        pd_incidents = Counter(i["incident_key"] for i in pagerduty.incidents.values())
        paged_twice = sorted(i.id for i in incidents if pd_incidents[i.key] > 1)
        assert paged_twice == [], f"groups paged twice: {paged_twice}"
        assert all(pd_incidents[i.key] == 1 for i in incidents)  # and every one paged

        messages = Counter(
            m["metadata"]["event_payload"]["incident_id"] for m in slack.top_level_messages()
            if (m.get("metadata") or {}).get("event_type") == "oncall_incident")
        posted_twice = sorted(i for i, n in messages.items() if n > 1)
        assert posted_twice == [], f"groups with two incident messages: {posted_twice}"
        assert sorted(messages) == [i.id for i in incidents]
        assert all(i.slack_ts for i in incidents)
        for standin in (slack, pagerduty):
            assert _unexplained(standin) == []
    finally:
        bot.stop()
