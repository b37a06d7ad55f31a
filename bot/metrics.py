"""Prometheus metrics, in a registry of the app's own (no import-time globals).

Counters and histograms are updated as things happen; incident and delivery
counts are read from the database at scrape time, so every replica reports the
same truth and nothing drifts after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                   30, 60, 300)


# Every outbox target, so each series exists (at 0) before its first delivery.
TARGETS = ("pagerduty", "pagerduty_rest", "slack")


@dataclass(frozen=True, slots=True)
class RecordSnapshot:
    """What a scrape reads from the database."""

    incidents: dict[str, int] = field(default_factory=dict)  # open ones, by state
    pending: dict[str, int] = field(default_factory=dict)  # by target
    failed: dict[str, int] = field(default_factory=dict)  # by target
    oldest_pending_seconds: dict[str, float] = field(default_factory=dict)  # by target
    pages_undelivered: int = 0  # pages PagerDuty has not taken past the alarm threshold


class _RecordCollector(Collector):
    def __init__(self, read: Callable[[], RecordSnapshot], leading: Callable[[], bool]) -> None:
        self.read = read
        self.leading = leading

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.read()
        # Open ones only: counting the resolved would read the whole record every scrape.
        by_state = GaugeMetricFamily("oncall_incidents", "Open incidents by state",
                                     labels=["state"])
        for state in ("triggered", "acknowledged"):
            by_state.add_metric([state], snapshot.incidents.get(state, 0))
        yield by_state
        owed = GaugeMetricFamily("oncall_deliveries", "Deliveries not yet sent, by target and "
                                 "state (pending: owed, failed: refused for good or given up)",
                                 labels=["target", "state"])
        oldest = GaugeMetricFamily("oncall_delivery_oldest_pending_seconds",
                                   "Age of the oldest pending delivery, by target (0: none)",
                                   labels=["target"])
        for target in TARGETS:
            owed.add_metric([target, "pending"], snapshot.pending.get(target, 0))
            owed.add_metric([target, "failed"], snapshot.failed.get(target, 0))
            oldest.add_metric([target], snapshot.oldest_pending_seconds.get(target, 0.0))
        yield owed
        yield oldest
        yield GaugeMetricFamily("oncall_pages_undelivered",
                                "Pages PagerDuty has not taken for PAGE_UNDELIVERED_ALERT_AFTER "
                                "or longer (each is announced in Slack)",
                                value=snapshot.pages_undelivered)
        # Summed over replicas this is 1: 0 means no process runs the timers.
        yield GaugeMetricFamily("oncall_timer_leader",
                                "1 when this process runs the timers (escalation, reminders)",
                                value=1 if self.leading() else 0)


class Metrics:
    def __init__(self, read_record: Callable[[], RecordSnapshot],
                 leading: Callable[[], bool] = lambda: False) -> None:
        self.registry = CollectorRegistry()
        self.alerts = Counter("oncall_alerts_received", "Alerts accepted, by source and status",
                              ["source", "status"], registry=self.registry)
        self.rejected = Counter("oncall_webhook_rejected", "Webhook requests refused, by reason",
                                ["source", "reason"], registry=self.registry)
        self.ingest_seconds = Histogram("oncall_ingest_seconds",
                                        "Webhook handling time until committed, by source",
                                        ["source"], buckets=LATENCY_BUCKETS,
                                        registry=self.registry)
        self.delivery_seconds = Histogram("oncall_delivery_seconds",
                                          "Time from a delivery being owed to it being sent",
                                          ["target"], buckets=LATENCY_BUCKETS,
                                          registry=self.registry)
        self.attempts = Counter("oncall_delivery_attempts", "Delivery attempts by outcome "
                                "(sent, retry, failed: refused, expired: out of retry budget)",
                                ["target", "outcome"], registry=self.registry)
        self.responses = Counter("oncall_http_responses", "HTTP responses, by handler (path, or "
                                 "other) and status code", ["handler", "code"],
                                 registry=self.registry)
        self.registry.register(_RecordCollector(read_record, leading))

    def delivery_outcome(self, target: str, outcome: str, age_seconds: float) -> None:
        self.attempts.labels(target, outcome).inc()
        if outcome == "sent":
            self.delivery_seconds.labels(target).observe(age_seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
