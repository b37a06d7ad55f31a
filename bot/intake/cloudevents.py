"""CloudEvents 1.0 over HTTP from drift detectors, in binary and structured mode.

The alibi-detect server that KServe and Seldon run (seldon-core's
components/alibi-detect-server) replies to each tested batch with a binary-mode event:
`ce-specversion: 1.0`, `ce-id`, `ce-source` and `ce-type` set from its `--event_source`
and `--event_type` arguments (e.g. `io.seldon.serving.inference.drift`), and as body
the detector's `predict` output, `{"data": {"is_drift", "p_val", "distance",
"threshold"}, "meta": {"name", ...}}`. It encodes that output to a JSON string and then
JSON-encodes the string again, so the body is a JSON string holding the JSON object:
both are read. Structured mode (`application/cloudevents+json`) carries the same data
in `data` (or `data_base64`).

`is_drift` is 0/1 for the whole batch, or one per feature (alibi-detect's
`drift_type="feature"`), with `p_val` and `distance` then per feature too. Since the
type is whatever the detector was started with, any type is taken whose data holds
`is_drift`. Parsing is pure; `decode` (the HTTP edge's bounded JSON decoder) reads the
nested JSON texts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.domain.drift import DriftResult
from bot.intake import PayloadError

STRUCTURED = "application/cloudevents+json"
BATCHED = "application/cloudevents-batch+json"
MAX_FEATURES = 1000  # bounds the work one event causes
MAX_SOURCE = 1024
REQUIRED = ("id", "source", "type")


@dataclass(frozen=True, slots=True)
class CloudEvent:
    id: str
    source: str
    type: str
    data: object


class Unsupported(ValueError):
    """A CloudEvents mode this receiver does not take (the edge answers 415)."""


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse(headers: Mapping[str, str], body: bytes, decode: Callable[[bytes], object]
          ) -> CloudEvent:
    """The event of one request. `headers`: lower-case names. PayloadError names what is
    missing; Unsupported for batched mode; `decode`'s own errors propagate."""
    kind = media_type(headers.get("content-type", ""))
    if kind == BATCHED:
        raise Unsupported("batched CloudEvents (application/cloudevents-batch+json) are not "
                          "taken: send each event on its own")
    if kind == STRUCTURED:
        document = decode(body)
        if not isinstance(document, dict):
            raise PayloadError(["body: a structured CloudEvent must be a JSON object"])
        attributes = document
        data = _structured_data(document, decode)
        prefix = ""
    elif "ce-specversion" in headers:
        attributes = {name[3:]: value for name, value in headers.items()
                      if name.startswith("ce-")}
        data = decode(body) if body.strip() else None
        prefix = "ce-"
    else:
        raise PayloadError(["not a CloudEvent: no ce-specversion header, and Content-Type is "
                            f"not {STRUCTURED}"])
    problems = []
    if attributes.get("specversion") != "1.0":
        problems.append(f"{prefix}specversion: must be '1.0'")
    for name in REQUIRED:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            problems.append(f"{prefix}{name}: required, a non-empty string")
    source = attributes.get("source")
    if isinstance(source, str) and len(source) > MAX_SOURCE:
        problems.append(f"{prefix}source: longer than {MAX_SOURCE} characters")
    if problems:
        raise PayloadError(problems)
    if isinstance(data, str):  # the alibi-detect server's JSON text inside JSON
        data = decode(data.encode())
    return CloudEvent(id=attributes["id"], source=attributes["source"],  # type: ignore[arg-type]
                      type=attributes["type"], data=data)  # type: ignore[arg-type]


def _structured_data(document: Mapping[str, object], decode: Callable[[bytes], object]
                     ) -> object:
    if "data_base64" in document:
        encoded = document["data_base64"]
        try:
            raw = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
        except binascii.Error:
            raw = None
        if raw is None:
            raise PayloadError(["data_base64: must be base64 text"])
        return decode(raw)
    return document.get("data")


def _numbers(value: object, name: str, problems: list[str]) -> list[float | None] | float | None:
    def number(item: object) -> float | None:
        if item is None:
            return None
        if isinstance(item, bool) or not isinstance(item, int | float):
            problems.append(f"data.{name}: must be a number, a list of numbers, or null")
            return None
        return float(item)

    if isinstance(value, list):
        return [number(item) for item in value[:MAX_FEATURES]]
    return number(value)


def _verdict(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def drift_results(event: CloudEvent) -> list[DriftResult]:
    """The verdicts of a detector's event: one for the batch, or one per feature."""
    outer = event.data if isinstance(event.data, dict) else {}
    inner = outer.get("data") if isinstance(outer.get("data"), dict) else outer
    if "is_drift" not in inner:
        raise PayloadError(["data.is_drift: required (the event is not a drift detector's "
                            "result)"])
    meta = outer.get("meta")
    method = meta.get("name") if isinstance(meta, dict) else None
    problems: list[str] = []
    p_val = _numbers(inner.get("p_val"), "p_val", problems)
    distance = _numbers(inner.get("distance"), "distance", problems)
    threshold = _numbers(inner.get("threshold"), "threshold", problems)
    flags = inner["is_drift"]
    common = {"detector": event.source, "method": method if isinstance(method, str) else None,
              "event_type": event.type}
    if isinstance(flags, list):
        if len(flags) > MAX_FEATURES:
            problems.append(f"data.is_drift: more than {MAX_FEATURES} features")
        verdicts = [_verdict(flag) for flag in flags]
        if None in verdicts:
            problems.append("data.is_drift: each feature's verdict must be 0 or 1")
        if problems:
            raise PayloadError(problems)
        return [DriftResult(feature=index, drifting=bool(drifting),
                            p_val=_at(p_val, index), distance=_at(distance, index),
                            threshold=_at(threshold, index), **common)
                for index, drifting in enumerate(verdicts)]
    verdict = _verdict(flags)
    if verdict is None:
        problems.append("data.is_drift: must be 0 or 1, or a list of them (one per feature)")
    if problems:
        raise PayloadError(problems)
    # A batch verdict over per-feature tests (alibi-detect's KS and chi-squared with a
    # Bonferroni or FDR correction): the smallest p-value and largest distance tell it.
    return [DriftResult(feature=None, drifting=verdict, p_val=_extreme(p_val, min),
                        distance=_extreme(distance, max), threshold=_extreme(threshold, min),
                        **common)]


def _at(values: list[float | None] | float | None, index: int) -> float | None:
    if isinstance(values, list):
        return values[index] if index < len(values) else None
    return values


def _extreme(values: list[float | None] | float | None,
             pick: Callable[[list[float]], float]) -> float | None:
    if isinstance(values, list):
        present = [value for value in values if value is not None]
        return pick(present) if present else None
    return values
