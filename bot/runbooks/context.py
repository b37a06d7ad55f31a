"""RunContext: everything a run needs from outside the runbook, passed in by the caller."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.clock import Clock, utcnow


@dataclass(frozen=True)
class RunContext:
    """The alert and incident a run serves, and where the outside services are.

    `http` is either a client the caller owns (and closes) or a factory the run calls
    once and closes itself. `environ` is what command steps may pass on (through their
    env_allow) and where secret-looking values for redaction come from; `secrets` adds
    more. `plugin_paths` are put on sys.path so python steps can import user plugins.
    """

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    incident: Mapping[str, Any] = field(default_factory=dict)
    prometheus_url: str | None = None
    mlflow_uri: str | None = None
    http: httpx.AsyncClient | Callable[[], httpx.AsyncClient] = httpx.AsyncClient
    clock: Clock = utcnow
    secrets: tuple[str, ...] = ()
    plugin_paths: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RunContext:
        """Service URLs from PROMETHEUS_URL and MLFLOW_TRACKING_URI (MLflow's own variable)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {
            "prometheus_url": environ.get("PROMETHEUS_URL") or None,
            "mlflow_uri": environ.get("MLFLOW_TRACKING_URI") or None,
            "environ": environ,
        }
        values.update(overrides)
        return cls(**values)
