"""The routing file: which tier, channel, team and runbook an alert gets.

A flat, ordered list of routes in the spirit of Alertmanager's routing tree:
the first route whose matchers all hold wins, and the last route must match
everything so that no alert is ever unrouted. The file is validated when it is
loaded; every error names the key that is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from bot.domain.drift import DEFAULT_RESOLVE_AFTER, DriftSource
from bot.domain.durations import parse_duration
from bot.domain.escalation import EscalationPolicy
from bot.domain.matchers import Matcher, MatcherError, MatchType, match_all

SUPPORTED_VERSIONS = (1,)
_LITERALS = re.compile(r"[A-Za-z0-9_.-]+(\|[A-Za-z0-9_.-]+)*")  # churn|fraud: names, not a pattern


class Tier(StrEnum):
    L0 = "L0"  # the bot handles it: record, post to Slack, run diagnostics; nobody woken
    L1 = "L1"  # the platform on-call engineer is paged
    RECORD = "record"  # recorded only: no Slack message, no page

    @property
    def pages(self) -> bool:
        return self is Tier.L1

    @property
    def posts(self) -> bool:
        return self is not Tier.RECORD


class RoutingError(ValueError):
    """The routing file is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    matchers: tuple[Matcher, ...]
    tier: Tier
    channel: str | None
    team: str | None
    runbook: str | None
    group_by: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return match_all(self.matchers, labels)


@dataclass(frozen=True, slots=True)
class Team:
    """A model-owning data-science team, reached on purpose for L2 escalation."""

    name: str
    slack_group: str | None = None  # Slack user group ID (S…), mentioned in the thread
    pagerduty_routing_key_env: str | None = None  # env var holding the team's Events API key


@dataclass(frozen=True, slots=True)
class Permissions:
    """Who may resolve L1 incidents, silence and escalate (besides whoever is on call)."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    on_call: bool = True


@dataclass(frozen=True, slots=True)
class ChannelSchedule:
    """A recurring channel post (shift handoff, weekly scorecard, satisfaction pulse):
    when (cron, in `timezone`) and where (default SLACK_ALERT_CHANNEL)."""

    cron: str
    timezone: str = "UTC"
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    routes: tuple[Route, ...]
    reopen_window: timedelta
    teams: Mapping[str, Team] = field(default_factory=dict)
    permissions: Permissions = Permissions()
    escalation: EscalationPolicy = EscalationPolicy()
    handoff: ChannelSchedule | None = None
    weekly_report: ChannelSchedule | None = None
    drift_resolve_after: int = DEFAULT_RESOLVE_AFTER
    drift_sources: tuple[DriftSource, ...] = ()
    pulse: ChannelSchedule | None = None
    # Model changes: how long after a serving-alias move an incident is said to follow
    # it, and which alias serves each model (default `serving_alias`, per model `models`).
    change_window: timedelta = timedelta(hours=2)
    serving_alias_default: str = "champion"
    model_aliases: Mapping[str, str] = field(default_factory=dict)

    def serving_alias(self, model: str) -> str:
        return self.model_aliases.get(model, self.serving_alias_default)

    def named_models(self) -> frozenset[str]:
        """Models the routes name literally (`model="churn"`, `model=~"churn|fraud"`) and
        those given under `models:`: the ones the bot watches from the start."""
        named = set(self.model_aliases)
        for route in self.routes:
            for matcher in route.matchers:
                if matcher.name != "model":
                    continue
                if matcher.type is MatchType.EQUAL:
                    named.add(matcher.value)
                elif matcher.type is MatchType.REGEX and _LITERALS.fullmatch(matcher.value):
                    named.update(matcher.value.split("|"))
        return frozenset(m for m in named if m)

    def route(self, labels: Mapping[str, str]) -> Route:
        """The first matching route; the validated last route matches everything."""
        for route in self.routes:
            if route.matches(labels):
                return route
        return self.routes[-1]

    def routing_key_variables(self) -> list[str]:
        """The environment variables the file names for PagerDuty integration keys: each
        team's pagerduty_routing_key_env, then escalation.l1_escalation_service_env."""
        named = [team.pagerduty_routing_key_env for team in self.teams.values()]
        named.append(self.escalation.l1_escalation_service_env)
        return list(dict.fromkeys(name for name in named if name))


def _duration(value: Any) -> timedelta:
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return parse_duration(str(value))


# Durations in the file are written like 90s, 15m or 2h (or seconds as a number); null
# turns an optional timer off.
Duration = Annotated[timedelta, BeforeValidator(_duration)]
OptionalDuration = Annotated[timedelta | None,
                             BeforeValidator(lambda v: None if v is None else _duration(v))]


