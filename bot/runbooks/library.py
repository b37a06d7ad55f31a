"""Python steps shipped with the bot (`callable: "bot.runbooks.library:<name>"`).

Each takes rendered values (strings or numbers), returns a dict of values with
`passed` and a `message` for the incident thread, and raises ValueError for input it
cannot read.
"""

from __future__ import annotations

from typing import Any


def compare_versions(reported: Any, serving: Any, model: str = "the model") -> dict[str, Any]:
    """Does the version the alert reports match the version the registry alias serves?

    A mismatch means the deployment is not running what the registry says is live:
    a half-finished rollout, a pinned replica, or a rollback done outside the registry.
    """
    if reported in (None, ""):
        return {"passed": True, "reported": None, "serving": serving,
                "message": f"{model}: the alert names no version; the registry serves v{serving}"}
    if serving in (None, ""):
        raise ValueError(f"{model}: no serving version to compare v{reported} with")
    same = str(reported).strip().lstrip("v") == str(serving).strip().lstrip("v")
    message = (f"{model}: the alert's version v{reported} is the one the registry serves" if same else
               f"{model}: the alert comes from v{reported} but the registry alias serves v{serving}: "
               "the deployment and the registry disagree")
    return {"passed": same, "reported": str(reported), "serving": str(serving), "message": message}


def relative_change(current: Any, baseline: Any, max_ratio: Any = 1.5, what: str = "value") -> dict[str, Any]:
    """Passes while current / baseline stays at or below `max_ratio`: e.g. p95 latency now
    against the same hour a week ago. A zero or missing baseline cannot regress."""
    if current is None or baseline is None:
        return {"passed": True, "ratio": None, "message": f"{what}: no data to compare (current {current}, "
                                                           f"baseline {baseline})"}
    now, before, limit = float(current), float(baseline), float(max_ratio)
    if before <= 0:
        return {"passed": True, "ratio": None,
                "message": f"{what}: baseline is {before:g}, nothing to compare"}
    ratio = now / before
    passed = ratio <= limit
    return {"passed": passed, "ratio": round(ratio, 3),
            "message": f"{what}: {now:g} now vs {before:g} before, ×{ratio:.2f} "
                       f"({'within' if passed else 'above'} ×{limit:g})"}
