"""Drift detectors' results become `ModelDrift` alerts that do not flap.

A detector (an alibi-detect server behind KServe or Seldon) answers every batch it
tests, drift or not. A drifting batch fires the alert; the alert resolves only after
`drift_resolve_after` consecutive clean batches, so drift that comes and goes stays
one alert instead of paging as flapping. The count is kept per detector, model and
feature (`step` decides; the store keeps it). Which model an event is about, and
what other labels its alert carries, comes from the routing file's `drift_sources`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.domain.alert import Alert, AlertStatus

ALERTNAME = "ModelDrift"
DEFAULT_SEVERITY = "warning"
DEFAULT_RESOLVE_AFTER = 3


@dataclass(frozen=True, slots=True)
class DriftSource:
    """One `drift_sources` entry: events whose source fully matches `pattern` get its
    named groups and `labels` as labels (`model` among them names the model), and
    `features` names a per-feature result's positions."""

    pattern: re.Pattern[str]
    labels: Mapping[str, str] = field(default_factory=dict)
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DriftResult:
    """One verdict of one batch: for the whole batch (`feature` None) or one feature."""

    detector: str  # the CloudEvent's source
    feature: int | None
    drifting: bool
    p_val: float | None = None
    distance: float | None = None
    threshold: float | None = None
    method: str | None = None  # the detector's meta.name, e.g. KSDrift
    event_type: str = ""


def labels_for(result: DriftResult, sources: Sequence[DriftSource]) -> dict[str, str]:
    """The alert's labels: the first matching source's named groups and labels over the
    defaults (the model is the event's source itself), then `alertname` and `feature`."""
    labels = {"severity": DEFAULT_SEVERITY, "model": result.detector}
    for source in sources:
        match = source.pattern.fullmatch(result.detector)
        if match is None:
            continue
        labels.update({k: v for k, v in match.groupdict().items() if v})
        labels.update(source.labels)
        if result.feature is not None and result.feature < len(source.features):
            labels["feature"] = source.features[result.feature]
        break
    labels["alertname"] = ALERTNAME
    if result.feature is not None:
        labels.setdefault("feature", str(result.feature))
    return labels


def counter_key(detector: str, model: str, feature: str) -> str:
    """The key the clean-batch count is kept under (fits any index, whatever the names)."""
    digest = hashlib.sha256()
    for part in (detector, model, feature):
        digest.update(part.encode())
        digest.update(b"\xff")
    return digest.hexdigest()


def step(clean: int | None, drifting: bool, resolve_after: int
         ) -> tuple[int | None, AlertStatus | None]:
    """The next count and the alert to send. `clean`: consecutive clean batches since
    the alert last fired, None when it is not firing (and nothing is kept)."""
    if drifting:
        return 0, AlertStatus.FIRING
    if clean is None:
        return None, None
    if clean + 1 >= resolve_after:
        return None, AlertStatus.RESOLVED
    return clean + 1, None


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def drift_alert(result: DriftResult, labels: Mapping[str, str], status: AlertStatus,
                key: str, now: datetime) -> Alert:
    feature = f", feature {labels['feature']}" if "feature" in labels else ""
    annotations = {
        "summary": f"Drift in model {labels['model']}{feature}: p-value "
                   f"{_number(result.p_val)} (threshold {_number(result.threshold)})",
        "detector": result.detector,
    }
    values = {"p_val": result.p_val, "distance": result.distance, "threshold": result.threshold}
    annotations.update({name: _number(value) for name, value in values.items()
                        if value is not None})
    if result.method:
        annotations["method"] = result.method
    return Alert(
        fingerprint=f"drift:{key[:32]}", status=status, labels=dict(labels),
        annotations=annotations, starts_at=now if status is AlertStatus.FIRING else None,
        ends_at=now if status is AlertStatus.RESOLVED else None, source="cloudevents")
