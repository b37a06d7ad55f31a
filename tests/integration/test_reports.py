"""Reports from a real database (SQLite, and PostgreSQL with TEST_DATABASE_URL), through
the command line as a subprocess: the scorecard's figures, the Markdown chart, the
postmortem draft; and the weekly Slack post.

The database holds a hand-computed week, Monday 2026-03-02 to Monday 2026-03-09 UTC:

| # | model | tier | trig (UTC)   | ack   | resolved  | TTA | TTR  | notes                           |
| 1 | churn | L1   | Mon 02 09:00 | 09:04 | 09:40     | 4m  | 40m  | page inside working hours       |
| 2 | churn | L1   | Tue 03 02:00 | 02:10 | 03:00     | 10m | 60m  | L2 paged 02:30, rollback ok     |
| 3 | fraud | L0   | Wed 04 12:00 | —     | 12:20     | —   | 20m  | security="true", nobody paged   |
| 4 | fraud | L1   | Sat 07 11:00 | 11:30 | 13:00     | 30m | 120m | rollback failed                 |
| 5 | churn | L1   | Sun 08 22:00 | 22:02 | open      | 2m  | —    |                                 |
| 6 | churn | L1   | Sun 01 23:00 | —     | Mon 01:00 |     |      | straddles the start: not counted |
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.db import Database
from bot.models import AlertOccurrence, Delivery, Incident, TimelineEntry
from bot.reports import slack_report

UNTIL = "2026-03-09T00:00:00Z"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def reports_cli(*args: str, database_url: str, cwd: Path | None = None,
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli_reports", *args], cwd=cwd,
                          env={**os.environ, "DATABASE_URL": database_url},
                          capture_output=True, text=True, timeout=120)


def add_incident(session, *, model: str, tier: str, triggered_at: datetime,
                 timeline: list[tuple[datetime, str, str, str]] = (), **fields) -> Incident:
    """An incident row with its timeline; `timeline` items are (at, actor, kind, detail)."""
    incident = Incident(key=os.urandom(8).hex(), group_key=f"model={model}",
                        group_hash=os.urandom(8).hex(), title=f"ModelErrorRateHigh model={model}",
                        state="resolved" if fields.get("resolved_at") else "triggered",
                        tier=tier, route="page" if tier == "L1" else "handle", model=model,
                        source=fields.pop("source", "alertmanager"),
                        severity=fields.pop("severity", "critical"),
                        team=fields.pop("team", f"ds-{model}"), triggered_at=triggered_at,
                        last_alert_at=triggered_at, alert_count=1, **fields)
    session.add(incident)
    session.flush()
    for when, actor, kind, detail in timeline:
        session.add(TimelineEntry(incident_id=incident.id, at=when, actor=actor, kind=kind,
                                  detail=detail))
    return incident


def record_week(database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    with db.write() as session:
        first = add_incident(session, model="churn", tier="L1", triggered_at=at(2, 9),
                             acknowledged_at=at(2, 9, 4), acknowledged_by="slack:U0ADA",
                             resolved_at=at(2, 9, 40), resolved_by="alertmanager", paged=True)
        session.add(AlertOccurrence(
            incident_id=first.id, fingerprint="f1", status="resolved", source="alertmanager",
            labels={"alertname": "ModelErrorRateHigh", "model": "churn"},
            annotations={"summary": "error rate 7% > 5%"}, starts_at=at(2, 8, 58),
            ends_at=at(2, 9, 40), first_seen_at=at(2, 9), last_seen_at=at(2, 9, 40)))
        second = add_incident(
            session, model="churn", tier="L1", triggered_at=at(3, 2), acknowledged_at=at(3, 2, 10),
            acknowledged_by="pagerduty:PABC", resolved_at=at(3, 3), resolved_by="slack:U0ADA",
            paged=True, escalated_team="ds-churn", escalated_at=at(3, 2, 30),
            escalated_by="slack:U0ADA", escalation_paged=True,
            timeline=[
                (at(3, 2), "alertmanager", "opened", "L1 via route 'page': churn | errors"),
                (at(3, 2, 1), "bot", "paged", "PagerDuty trigger accepted"),
                (at(3, 2, 10), "pagerduty:PABC", "acknowledged", "acknowledged via pagerduty"),
                (at(3, 2, 20), "bot", "diagnostics", "p99 latency 2.3s; feature lag 40m"),
                (at(3, 2, 30), "slack:U0ADA", "escalated", "L2 escalation to ds-churn: paged"),
                (at(3, 2, 45), "bot", "rollback", "succeeded: churn v7 -> v6"),
                (at(3, 2, 50), "slack:U0ADA", "note", "traffic back to normal\nwatching"),
                (at(3, 3), "slack:U0ADA", "resolved", "resolved via slack"),
            ])
        for action, state in (("trigger", "sent"), ("acknowledge", "failed")):
            session.add(Delivery(incident_id=second.id, target="pagerduty", action=action,
                                 state=state, attempts=1, created_at=at(3, 2),
                                 next_attempt_at=at(3, 2),
                                 sent_at=at(3, 2, 1) if state == "sent" else None,
                                 last_error=None if state == "sent" else "400 invalid"))
        add_incident(session, model="fraud", tier="L0", triggered_at=at(4, 12),
                     resolved_at=at(4, 12, 20), source="grafana", severity="warning",
                     labels={"security": "true"},
                     timeline=[(at(4, 12, 20), "grafana", "resolved", "all alerts resolved")])
        add_incident(session, model="fraud", tier="L1", triggered_at=at(7, 11),
                     acknowledged_at=at(7, 11, 30), resolved_at=at(7, 13), paged=True,
                     source="generic",
                     timeline=[(at(7, 11, 40), "bot", "rollback", "failed: registry down"),
                               (at(7, 13), "generic", "resolved", "all alerts resolved")])
        add_incident(session, model="churn", tier="L1", triggered_at=at(8, 22),
                     acknowledged_at=at(8, 22, 2), paged=True)
        add_incident(session, model="churn", tier="L1", triggered_at=at(1, 23),
                     resolved_at=at(2, 1), paged=True)
    db.dispose()


@pytest.fixture
def week(database_url: str) -> str:
    record_week(database_url)
    return database_url


def test_json_report_figures_match_the_hand_computed_week(week):
    result = reports_cli("report", "--since", "7d", "--until", UNTIL, "--format", "json",
                         database_url=week)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["window"]["since"] == "2026-03-02T00:00:00Z"
    assert report["incidents"]["total"] == 5  # #1-#5; #6 started before the window
    assert report["incidents"]["by_tier"] == {"L1": 4, "L0": 1}
    assert report["incidents"]["by_model"] == {"churn": 3, "fraud": 2}
    assert report["incidents"]["by_source"] == {"alertmanager": 3, "generic": 1, "grafana": 1}
    # TTA 2, 4, 10, 30 min: median rank 1.5 -> 4 + 0.5*6 = 7m; p90 rank 2.7 -> 10 + 0.7*20 = 24m.
    assert report["mtta"] == {"count": 4, "median_seconds": 420.0, "p90_seconds": 1440.0}
    # TTR 20, 40, 60, 120 min: median rank 1.5 -> 40 + 0.5*20 = 50m; p90 rank 2.7 -> 60 + 0.7*60 = 102m.
    assert report["mttr"] == {"count": 4, "median_seconds": 3000.0, "p90_seconds": 6120.0}
    assert report["handled_at_l0"] == {"count": 1, "share": 0.2}
    # Pages: #1 Mon 09:00 (in), #2 Tue 02:00, #2's L2 02:30, #4 Saturday, #5 Sunday night.
    assert (report["pages"]["total"], report["pages"]["outside_working_hours"]) == (5, 4)
    assert report["escalations"] == {"total": 1, "incidents": [2]}
    assert (report["rollbacks"]["succeeded"], report["rollbacks"]["failed"]) == (1, 1)
    assert report["security"] == {"total": 1, "incidents": [3]}
    # churn down 60 (#6, from the start) + 40 + 60 + 120 (#5, open, cut at the end) = 280 min;
    # fraud 120 min (#4; #3 is L0). Out of 10080 minutes.
    availability = report["availability"]
    assert availability["churn"]["downtime_seconds"] == 280 * 60
    assert availability["churn"]["share"] == pytest.approx(1 - 280 / 10080)
    assert availability["fraud"]["share"] == pytest.approx(1 - 120 / 10080)
    assert [d["incidents"] for d in report["daily"]] == [1, 1, 1, 0, 0, 1, 1]


def test_report_since_7d_counts_the_last_seven_days(database_url):
    db = Database(database_url)
    db.upgrade()
    now = datetime.now(UTC)
    with db.write() as session:
        day = timedelta(days=1)
        add_incident(session, model="churn", tier="L1", triggered_at=now - 2 * day,
                     acknowledged_at=now - 2 * day + timedelta(minutes=5),
                     resolved_at=now - 2 * day + timedelta(minutes=30), paged=True)
        add_incident(session, model="fraud", tier="L0", triggered_at=now - day,
                     resolved_at=now - day + timedelta(minutes=10))
        add_incident(session, model="churn", tier="L1", triggered_at=now - 10 * day,
                     resolved_at=now - 10 * day + timedelta(hours=1))  # before the window
    db.dispose()
    result = reports_cli("report", "--since", "7d", "--format", "json", database_url=database_url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["incidents"]["total"] == 2
    assert report["mtta"]["median_seconds"] == 300.0
    assert report["mttr"]["median_seconds"] == pytest.approx(1200.0)  # median of 30m and 10m


def test_markdown_report_links_a_real_png_chart_beside_it(week, tmp_path):
    out = tmp_path / "reports"
    result = reports_cli("report", "--since", "7d", "--until", UNTIL, "--format", "markdown",
                         "--out", str(out), database_url=week)
    assert result.returncode == 0, result.stderr
    report = Path(result.stdout.strip())
    assert report == out / "scorecard-20260302-20260309.md"
    text = report.read_text()
    assert "![Incidents and median MTTR per day](scorecard-20260302-20260309.png)" in text
    assert "| MTTA, median / p90 (n=4) | 7m / 24m |" in text
    assert "| churn | 97.22% | 4h40m |" in text
    chart = out / "scorecard-20260302-20260309.png"
    assert chart.read_bytes().startswith(PNG_MAGIC) and chart.stat().st_size > 10_000


def test_markdown_on_stdout_writes_its_chart_in_the_working_directory(week, tmp_path):
    result = reports_cli("report", "--since", "7d", "--until", UNTIL, "--format", "markdown",
                         database_url=week, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "](scorecard-20260302-20260309.png)" in result.stdout
    assert (tmp_path / "scorecard-20260302-20260309.png").read_bytes().startswith(PNG_MAGIC)


def test_text_report(week):
    result = reports_cli("report", "--since", "2026-03-02T00:00:00+00:00", "--until", UNTIL,
                         "--working-hours", "00:00-23:59", "--working-days", "mon-sun",
                         database_url=week)
    assert result.returncode == 0, result.stderr
    assert "Incidents triggered      5" in result.stdout
    assert "MTTR                     median 50m, p90 1h42m (n=4)" in result.stdout
    # Working hours all day, every day: no page falls outside them.
    assert "Pages to humans          5, 0 outside working hours" in result.stdout


def test_bad_arguments_are_refused_by_name(week):
    result = reports_cli("report", "--since", "tomorrow", database_url=week)
    assert result.returncode == 2 and "tomorrow" in result.stderr
    result = reports_cli("report", "--timezone", "Mars/Olympus", database_url=week)
    assert result.returncode == 2 and "Mars/Olympus" in result.stderr


def test_postmortem_has_every_timeline_entry_and_the_headings(week, tmp_path):
    out = tmp_path / "pm-2.md"
    result = reports_cli("postmortem", "2", "--out", str(out), database_url=week)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    for line in [
        "- 2026-03-03 02:00:00 UTC · **opened** · alertmanager: L1 via route 'page': churn \\| errors",
        "- 2026-03-03 02:01:00 UTC · **paged** · bot: PagerDuty trigger accepted",
        "- 2026-03-03 02:10:00 UTC · **acknowledged** · pagerduty:PABC: acknowledged via pagerduty",
        "- 2026-03-03 02:20:00 UTC · **diagnostics** · bot: p99 latency 2.3s; feature lag 40m",
        "- 2026-03-03 02:30:00 UTC · **escalated** · slack:U0ADA: L2 escalation to ds-churn: paged",
        "- 2026-03-03 02:45:00 UTC · **rollback** · bot: succeeded: churn v7 -> v6",
        "- 2026-03-03 02:50:00 UTC · **note** · slack:U0ADA: traffic back to normal<br>watching",
        "- 2026-03-03 03:00:00 UTC · **resolved** · slack:U0ADA: resolved via slack",
    ]:
        assert line in text
    for heading in ["## Summary", "## Impact window", "## Timeline", "## Diagnostics",
                    "## Rollback", "## Root cause", "## Contributing factors", "## What went well",
                    "## What went badly", "## Action items", "| action | owner | due | ticket |"]:
        assert heading in text
    assert "Time to acknowledge (MTTA for this incident): 10m" in text
    assert "Time to resolve (MTTR for this incident): 1h" in text
    assert "- 2026-03-03 02:20:00 UTC · bot: p99 latency 2.3s; feature lag 40m" in text
    assert "pagerduty acknowledge: failed, 1 attempt(s); last error: 400 invalid" in text


def test_postmortem_of_an_incident_with_no_diagnostics_or_rollback(week):
    result = reports_cli("postmortem", "1", database_url=week)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # Impact from the first alert (08:58, before the incident opened at 09:00) to the resolve.
    assert "From the first alert, 2026-03-02 08:58:00 UTC, to the resolve, " \
           "2026-03-02 09:40:00 UTC: 42m." in text
    assert "No diagnostics ran for this incident." in text
    assert "No rollback was recorded." in text
    assert "`ModelErrorRateHigh` (resolved): started 2026-03-02 08:58:00 UTC" in text


def test_postmortem_of_an_unknown_incident(week):
    result = reports_cli("postmortem", "99", database_url=week)
    assert result.returncode == 1 and "no incident #99" in result.stderr


def test_weekly_post_blocks(week):
    db = Database(week)
    with db.read() as session:
        text, blocks = slack_report("7d", session=session, now=at(9))
    db.dispose()
    assert text == "On-call scorecard 2026-03-02 to 2026-03-09: 5 incidents, 5 pages"
    assert blocks[0]["type"] == "header"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in blocks[1]["fields"]}
    assert len(blocks[1]["fields"]) <= 10  # Block Kit's limit
    assert fields["*Incidents*"] == "5 (L1 4, L0 1)"
    assert fields["*MTTA* median / p90"] == "7m / 24m"
    assert fields["*Pages to humans*"] == "5, 4 outside working hours"
    assert "churn 97.22%" in blocks[2]["text"]["text"]
    with pytest.raises(ValueError):
        slack_report("soon", session=None, now=at(9))  # refused before any query
