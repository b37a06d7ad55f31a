"""The MLflow model registry over its REST API (`/api/2.0/mlflow/`), with httpx.

What MLflow records, checked against an MLflow 3.17 server: an alias is only a
(model, alias) -> version row. Moving it changes neither the registered model's
`last_updated_timestamp` nor the version's, and no history is kept. So
`set_alias` here also writes three tags on the registered model, and
`what_changed` reads them back:

- `oncall.<alias>.version`: the version this bot moved the alias to;
- `oncall.<alias>.previous_version`: the version it served before that move;
- `oncall.<alias>.moved_at`: when (ISO 8601, UTC).

They are trusted only while `oncall.<alias>.version` still equals the alias's
version: if anyone moved the alias some other way (the MLflow UI or client), the
move time is unknown and the previous version falls back to the highest existing
version number below the current one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from bot.adapters.http_probe import Fetcher

API = "/api/2.0/mlflow/"


class RegistryError(Exception):
    """MLflow refused a call or could not be reached; the message carries its error code."""


class AliasMoved(RegistryError):
    """The alias no longer serves the version a move was meant to start from."""


def tag_keys(alias: str) -> tuple[str, str, str]:
    """Tag names (version, previous_version, moved_at) that record the bot's moves of `alias`."""
    return (f"oncall.{alias}.version", f"oncall.{alias}.previous_version", f"oncall.{alias}.moved_at")


@dataclass(frozen=True, slots=True)
class ModelRegistry:
    """One MLflow tracking server. The caller owns (and closes) `client`: in runs, the
    run's guarded Fetcher, which answers `request` like httpx does."""

    client: httpx.AsyncClient | Fetcher
    base_url: str
    clock: Callable[[], datetime]

    async def _call(self, method: str, endpoint: str, *, params: dict | None = None,
                    body: dict | None = None) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + API + endpoint
        try:
            response = await self.client.request(method, url, params=params, json=body)
        except httpx.HTTPError as exc:
            raise RegistryError(f"MLflow at {self.base_url} unreachable: "
                                f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()
                detail = f"{error.get('error_code', '?')}: {error.get('message', '')}"
            except ValueError:
                detail = response.text[:200]
            raise RegistryError(f"MLflow {method} {endpoint} answered {response.status_code} {detail}")
        return response.json() if response.content else {}

    async def registered_model(self, name: str) -> dict[str, Any]:
        return (await self._call("GET", "registered-models/get", params={"name": name}))["registered_model"]

    async def alias_version(self, name: str, alias: str) -> dict[str, Any] | None:
        """The model version behind `alias`, or None when the model has no such alias."""
        model = await self.registered_model(name)
        version = next((a["version"] for a in model.get("aliases", []) if a["alias"] == alias), None)
        if version is None:
            return None
        return await self.model_version(name, version)

    async def model_version(self, name: str, version: str) -> dict[str, Any]:
        reply = await self._call("GET", "model-versions/get", params={"name": name, "version": str(version)})
        return reply["model_version"]

    async def versions(self, name: str, max_results: int = 10) -> list[dict[str, Any]]:
        """Newest first (by version number), at most `max_results`."""
        reply = await self._call("GET", "model-versions/search", params={
            "filter": f"name='{_quoted(name)}'", "order_by": "version_number DESC",
            "max_results": max_results})
        return reply.get("model_versions", [])

    async def run_metrics(self, run_id: str) -> dict[str, float]:
        """Latest value of each metric of the run that produced a version."""
        run = (await self._call("GET", "runs/get", params={"run_id": run_id}))["run"]
        return {m["key"]: m["value"] for m in run.get("data", {}).get("metrics", [])}

    async def set_alias(self, name: str, alias: str, version: str, *,
                        expected: str | None = None) -> str | None:
        """Point `alias` at `version` and record the move in tags; returns the version it
        served before (None if the alias was new). Moving it to where it already is
        changes nothing, so the recorded previous version survives a repeated rollback.

        MLflow has no compare-and-set: with `expected`, the alias is read again just
        before the write, and AliasMoved is raised, with nothing written, unless it
        still serves `expected`. A move by someone else in between remains possible."""
        await self.model_version(name, version)  # a missing version fails before anything moves
        aliases = (await self.registered_model(name)).get("aliases", [])
        before = next((a["version"] for a in aliases if a["alias"] == alias), None)
        if expected is not None and before != str(expected):
            raise AliasMoved(f"{name}@{alias} serves {'v' + before if before else 'no version'} "
                             f"now, not v{expected} as expected: the alias moved since the "
                             "preview, so it was left alone")
        if before == str(version):
            return before
        await self._call("POST", "registered-models/alias",
                         body={"name": name, "alias": alias, "version": str(version)})
        version_key, previous_key, moved_key = tag_keys(alias)
        tags = {version_key: str(version), previous_key: before or "", moved_key: self.clock().isoformat()}
        for key, value in tags.items():
            await self._call("POST", "registered-models/set-tag",
                             body={"name": name, "key": key, "value": value})
        return before

    async def what_changed(self, name: str, alias: str) -> dict[str, Any]:
        """The version serving `alias`, when the alias last moved (if known) and the version
        before it; see the module docstring for where each answer comes from."""
        model = await self.registered_model(name)
        tags = {t["key"]: t["value"] for t in model.get("tags", [])}
        current_version = next((a["version"] for a in model.get("aliases", []) if a["alias"] == alias), None)
        if current_version is None:
            aliases = ", ".join(a["alias"] for a in model.get("aliases", [])) or "none"
            raise RegistryError(f"model {name!r} has no alias {alias!r} (aliases: {aliases})")
        current = await self.model_version(name, current_version)
        version_key, previous_key, moved_key = tag_keys(alias)
        recorded = tags.get(version_key) == current_version
        previous = (tags.get(previous_key) or None) if recorded else None
        previous_source = "recorded by oncall-bot's set_alias" if previous else None
        if previous is None:
            lower = [v for v in await self.versions(name, max_results=1000)
                     if int(v["version"]) < int(current_version)]
            if lower:
                previous = lower[0]["version"]
                previous_source = "highest version below the current one (no recorded move)"
        return {
            "model": name,
            "alias": alias,
            "current_version": current_version,
            "current_created_at": iso_from_millis(current.get("creation_timestamp")),
            "current_run_id": current.get("run_id") or None,
            "current_source": current.get("source"),
            "current_tags": {t["key"]: t["value"] for t in current.get("tags", [])},
            "moved_at": tags.get(moved_key) if recorded else None,
            "moved_by_bot": recorded,
            "previous_version": previous,
            "previous_source": previous_source,
        }


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'")


def iso_from_millis(millis: Any) -> str | None:
    if not millis:
        return None
    return datetime.fromtimestamp(int(millis) / 1000, UTC).isoformat()
