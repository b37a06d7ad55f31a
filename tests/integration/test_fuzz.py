"""Fuzz the webhooks: mutated bodies never get a 5xx, and the bot stays healthy.

Bodies are mutations (from a fixed seed) of the bundled examples and of a signed
PagerDuty webhook: byte flips, truncation, other encodings, wrong types in every
field, tricky strings (NUL, lone surrogates, huge, out-of-range timestamps), deep
nesting, huge numbers. PagerDuty bodies are signed with the configured secret so
they get past the signature check. `FUZZ_BODIES` sets how many are sent (default
3000, a quick run; `FUZZ_BODIES=10000` is the issue's full size).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import BotProcess, example
from tests.standins.signing import pagerduty_headers, pagerduty_webhook

FUZZ_BODIES = int(os.environ.get("FUZZ_BODIES", "3000"))
SEED = 20261130
PD_SECRET = "pagerduty-webhook-secret-for-fuzzing"
OCCURRED = "2026-11-30T09:00:00.000Z"

WRONG_TYPES: list[Any] = [None, 0, -1, 2**70, 1.5, True, "", "x", [], [1, "a"], {}, {"a": None}]
TRICKY_STRINGS = [
    "", " ", "\u0000", "a\u0000b", "\ud800", "x\udfffy", "\ud83d", "\ufeff", "😀" * 50,
    "<!channel> <https://evil.example|x>", "x" * 100_000, "é" * 70_000,
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-02-30T10:00:00Z",
    "2026-05-04T09:12:31.123456789123Z", "0000-01-01T00:00:00Z", "2026-05-04t09:12:31z",
    "firing", "resolved", "4", "1", "incident.resolved", "incident.acknowledged",
    "critical", "P" * 300, "%s%n{0}", "../../etc/passwd", "' OR 1=1 --",
]


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside `value` (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _replace(doc: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(doc))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = new
    return copy


def _rename(doc: Any, path: tuple, new_key: str) -> Any:
    """Rename the key at the end of `path` (a dict entry) to `new_key`."""
    copy = json.loads(json.dumps(doc))
    node = copy
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict):
        node[new_key] = node.pop(path[-1])
    return copy


PLACEHOLDER = "__fuzz_placeholder__"


def _dump(doc: Any, rng: random.Random) -> bytes:
    """Serialise as senders might: ASCII-escaped, or raw UTF-8 (lone surrogates as
    their raw bytes), now and then UTF-16."""
    roll = rng.random()
    if roll < 0.6:
        return json.dumps(doc).encode()
    text = json.dumps(doc, ensure_ascii=False)
    if roll < 0.95:
        return text.encode("utf-8", "surrogatepass")
    return text.encode("utf-16", "surrogatepass")


class Mutator:
    def __init__(self, seeds: list[tuple[str, dict]], rng: random.Random) -> None:
        self.seeds = seeds
        self.rng = rng

    def systematic(self) -> list[tuple[str, str, Any]]:
        """Every field of every seed, given every wrong type: (endpoint, what, document)."""
        out = []
        for endpoint, doc in self.seeds:
            for path in _paths(doc):
                for wrong in WRONG_TYPES:
                    out.append((endpoint, f"type {path}={wrong!r:.20}", _replace(doc, path,
                                                                                   wrong)))
        self.rng.shuffle(out)
        return out

    def random(self) -> tuple[str, str, bytes]:
        rng = self.rng
        endpoint, doc = rng.choice(self.seeds)
        if endpoint == "pagerduty" and rng.random() < 0.5:  # not a redelivery: applied anew
            doc = _replace(doc, ("event", "id"), f"fuzz-{rng.randrange(10**9)}")
        if rng.random() < 0.1:  # the right body to the wrong endpoint
            endpoint = rng.choice([e for e, _ in self.seeds])
        paths = list(_paths(doc))
        kind = rng.choice(["flip", "truncate", "tricky", "tricky_key", "deep", "number",
                           "drop", "duplicate", "stack"])
        if kind == "stack":  # several value mutations at once
            for _ in range(rng.randint(2, 6)):
                doc = _replace(doc, rng.choice(list(_paths(doc))),
                               rng.choice(TRICKY_STRINGS + WRONG_TYPES))
            return endpoint, kind, _dump(doc, rng)
        if kind in ("flip", "truncate"):
            body = bytearray(_dump(doc, rng))
            if kind == "flip":
                for _ in range(rng.randint(1, 8)):
                    body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            else:
                del body[rng.randrange(len(body)):]
            return endpoint, kind, bytes(body)
        path = rng.choice(paths)
        if kind == "tricky":
            return endpoint, f"{kind} {path}", _dump(_replace(doc, path,
                                                              rng.choice(TRICKY_STRINGS)), rng)
        if kind == "tricky_key" and path:
            return endpoint, f"{kind} {path}", _dump(_rename(doc, path,
                                                             rng.choice(TRICKY_STRINGS)), rng)
        if kind == "deep":
            depth = rng.choice([10, 63, 64, 65, 500, 5_000, 100_000])
            opening, closing = rng.choice([("[", "]"), ('{"a":', "}")])
            text = json.dumps(_replace(doc, path, PLACEHOLDER))
            nested = opening * depth + "1" + closing * depth
            return endpoint, f"{kind} {depth} at {path}", text.replace(
                json.dumps(PLACEHOLDER), nested).encode()
        if kind == "number":
            number = rng.choice(["1" * 5000, "1e999", "-1e999", "NaN", "Infinity",
                                 "0." + "0" * 5000 + "1", "-0"])
            text = json.dumps(_replace(doc, path, PLACEHOLDER))
            return endpoint, f"{kind} {number:.10} at {path}", text.replace(
                json.dumps(PLACEHOLDER), number).encode()
        if kind == "drop" and path:
            copy = json.loads(json.dumps(doc))
            node = copy
            for part in path[:-1]:
                node = node[part]
            del node[path[-1]]
            return endpoint, f"{kind} {path}", _dump(copy, rng)
        # duplicate keys: the last one wins in Python, the first in some decoders
        text = json.dumps(doc)
        return endpoint, "duplicate", (text[:-1] + ', "version": "4", "alerts": []}').encode()

    def bodies(self, count: int) -> Iterator[tuple[str, str, bytes]]:
        """`count` bodies: systematic type swaps and random mutations, alternating."""
        systematic = iter(self.systematic())
        for index in range(count):
            chosen = next(systematic, None) if index % 2 == 0 else None
            if chosen is not None:
                endpoint, what, doc = chosen
                yield endpoint, what, _dump(doc, self.rng)
            else:
                yield self.random()


@pytest.fixture
def fuzz_bot(bot_env, tmp_path: Path):
    env = {**bot_env, "PAGERDUTY_WEBHOOK_SECRET": PD_SECRET, "PAGERDUTY_EVENTS_PER_MINUTE": "0"}
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=bot_env["ALERT_WEBHOOK_TOKEN"])
    bot.start()
    yield bot
    bot.stop()


def test_mutated_webhook_bodies_never_get_a_5xx(fuzz_bot, pagerduty, canary):
    bot = fuzz_bot
    assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
    ((key,),) = bot.rows("SELECT key FROM incident")
    seeds = [
        ("alertmanager", example("alertmanager-firing.json")),
        ("alertmanager", example("alertmanager-resolved.json")),
        ("grafana", example("grafana-firing.json")),
        ("generic", example("generic-firing.json")),
        ("generic", {"alerts": [example("generic-firing.json")]}),
        ("pagerduty", pagerduty_webhook("incident.resolved", key, "resolved", event_id="E1",
                                        occurred_at=OCCURRED, created_at=OCCURRED)),
        ("pagerduty", pagerduty_webhook("incident.acknowledged", key, "acknowledged",
                                        event_id="E2", occurred_at=OCCURRED,
                                        created_at=OCCURRED)),
    ]
    failures, statuses = [], {}
    for endpoint, what, body in Mutator(seeds, random.Random(SEED)).bodies(FUZZ_BODIES):
        if endpoint == "pagerduty":
            headers = pagerduty_headers(PD_SECRET, body)
        else:
            headers = {"Authorization": f"Bearer {bot.token}",
                       "Content-Type": "application/json"}
        try:
            response = bot.http.post(f"/webhooks/{endpoint}", content=body, headers=headers)
        except httpx.TransportError:
            # A body refused before it was read whole ends its connection; a request
            # that raced that close on the same connection goes again, once.
            response = bot.http.post(f"/webhooks/{endpoint}", content=body, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {endpoint} {what}: {body[:300]!r}")
    tail = "\n".join(bot.log().splitlines()[-30:])
    assert not failures, (f"{len(failures)} of {FUZZ_BODIES} bodies got a 5xx "
                          f"({statuses}):\n" + "\n".join(failures[:10]) + f"\n--- log ---\n{tail}")
    assert bot.http.get("/healthz").status_code == 200
    assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
    assert set(statuses) <= {202, 400, 401, 413, 422}, statuses
    assert pagerduty.violations == [] and canary.requests == []
