"""`mlflow`: the model registry over MLflow's REST API: what the alias serves, what
changed, the recent versions, and moving the alias (which changes production)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from bot.runbooks.kinds.base import (
    LintFacts,
    Observation,
    Problem,
    Step,
    StepError,
    StepIO,
    StepSpec,
    Text,
    Value,
    as_text,
    rule,
)
from bot.runbooks.registry import AliasMoved, ModelRegistry, iso_from_millis

if TYPE_CHECKING:
    from bot.runbooks.context import RunContext

ACTIONS = {  # action -> fields it needs besides `model`
    "get_alias": (), "list_versions": (), "set_alias": ("version",), "what_changed": (),
}
DEFAULT_ALIAS = "champion"


class MlflowStep(StepSpec):
    kind: Literal["mlflow"]
    action: Annotated[str, rule(lambda v: v in ACTIONS, lambda v: f"must be one of {', '.join(ACTIONS)}, got {v!r}"),
                      Field(json_schema_extra={"enum": list(ACTIONS)})]
    model: Text
    alias: Text = None
    """Default champion."""
    version: Value = None
    """set_alias: the version the alias is to serve."""
    expect_version: Value = None
    """set_alias: move only while the alias still serves this version (re-read just before)."""
    max_results: Value = None
    """list_versions: how many (default 10)."""

    @model_validator(mode="after")
    def _fields_the_action_needs(self) -> MlflowStep:
        for needed in ACTIONS[self.action]:
            if needed not in self.model_fields_set:
                raise Problem(f"required for mlflow action {self.action}", at=f".{needed}")
        return self

    @classmethod
    def lint(cls, raw: Mapping[str, Any], facts: LintFacts) -> Iterator[tuple[str, str]]:
        if raw.get("action") == "set_alias" and not facts.changes_production:
            yield ".action", "set_alias changes production: the runbook must declare changes_production: true"

    @classmethod
    def needs(cls, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return ("MLFLOW_TRACKING_URI",)

    @classmethod
    def prepare(cls, step: Step, spec: Mapping[str, Any], context: RunContext,
                template_context: Mapping[str, Any]) -> RegistryAction:
        if not context.mlflow_uri:
            raise StepError("no MLflow to ask: set MLFLOW_TRACKING_URI")
        version = spec.get("version")
        if spec["action"] == "set_alias" and (version is None or str(version).strip() in ("", "None")):
            raise StepError("version: no version to set the alias to")
        try:
            max_results = int(spec.get("max_results", 10))
        except (TypeError, ValueError):
            raise StepError(f"max_results: expected a number, got {spec.get('max_results')!r}") from None
        expected = spec.get("expect_version")
        return RegistryAction(base_url=context.mlflow_uri, action=spec["action"],
                              model=as_text(spec["model"], "model"),
                              alias=as_text(spec.get("alias") or DEFAULT_ALIAS, "alias"),
                              version=None if version is None else as_text(version, "version"),
                              max_results=max_results,
                              expected=None if expected is None or str(expected).strip() in ("", "None")
                              else as_text(expected, "expect_version"))


@dataclass(frozen=True, slots=True)
class RegistryAction:
    base_url: str
    action: str
    model: str
    alias: str
    version: str | None
    max_results: int
    expected: str | None = None  # set_alias: only from this version (re-read just before)

    def describe(self) -> str:
        target = f" to version {self.version}" if self.action == "set_alias" else ""
        if self.action == "set_alias" and self.expected is not None:
            target += f" if it still serves version {self.expected}"
        return f"MLflow {self.base_url}: {self.action} {self.model}@{self.alias}{target}"

    async def execute(self, io: StepIO, budget: float) -> Observation:
        registry = ModelRegistry(io.fetch, self.base_url, io.context.clock)
        name, alias = self.model, self.alias
        if self.action == "what_changed":
            # The bot's change records first (webhooks and polls: who, when, from what),
            # then the registry for what serves now.
            lookup = io.context.recorded_change
            recorded = await lookup(name, alias) if lookup is not None else None
            found = await registry.what_changed(name, alias)
            if recorded is not None and recorded.to_version == found["current_version"]:
                found.update(moved_at=recorded.moved_at.isoformat(), recorded_by=recorded.source,
                             moved_by=recorded.author)
                if recorded.from_version:
                    found.update(previous_version=recorded.from_version,
                                 previous_source=f"recorded change ({recorded.source})")
            return Observation("passed", _what_changed_text(found), found)
        if self.action == "get_alias":
            version = await registry.alias_version(name, alias)
            if version is None:
                return Observation("failed", f"{name} has no alias {alias!r}", {})
            values = _version_values(version)
            text = f"{name}@{alias} → v{values['version']} (created {values['created_at']}, " \
                   f"source {values['source']})"
            return Observation("passed", text, values)
        if self.action == "list_versions":
            versions = [_version_values(v) for v in await registry.versions(name, self.max_results)]
            for version in versions:
                run_id = version["run_id"]
                version["metrics"] = await registry.run_metrics(run_id) if run_id else {}
            lines = [f"v{v['version']}  created {v['created_at']}  tags {v['tags']}  metrics {v['metrics']}"
                     for v in versions]
            text = "\n".join(lines) or f"{name} has no versions"
            return Observation("passed", text, {"versions": versions})
        try:
            before = await registry.set_alias(name, alias, self.version or "",
                                              expected=self.expected)
        except AliasMoved as exc:
            return Observation("failed", str(exc), {"expected_version": self.expected})
        moved = f"v{before} → v{self.version}" if before != self.version else f"already v{self.version}"
        return Observation("passed", f"{name}@{alias}: {moved}",
                           {"previous_version": before, "version": self.version})


def _version_values(version: Mapping[str, Any]) -> dict[str, Any]:
    return {"version": version["version"], "created_at": iso_from_millis(version.get("creation_timestamp")),
            "run_id": version.get("run_id") or None, "source": version.get("source"),
            "status": version.get("status"), "description": version.get("description") or "",
            "tags": {t["key"]: t["value"] for t in version.get("tags", [])},
            "aliases": list(version.get("aliases", []))}


def _what_changed_text(found: Mapping[str, Any]) -> str:
    by = f" by {found['moved_by']}" if found.get("moved_by") else ""
    moved = (f"alias moved to it at {found['moved_at']}{by} (oncall-bot's change record, "
             f"by {found['recorded_by']})" if found.get("recorded_by") else
             f"alias moved to it at {found['moved_at']} by oncall-bot" if found["moved_by_bot"] else
             "when the alias moved is unknown: MLflow keeps no alias history and oncall-bot did not move it "
             f"(not before the version was created, {found['current_created_at']})")
    previous = (f"previous version: v{found['previous_version']} ({found['previous_source']})"
                if found["previous_version"] else "previous version: none")
    return (f"{found['model']}@{found['alias']} serves v{found['current_version']} "
            f"(created {found['current_created_at']}, run {found['current_run_id'] or '-'})\n"
            f"{moved}\n{previous}")
