"""SQLModel tables: the incident record and the outbox of owed deliveries.

Datetimes are timezone-aware UTC: SQLModel's UTCDateTime refuses naive values
and returns UTC from both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel


class Incident(SQLModel, table=True):
    # The reopen candidates of a batch by group, state and time: with ix_incident_state
    # alone SQLite (no statistics) walks every resolved incident for each batch.
    __table_args__ = (Index("ix_incident_reopen", "group_hash", "state", "resolved_at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=64)  # PagerDuty dedup_key, stable across reopen
    group_key: str
    group_hash: str = Field(index=True, max_length=32)
    # Equal to group_hash while the incident is open, NULL once resolved: a unique
    # index on it lets the database itself refuse a second open incident per group.
    open_group_hash: str | None = Field(default=None, unique=True, max_length=32)
    title: str
    state: str = Field(index=True, max_length=16)
    tier: str = Field(max_length=16)
    route: str
    team: str | None = None
    runbook: str | None = None
    channel: str | None = None
    model: str | None = Field(default=None, index=True)
    version: str | None = None
    environment: str | None = None
    severity: str | None = None
    source: str
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    silence_id: int | None = None
    paged: bool = False
    triggered_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = Field(default=None, index=True)
    resolved_by: str | None = None
    reopen_count: int = 0
    alert_count: int = 0
    last_alert_at: datetime
    slack_channel_id: str | None = None
    slack_ts: str | None = None
    escalated_team: str | None = None  # L2: the model-owning team brought in
    escalated_at: datetime | None = None
    escalated_by: str | None = None
    escalation_paged: bool = False  # the team was paged (its dedup_key is key + "-l2")


class AlertOccurrence(SQLModel, table=True):
    """One distinct alert (by fingerprint) within an incident; repeats bump `repeats`."""

    __table_args__ = (UniqueConstraint("incident_id", "fingerprint"),
                      # Retention finds old occurrences by it; never updated, so a
                      # repeat's update stays a heap-only (HOT) one on PostgreSQL.
                      Index("ix_alertoccurrence_first_seen_at", "first_seen_at"))

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id")
    fingerprint: str = Field(max_length=128)
    status: str = Field(max_length=16)
    source: str
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    annotations: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    first_seen_at: datetime
    last_seen_at: datetime
    repeats: int = 0


class TimelineEntry(SQLModel, table=True):
    __table_args__ = (Index("ix_timeline_incident_at", "incident_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id")
    at: datetime
    actor: str
    kind: str = Field(max_length=32)
    detail: str


class Delivery(SQLModel, table=True):
    """An owed message to PagerDuty or Slack, written in the transaction that owes it."""

    __table_args__ = (
        Index("ix_delivery_order", "incident_id", "target", "state", "id"),
        Index("ix_delivery_queue", "state", "target", "id", "next_attempt_at"),
        # Only the pending rows, oldest first per target: what /metrics and the
        # undelivered-page watch read, without touching the sent history.
        Index("ix_delivery_pending", "target", "created_at",
              postgresql_where=text("state = 'pending'"), sqlite_where=text("state = 'pending'")),
        Index("ix_delivery_created_at", "created_at"),  # retention
    )

    id: int | None = Field(default=None, primary_key=True)
    # NULL for messages that belong to no incident (silence ended, shift handoff).
    incident_id: int | None = Field(default=None, foreign_key="incident.id")
    target: str = Field(max_length=16)
    action: str = Field(max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="pending", max_length=16)  # pending | sent | failed
    attempts: int = 0
    created_at: datetime
    next_attempt_at: datetime
    lease_until: datetime | None = None
    sent_at: datetime | None = None
    last_error: str | None = None
    alerted_at: datetime | None = None  # a page: the last "PAGE NOT DELIVERED" about it
    # When first leased for sending: a Slack post attempted before may be in Slack
    # already, unrecorded, and is looked for before it is posted again.
    first_attempt_at: datetime | None = None


class Silence(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    matchers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    starts_at: datetime
    ends_at: datetime = Field(index=True)
    created_by: str
    comment: str = ""
    created_at: datetime


class WebhookReceipt(SQLModel, table=True):
    """A PagerDuty webhook already applied: PagerDuty delivers at least once."""

    id: str = Field(primary_key=True, max_length=200)
    received_at: datetime = Field(index=True)  # retention


class RunbookRun(SQLModel, table=True):
    """One run of a runbook: automatic diagnostics, a manual run or a rollback.

    Written `pending` in the transaction that asks for it, so a crash between the
    asking and the running loses nothing: a worker leases it and runs it.
    """

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int | None = Field(default=None, foreign_key="incident.id", index=True)
    runbook: str
    purpose: str = Field(max_length=16)  # diagnostics | manual | rollback
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16)
    requested_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_until: datetime | None = None
    slack_ts: str | None = None  # the thread reply that shows its progress
    # A run asked for from Slack: where its result is answered (the request's
    # response_url while Slack takes it, then an ephemeral message in the channel).
    answer_url: str | None = None
    answer_channel: str | None = None


class StepResult(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("run_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runbookrun.id")
    position: int
    name: str
    kind: str = Field(max_length=16)
    status: str = Field(max_length=16)
    started_at: datetime = Field(index=True)  # retention
    duration_s: float
    output: str
    values: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class RollbackLock(SQLModel, table=True):
    """One rollback at a time per model: the row exists while one runs."""

    model: str = Field(primary_key=True)
    run_id: int
    taken_by: str
    taken_at: datetime


class RollbackConfirmation(SQLModel, table=True):
    """A previewed rollback awaiting Confirm: the button carries only this row's id, so
    what runs is what the bot showed, to whom, until `expires_at`, once."""

    id: str = Field(primary_key=True, max_length=64)  # unguessable
    model: str
    alias: str
    from_version: str
    to_version: str
    runbook: str
    incident_id: int | None = None
    environment: str = ""
    previewed_by: str
    created_at: datetime
    expires_at: datetime = Field(index=True)
    used_at: datetime | None = None


class DriftCounter(SQLModel, table=True):
    """A detector's model (or one of its features) in drift: its ModelDrift alert fires.
    `clean_batches` counts the clean batches since the last drifting one; at the routing
    file's drift_resolve_after the alert resolves and the row is deleted."""

    key: str = Field(primary_key=True, max_length=64)  # domain.drift.counter_key
    detector: str
    model: str
    feature: str = ""
    clean_batches: int = 0
    drifting_since: datetime
    updated_at: datetime


