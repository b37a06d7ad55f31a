"""Prometheus metrics, in a registry of the app's own (no import-time globals).

Counters and histograms are updated as things happen; incident and delivery
counts are read from the database at scrape time, so every replica reports the
same truth and nothing drifts after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                   30, 60, 300)


class _RecordCollector(Collector):
    def __init__(self, read_counts: Callable[[], tuple[dict[str, int],
                                                       dict[tuple[str, str], int]]]) -> None:
        self.read_counts = read_counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        incidents, deliveries = self.read_counts()
        by_state = GaugeMetricFamily("oncall_incidents", "Incidents by state", labels=["state"])
        for state in ("triggered", "acknowledged", "resolved"):
            by_state.add_metric([state], incidents.get(state, 0))
        yield by_state
        owed = GaugeMetricFamily("oncall_deliveries", "Deliveries not yet sent, by target and "
                                 "state (pending: owed, failed: refused for good)",
                                 labels=["target", "state"])
        for target in ("pagerduty", "slack"):
            for state in ("pending", "failed"):
                owed.add_metric([target, state], deliveries.get((target, state), 0))
        yield owed


class Metrics:
    def __init__(self, read_counts: Callable[[], tuple[dict[str, int],
                                                       dict[tuple[str, str], int]]]) -> None:
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
        self.attempts = Counter("oncall_delivery_attempts", "Delivery attempts by outcome",
                                ["target", "outcome"], registry=self.registry)
        self.registry.register(_RecordCollector(read_counts))

    def delivery_outcome(self, target: str, outcome: str, age_seconds: float) -> None:
        self.attempts.labels(target, outcome).inc()
        if outcome == "sent":
            self.delivery_seconds.labels(target).observe(age_seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
