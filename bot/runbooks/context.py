"""RunContext: everything a run needs from outside the runbook, passed in by the caller."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.adapters.http_probe import HttpProbe, parse_patterns
from bot.clock import Clock, utcnow
from bot.domain.changes import Change
from bot.ports import Prometheus
from bot.runbooks.format import RunbookError


@dataclass(frozen=True)
class RunContext:
    """The alert and incident a run serves, where the outside services are, and what
    the run may fetch.

    Every fetch goes through `probe` (bot/adapters/http_probe.py), within a host policy
    that allows the hosts of `prometheus_url`, `mlflow_uri` and of URLs written literally
    in the runbook, plus `allowed_hosts` (RUNBOOK_HTTP_ALLOWED_HOSTS patterns); PromQL
    goes through `prometheus`. create_app passes the ones it built (the shared TLS trust,
    ONCALL_CA_BUNDLE, is theirs); without them (`oncall-bot runbook run`, tests) a run
    makes its own, its probe trusting the usual CAs plus `ca_bundle`, closed after the run.
    `environ` is what command steps may pass on (through their env_allow) and where
    secret-looking values for redaction come from; `secrets` adds more. `plugin_paths`
    are put on sys.path so python steps can import user plugins.
    """

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    incident: Mapping[str, Any] = field(default_factory=dict)
    prometheus_url: str | None = None
    mlflow_uri: str | None = None
    allowed_hosts: str = ""
    ca_bundle: Path | None = None
    probe: HttpProbe | None = None
    prometheus: Prometheus | None = None
    clock: Clock = utcnow
    secrets: tuple[str, ...] = ()
    plugin_paths: tuple[str, ...] = ()
    # The newest model change the bot recorded for (model, alias): what `what_changed`
    # reads first (MLflow keeps no alias history). None outside the bot (the CLI).
    recorded_change: Callable[[str, str], Awaitable[Change | None]] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RunContext:
        """Service URLs from PROMETHEUS_URL and MLFLOW_TRACKING_URI (MLflow's own variable),
        the allowlist from RUNBOOK_HTTP_ALLOWED_HOSTS, extra CAs from ONCALL_CA_BUNDLE."""
        environ = dict(os.environ if environ is None else environ)
        try:
            parse_patterns(environ.get("RUNBOOK_HTTP_ALLOWED_HOSTS", ""))
        except ValueError as exc:
            raise RunbookError(f"RUNBOOK_HTTP_ALLOWED_HOSTS: {exc}") from None
        values: dict[str, Any] = {
            "prometheus_url": environ.get("PROMETHEUS_URL") or None,
            "mlflow_uri": environ.get("MLFLOW_TRACKING_URI") or None,
            "allowed_hosts": environ.get("RUNBOOK_HTTP_ALLOWED_HOSTS", ""),
            "ca_bundle": Path(environ["ONCALL_CA_BUNDLE"]) if environ.get("ONCALL_CA_BUNDLE") else None,
            "environ": environ,
        }
        values.update(overrides)
        return cls(**values)
