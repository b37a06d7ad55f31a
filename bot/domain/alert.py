"""The normalized alert every intake format is parsed into."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


# Label names that carry the model identity, most specific first. ML monitors
# disagree on spelling, so the first present one wins.
MODEL_LABELS = ("model", "model_name")
VERSION_LABELS = ("model_version", "version")
ENVIRONMENT_LABELS = ("environment", "env")


# Model, version and environment become indexed columns and keys (PostgreSQL's
# btree refuses entries over ~2.7 KB); no real name comes near this, so a longer
# one is cut, while the label itself is kept whole.
MAX_NAME = 200


def _first(labels: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            return value if len(value) <= MAX_NAME else value[:MAX_NAME - 1] + "…"
    return None


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """Stable identity of an alert from its label set, for sources that send none."""
    digest = hashlib.sha256()
    for name in sorted(labels):
        digest.update(name.encode())
        digest.update(b"\xff")
        digest.update(labels[name].encode())
        digest.update(b"\xff")
    return digest.hexdigest()[:16]


# The record keeps fingerprints of at most this many characters.
MAX_FINGERPRINT = 128


def alert_fingerprint(sent: str | None, labels: Mapping[str, str]) -> str:
    """The sender's fingerprint when it fits the record, its hash when longer (the same
    long fingerprint still names the same alert), the label hash when none was sent."""
    if not sent:
        return label_fingerprint(labels)
    if len(sent) <= MAX_FINGERPRINT:
        return sent
    return "sha256:" + hashlib.sha256(sent.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as monitoring sees it; the same fingerprint means the same alert."""

    fingerprint: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    source: str = "generic"
    generator_url: str | None = None

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def model(self) -> str | None:
        return _first(self.labels, MODEL_LABELS)

    @property
    def version(self) -> str | None:
        return _first(self.labels, VERSION_LABELS)

    @property
    def environment(self) -> str | None:
        return _first(self.labels, ENVIRONMENT_LABELS)

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def summary(self) -> str:
        return (
            self.annotations.get("summary")
            or self.annotations.get("description")
            or self.alertname
            or "alert"
        )
