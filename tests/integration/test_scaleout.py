"""Scale-out (issue 14): two `oncall-bot serve` replicas on one PostgreSQL database
behind HAProxy, 200 alert groups sent through the balancer, and the replica that runs
the timers SIGKILLed and restarted mid-way. Each group must be paged once, posted to
Slack once and escalated once (its ack timer fires once), and no accepted alert lost.

Senders behave as Alertmanager does: a 5xx or a connection error is retried until the
alert is accepted, so every group is eventually accepted by one replica or the other.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess, LoadBalancer, wait_for
from tests.integration.test_chaos import _unexplained

GROUPS = 200
SENDERS = 8
ESCALATION_KEY = "ESCALATIONKEY0123456789ABCDEFGHI"  # 32 characters
# Every group is L1 and nobody acknowledges: each one's ack timer fires once, 3 s on.
ROUTES = """
version: 1
escalation:
  l1_ack_timeout: 3s
  l1_escalation_service_env: PLATFORM_ESCALATION_KEY
  l0_promote_after: null
  ack_reminder_after: null
routes:
  - name: page
    matchers: ['severity=~"critical|page"']
    tier: L1
  - name: default
    tier: L0
"""


def _alert(name: str) -> bytes:
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "oncall-bot",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "alerts": [{"status": "firing",
                    "labels": {"alertname": name, "severity": "critical", "model": "churn"},
                    "annotations": {"summary": f"{name} fired"},
                    "startsAt": "2026-11-30T10:00:00Z", "fingerprint": f"fp-{name}"}]}).encode()


def _send(url: str, names: list[str], accepted: list[str], refused: list[str]) -> None:
    """Post each group, retrying 5xx and connection errors (Alertmanager's behaviour)."""
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for name in names:
            give_up = time.monotonic() + 45
            while time.monotonic() < give_up:
                try:
                    response = client.post("/webhooks/alertmanager", content=_alert(name))
                except httpx.TransportError:
                    time.sleep(0.1)
                    continue
                if response.is_success:
                    accepted.append(name)
                    break
                if response.status_code < 500:
                    refused.append(f"{name}: {response.status_code} {response.text[:200]}")
                    break
                time.sleep(0.1)


def test_two_replicas_behind_haproxy_survive_a_sigkill_paging_posting_and_escalating_once(
        bot_env, database_url, tmp_path, slack, pagerduty):
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database; on SQLite one process runs the bot")
    slack.add_channel("#ml-alerts")
    routing = tmp_path / "routes.yaml"
    routing.write_text(ROUTES)
    env = {**bot_env, "ONCALL_CONFIG": str(routing), "TIMER_RECONCILE_SECONDS": "0.3",
           "PLATFORM_ESCALATION_KEY": ESCALATION_KEY, "PAGERDUTY_EVENTS_PER_MINUTE": "0",
           "DATABASE_POOL_SIZE": "5", "ACCESS_LOG": "true", "LOG_FORMAT": "json"}
    replicas = [BotProcess(env, log_path=tmp_path / f"replica{i}.log", token=WEBHOOK_TOKEN)
                for i in range(2)]
    balancer = LoadBalancer([r.url for r in replicas], directory=tmp_path)
    accepted: list[str] = []
    refused: list[str] = []
    names = [f"Scale{i:03d}" for i in range(GROUPS)]
    senders = [threading.Thread(target=_send, args=(balancer.url, names[i::SENDERS], accepted,
                                                    refused))
               for i in range(SENDERS)]
    try:
        for replica in replicas:
            replica.start()
        balancer.start()
        first = replicas[0]
        leader = first.until(
            lambda: [r for r in replicas if "now runs the timers" in r.log()],
            what="a timer leader")[0]
        for sender in senders:
            sender.start()
        wait_for(lambda: len(accepted) >= GROUPS // 2, timeout=30, what="half the groups")
        leader.kill()  # mid-storm, and the replica holding the timers
        leader.start()
        for sender in senders:
            sender.join(timeout=60)
        assert refused == []
        assert sorted(accepted) == names  # every group accepted once the senders retried

        stored = {r.fingerprint for r in first.rows("SELECT fingerprint FROM alertoccurrence")}
        assert sorted(n for n in names if f"fp-{n}" not in stored) == []  # none lost
        assert len(first.rows("SELECT id FROM incident")) == GROUPS

        # Each ack timer fires (3 s after its page), and only once, whoever leads.
        first.until(lambda: len(first.rows(
            "SELECT id FROM timelineentry WHERE kind = 'ack_timeout'")) >= GROUPS,
            timeout=40, what="every group's ack timer")
        # PostgreSQL: leases the killed process held run out first (3 timeouts + 5 s).
        first.until(first.outbox_settled, timeout=40, what="the outbox")
        incidents = first.rows("SELECT id, key, slack_ts FROM incident ORDER BY id")
        fired = Counter(r.incident_id for r in first.rows(
            "SELECT incident_id FROM timelineentry WHERE kind = 'ack_timeout'"))
        assert sorted(i for i, n in fired.items() if n != 1) == []
        assert sorted(fired) == [i.id for i in incidents]

        # Paged once = one PagerDuty incident per dedup_key (a trigger sent again after
        # the kill is deduplicated by PagerDuty and wakes nobody; see test_chaos.py).
        pd_incidents = Counter(i["incident_key"] for i in pagerduty.incidents.values())
        assert sorted(i.id for i in incidents if pd_incidents[i.key] != 1) == []
        assert sorted(i.id for i in incidents if pd_incidents[f"{i.key}-esc"] != 1) == []
        escalations = [e for e in pagerduty.events if e["dedup_key"].endswith("-esc")]
        assert {e["event"]["routing_key"] for e in escalations} == {ESCALATION_KEY}

        messages = Counter(
            m["metadata"]["event_payload"]["incident_id"] for m in slack.top_level_messages()
            if (m.get("metadata") or {}).get("event_type") == "oncall_incident")
        assert sorted(i for i, n in messages.items() if n > 1) == []
        assert sorted(messages) == [i.id for i in incidents]
        assert all(i.slack_ts for i in incidents)
        for standin in (slack, pagerduty):
            assert _unexplained(standin) == []
        # Both replicas took a share of the groups through the balancer (access logs).
        assert all(r.log().count("POST /webhooks/alertmanager 202") for r in replicas)
    finally:
        balancer.stop()
        for replica in replicas:
            replica.stop()