class ConsoleLink(SQLModel, table=True):
    """A one-time sign-in link to the web console. Only the SHA-256 of its token is kept,
    so the table cannot sign anyone in; `used_at` is set once, by the sign-in POST."""

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64)  # the Slack user the session will be for
    created_by: str  # slack:U… or cli:$USER
    created_at: datetime
    expires_at: datetime = Field(index=True)
    used_at: datetime | None = None


class Pulse(SQLModel, table=True):
    """One satisfaction pulse posted in Slack. `key` names the cron occurrence it answers,
    so a timer fired twice (at a leader takeover) opens one pulse. Open until the next
    one opens."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=64)
    channel: str
    opened_at: datetime = Field(index=True)
    closed_at: datetime | None = None


class PulseAnswer(SQLModel, table=True):
    """One person's answer to one pulse; clicking again changes it (upsert on the pair)."""

    __table_args__ = (UniqueConstraint("pulse_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    pulse_id: int = Field(foreign_key="pulse.id")
    user_id: str = Field(max_length=32)  # the Slack user ID who clicked
    score: int  # 1..5, checked before it is stored (domain.pulse)
    comment: str = Field(default="", max_length=1000)
    answered_at: datetime


class ModelChange(SQLModel, table=True):
    """A registry alias moved (MLflow webhook, the bot's poll, or the bot's own rollback).

    Stored once however it was learnt: the (model, alias) record in ModelAlias is
    moved compare-and-set in the same transaction, and the unique key below backs it up.
    `to_version` is NULL when the alias was deleted; `from_version` NULL when the bot
    did not know what the alias served before."""

    __table_args__ = (UniqueConstraint("model", "alias", "to_version", "moved_at",
                                       name="uq_modelchange_move"),
                      Index("ix_modelchange_model_moved_at", "model", "moved_at"),
                      Index("ix_modelchange_moved_at", "moved_at"))

    id: int | None = Field(default=None, primary_key=True)
    model: str
    alias: str
    from_version: str | None = None
    to_version: str | None = None
    moved_at: datetime
    author: str | None = None  # the new version's user_id, where the registry has one
    source: str = Field(max_length=16)  # webhook | poll: how the bot learnt of it
    recorded_at: datetime


class ModelAlias(SQLModel, table=True):
    """The bot's own record of what a model's alias serves (MLflow keeps no history):
    where a change's from-version comes from. `version` NULL: the alias is not set."""

    model: str = Field(primary_key=True)
    alias: str = Field(primary_key=True)
    version: str | None = None
    observed_at: datetime
