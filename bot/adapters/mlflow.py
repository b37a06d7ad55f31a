"""The MLflow model registry over its REST API: the bot's one client for it (rollbacks,
model changes, `mlflow subscribe`), built once in create_app with the base URL
(MLFLOW_TRACKING_URI), a timeout and the bot's TLS trust (ONCALL_CA_BUNDLE).

Runbook steps do not use it: their fetches go through the run's guarded client."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from bot.clock import Clock, utcnow
from bot.runbooks.registry import API, ModelRegistry, RegistryError


class MlflowRegistry:
    """Implements ports.ModelRegistry; raises RegistryError. Close with `close()`."""

    def __init__(self, base_url: str, *, ssl_context: ssl.SSLContext, timeout: float,
                 clock: Clock = utcnow) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.AsyncClient(timeout=timeout, verify=ssl_context)
        self._registry = ModelRegistry(self.client, self.base_url, clock)

    async def close(self) -> None:
        await self.client.aclose()

    async def serving_version(self, model: str, alias: str) -> str | None:
        try:
            reply = await self._registry.registered_model(model)
        except RegistryError as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return None
            raise
        return next((str(a["version"]) for a in reply.get("aliases", [])
                     if a.get("alias") == alias), None)

    async def version_author(self, model: str, version: str) -> str | None:
        found = await self._registry.model_version(model, version)
        return str(found.get("user_id") or "") or None

    async def what_changed(self, model: str, alias: str) -> dict[str, Any]:
        return await self._registry.what_changed(model, alias)

    async def alias_version(self, model: str, alias: str) -> dict[str, Any] | None:
        return await self._registry.alias_version(model, alias)

    async def webhooks(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            reply = await self._call("GET", "webhooks", params={"page_token": token} if token else None)
            found += reply.get("webhooks", [])
            token = reply.get("next_page_token")
            if not token:
                return found

    async def create_webhook(self, *, name: str, url: str, events: list[tuple[str, str]],
                             secret: str) -> dict[str, Any]:
        # The create API takes the proto enum names (upper case); deliveries say them in
        # lower case. Lower case here makes MLflow 3.17 answer 500.
        body = {"name": name, "url": url, "secret": secret, "events": [
            {"entity": entity.upper(), "action": action.upper()} for entity, action in events]}
        return (await self._call("POST", "webhooks", body=body))["webhook"]

    async def _call(self, method: str, endpoint: str, *, params: dict | None = None,
                    body: dict | None = None) -> dict[str, Any]:
        url = self.base_url + API + endpoint
        try:
            response = await self.client.request(method, url, params=params, json=body)
        except httpx.HTTPError as exc:
            raise RegistryError(f"MLflow at {self.base_url} unreachable: "
                                f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise RegistryError(f"MLflow {method} {endpoint} answered {response.status_code} "
                                f"{response.text[:300]}")
        return response.json() if response.content else {}