class _RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    matchers: list[str] = []
    tier: Tier
    channel: str | None = None
    team: str | None = None
    runbook: str | None = None
    group_by: list[str] | None = None

    @field_validator("matchers")
    @classmethod
    def _parse_matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                Matcher.parse(text)
            except MatcherError as exc:
                raise ValueError(str(exc)) from None
        return value


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_by: list[str] = ["alertname", "model", "environment"]
    reopen_window: Duration = timedelta(hours=1)
    # A ModelDrift alert resolves after this many consecutive clean batches.
    drift_resolve_after: int = Field(default=DEFAULT_RESOLVE_AFTER, ge=1)
    # An incident opened within this long after its model's serving alias moved names the move.
    change_window: Duration = timedelta(hours=2)
    serving_alias: str = Field(default="champion", min_length=1)


class _ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    serving_alias: str = Field(min_length=1)

class _TeamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slack_group: str | None = Field(default=None, pattern=r"^S[A-Z0-9]+$")
    pagerduty_routing_key_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")


class _DriftSourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)  # a regular expression the whole event source matches
    labels: dict[str, str] = {}
    features: list[str] = []

    @field_validator("source")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class _PermissionsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[str] = []
    groups: list[str] = []
    on_call: bool = True


class _FlappingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=3, ge=2)
    window: Duration = timedelta(hours=1)


class _EscalationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    l1_ack_timeout: OptionalDuration = timedelta(minutes=15)
    l1_escalation_service_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    l0_promote_after: OptionalDuration = timedelta(minutes=30)
    flapping: _FlappingSpec = _FlappingSpec()
    ack_reminder_after: OptionalDuration = timedelta(hours=4)


class _ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str
    timezone: str = "UTC"
    channel: str | None = None

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a cron expression with five fields, e.g. '0 9 * * 1-5'")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class _RoutingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    defaults: _Defaults = _Defaults()
    teams: dict[str, _TeamSpec] = {}
    permissions: _PermissionsSpec = _PermissionsSpec()
    escalation: _EscalationSpec = _EscalationSpec()
    handoff: _ScheduleSpec | None = None
    weekly_report: _ScheduleSpec | None = None
    drift_sources: list[_DriftSourceSpec] = []
    pulse: _ScheduleSpec | None = None
    models: dict[str, _ModelSpec] = {}
    routes: list[_RouteSpec] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported version {value}; this bot reads {SUPPORTED_VERSIONS}")
        return value


def parse_routing(document: Any, *, source: str = "routing file") -> RoutingConfig:
    """Validate a decoded routing document and build the config."""
    try:
        spec = _RoutingSpec.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise RoutingError(f"{source}: {problems}") from None
    names = [r.name for r in spec.routes]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise RoutingError(f"{source}: routes: the name {duplicate!r} is used twice")
    if spec.routes[-1].matchers:
        raise RoutingError(
            f"{source}: routes[{len(spec.routes) - 1}] ({spec.routes[-1].name!r}): "
            "the last route is the default and must have no matchers"
        )
    for index, route in enumerate(spec.routes):
        if route.team is not None and route.team not in spec.teams:
            raise RoutingError(
                f"{source}: routes[{index}].team: {route.team!r} is not defined under teams"
            )
    routes = tuple(
        Route(
            name=r.name,
            matchers=tuple(Matcher.parse(m) for m in r.matchers),
            tier=r.tier,
            channel=r.channel,
            team=r.team,
            runbook=r.runbook,
            group_by=tuple(r.group_by if r.group_by is not None else spec.defaults.group_by),
        )
        for r in spec.routes
    )
    teams = {name: Team(name, t.slack_group, t.pagerduty_routing_key_env)
             for name, t in spec.teams.items()}
    permissions = Permissions(frozenset(spec.permissions.users),
                              frozenset(spec.permissions.groups), spec.permissions.on_call)
    esc = spec.escalation
    escalation = EscalationPolicy(
        l1_ack_timeout=esc.l1_ack_timeout, l1_escalation_service_env=esc.l1_escalation_service_env,
        l0_promote_after=esc.l0_promote_after, flapping_count=esc.flapping.count,
        flapping_window=esc.flapping.window, ack_reminder_after=esc.ack_reminder_after)
    def schedule(given: _ScheduleSpec | None) -> ChannelSchedule | None:
        return ChannelSchedule(given.cron, given.timezone, given.channel) if given else None

    return RoutingConfig(routes=routes, reopen_window=spec.defaults.reopen_window, teams=teams,
                         permissions=permissions, escalation=escalation,
                         handoff=schedule(spec.handoff), weekly_report=schedule(spec.weekly_report),
                         drift_resolve_after=spec.defaults.drift_resolve_after,
                         drift_sources=tuple(
                             DriftSource(re.compile(d.source), dict(d.labels), tuple(d.features))
                             for d in spec.drift_sources),
                         pulse=schedule(spec.pulse),
                         change_window=spec.defaults.change_window,
                         serving_alias_default=spec.defaults.serving_alias,
                         model_aliases={m: s.serving_alias for m, s in spec.models.items()})
