"""Configuration from the environment (12-factor), validated once at start.

The variable names are a public contract. A bad value stops the process with a
message naming the variable (see `load_settings`). Secrets are `SecretStr` so
they never show in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.adapters.http_probe import parse_patterns
from bot.domain.delivery import parse_mention
from bot.domain.durations import parse_duration
from bot.domain.retention import Cutoffs, cutoffs
from bot.domain.routing import RoutingConfig

DEFAULT_ROUTING_FILE = Path(__file__).parent / "default_routing.yaml"


class ConfigurationError(Exception):
    """Start-up configuration is invalid; the message names each bad variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    database_url: str = "sqlite:///oncall-bot.db"
    # How long a write may wait for a database lock before the webhook answers 503.
    database_lock_timeout_seconds: float = Field(default=5.0, gt=0)
    # PostgreSQL connections each replica may hold (its engine's pool; no overflow), so
    # that pool size × replicas + the timer leader's lock connection fits the server.
    database_pool_size: int = Field(default=20, ge=2)
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_alert_channel: str = "#ml-alerts"
    # An app-level token (xapp-…) switches Slack to Socket Mode: no public URL needed.
    slack_app_token: SecretStr | None = None
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_api_token: SecretStr | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com"
    pagerduty_api_url: str = "https://api.pagerduty.com"
    pagerduty_webhook_secret: SecretStr | None = None
    # Whose on-call `/oncall who` and permission checks ask about (comma-separated IDs).
    pagerduty_escalation_policy_ids: str = ""
    pagerduty_schedule_ids: str = ""
    # PagerDuty's Events API accepts about 120 events a minute per integration
    # key and drops the rest; the outbox keeps below this. 0 turns the limit off.
    pagerduty_events_per_minute: int = Field(default=120, ge=0)
    # Email of a PagerDuty user, sent as From on REST writes (notes), as PagerDuty
    # requires for account-level API tokens.
    pagerduty_from_email: str | None = None
    # Runbooks: where they are, and the services their steps query.
    oncall_runbooks: Path = Path("runbooks")
    prometheus_url: str | None = None
    mlflow_tracking_uri: str | None = None
    # Verifies MLflow's registry webhooks (X-MLflow-Signature); unset: all are refused.
    mlflow_webhook_secret: SecretStr | None = None
    # How often the timer leader polls the serving aliases of the models the bot knows,
    # recording moves a webhook missed (MLflow keeps no failed delivery). 0: never.
    mlflow_poll_seconds: float = Field(default=300.0, ge=0)
    # Hosts runbook steps may fetch besides those two and hosts written in runbooks:
    # comma-separated `host` (any port), `host:port`, `*.domain` (see bot/adapters/http_probe.py).
    runbook_http_allowed_hosts: str = ""
    # One token, or two comma-separated while one is rotated out.
    alert_webhook_token: SecretStr | None = None
    # Serving alert webhooks on a non-loopback address without a token is refused
    # at start unless this says it is meant.
    alert_webhook_allow_unauthenticated: bool = False
    alert_max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # Integration keys POST /v2/enqueue accepts (comma-separated); none: it refuses every event.
    events_intake_routing_keys: SecretStr | None = None
    oncall_config: Path = DEFAULT_ROUTING_FILE
    oncall_ca_bundle: Path | None = None
    outbox_backoff_base_seconds: float = Field(default=1.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=300.0, gt=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    # A delivery other than a page still failing after this long is given up (90s, 24h, 2d).
    delivery_retry_budget: timedelta = timedelta(hours=24)
    # A page PagerDuty has not taken for this long is announced loudly in Slack,
    # mentioning `here` or a user group (S0123ABC), and again every 15 minutes.
    page_undelivered_alert_after: timedelta = timedelta(minutes=5)
    page_undelivered_mention: str = "here"
    # How often the timer-running process reconciles timers with the incidents.
    timer_reconcile_seconds: float = Field(default=10.0, gt=0)
    # Retention: sent and failed deliveries, webhook receipts, runbook step results and
    # the occurrences of resolved incidents older than this many days are deleted.
    retention_days: int = Field(default=400, ge=1)
    # Unset: incidents and their timelines are kept forever. Set: incidents resolved
    # longer ago than this are deleted with everything that refers to them.
    incident_retention_days: int | None = Field(default=None, ge=1)
    # How often each replica prunes (deletes are idempotent: replicas may overlap).
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    log_level: str = "INFO"
    # json, text, or auto: JSON lines unless stdout is a terminal.
    log_format: str = "auto"
    # One line per HTTP request (method, path without query, status, duration): no
    # header, query string or body, so no token.
    access_log: bool = False
    # The bot's public base URL (https://oncall.example.com), used in the links it gives out
    # and where `mlflow subscribe` points MLflow's webhook unless --url is given.
    public_url: str | None = None
    # Signs the web console's sessions; the same on every replica. Unset: no console.
    console_secret: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value.startswith("postgres://"):  # what Heroku and most platforms hand out
            value = "postgresql://" + value.removeprefix("postgres://")
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a sqlite:///, postgresql:// or postgres:// URL")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _slack_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        # slack_sdk joins method names with urljoin, which drops a last path
        # segment that lacks its slash.
        return value if value.endswith("/") else value + "/"

    @field_validator("pagerduty_events_url", "pagerduty_api_url")
    @classmethod
    def _https_only(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (the PagerDuty client refuses plain http)")
        return value.rstrip("/")

    @field_validator("oncall_config")
    @classmethod
    def _readable_config(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no routing file at {value}")
        return value

    @field_validator("oncall_ca_bundle")
    @classmethod
    def _readable_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            if not value.is_file():
                raise ValueError(f"no CA bundle at {value}")
            if b"-----BEGIN CERTIFICATE-----" not in value.read_bytes():
                raise ValueError(f"{value} holds no PEM certificate")
        return value

    @field_validator("prometheus_url", "mlflow_tracking_uri")
    @classmethod
    def _service_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/") if value else value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        scheme, sep, rest = value.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or any(c in rest for c in "?#"):
            raise ValueError("must be the bot's base URL, like https://oncall.example.com")
        return value

    @field_validator("console_secret")
    @classmethod
    def _console_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("alert_webhook_token")
    @classmethod
    def _tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 1 <= len(cls.id_list(value.get_secret_value())) <= 2:
            raise ValueError("must hold one token, or two separated by a comma")
        return value

    @field_validator("delivery_retry_budget", "page_undelivered_alert_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("delivery_retry_budget", "page_undelivered_alert_after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration like 90s, 5m or 24h")
        return value

    @field_validator("incident_retention_days", "mlflow_webhook_secret", "public_url",
                     mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("page_undelivered_mention")
    @classmethod
    def _mention(cls, value: str) -> str:
        parse_mention(value)
        return value.strip()

    @field_validator("runbook_http_allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: str) -> str:
        parse_patterns(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value.lower() not in ("json", "text", "auto"):
            raise ValueError("must be json, text or auto")
        return value.lower()

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return value

    @staticmethod
    def id_list(value: str) -> list[str]:
        return [part.strip() for part in value.split(",") if part.strip()]

    @property
    def alert_webhook_tokens(self) -> tuple[bytes, ...]:
        """Every token alert webhooks accept; none when intake is open."""
        if self.alert_webhook_token is None:
            return ()
        return tuple(token.encode()
                     for token in self.id_list(self.alert_webhook_token.get_secret_value()))

    @property
    def events_intake_keys(self) -> tuple[bytes, ...]:
        """Every integration key /v2/enqueue accepts; none: every event is refused."""
        if self.events_intake_routing_keys is None:
            return ()
        return tuple(key.encode() for key in
                     self.id_list(self.events_intake_routing_keys.get_secret_value()))

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def paging_enabled(self) -> bool:
        return self.pagerduty_routing_key is not None

    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret, so runbook output can be redacted of them."""
        return tuple(value.get_secret_value() for value in (
            self.slack_bot_token, self.slack_signing_secret, self.slack_app_token,
            self.pagerduty_routing_key, self.pagerduty_api_token, self.pagerduty_webhook_secret,
            self.console_secret, self.mlflow_webhook_secret,
        ) if value is not None) + tuple(token.decode() for token in (
            *self.alert_webhook_tokens, *self.events_intake_keys))

    def retention_cutoffs(self, now: datetime) -> Cutoffs:
        return cutoffs(now, retention_days=self.retention_days,
                       incident_retention_days=self.incident_retention_days)

    def disabled_deliveries(self) -> list[str]:
        """Plain-language lines for start-up: what will not be delivered, and why."""
        lines = []
        if not self.slack_enabled:
            lines.append("Slack messages are disabled: SLACK_BOT_TOKEN is not set")
        if not self.paging_enabled:
            lines.append("PagerDuty pages are disabled: PAGERDUTY_ROUTING_KEY is not set")
        if self.slack_signing_secret is None and self.slack_app_token is None:
            lines.append("Slack commands and buttons are disabled: SLACK_SIGNING_SECRET is not set")
        if self.pagerduty_webhook_secret is None:
            lines.append("PagerDuty webhooks are refused: PAGERDUTY_WEBHOOK_SECRET is not set")
        if self.mlflow_webhook_secret is None:
            lines.append("MLflow webhooks are refused: MLFLOW_WEBHOOK_SECRET is not set")
        if not self.oncall_runbooks.is_dir():
            lines.append(f"runbooks are disabled: no directory {self.oncall_runbooks} "
                         "(ONCALL_RUNBOOKS)")
        if self.console_secret is None:
            lines.append("the web console (/console) is off: CONSOLE_SECRET is not set")
        if self.alert_webhook_token is None:
            lines.append("alert webhooks accept requests without a token: ALERT_WEBHOOK_TOKEN is not set")
        return lines


def routing_keys(routing: RoutingConfig,
                 environ: Mapping[str, str] | None = None) -> dict[str, SecretStr]:
    """The PagerDuty integration keys held by the variables the routing file names, read
    once, at start (create_app): setting or changing one later takes a restart. A variable
    unset or empty is left out; `oncall-bot config check` and `serve` warn about it by name."""
    environ = os.environ if environ is None else environ
    return {name: SecretStr(environ[name]) for name in routing.routing_key_variables()
            if environ.get(name)}


def load_settings(**overrides: object) -> Settings:
    """Read and validate the environment; raise ConfigurationError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        ]
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None
