"""Rate limits, intake's load average and retry delays, as pure arithmetic over a `now`
(monotonic seconds) the caller passes."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace


class TokenBucket:
    """Allows `per_minute` events in any minute, in bursts of up to `burst` (default
    `per_minute`).

    Keeps the outbox under PagerDuty's Events API limit (about 120 events a minute
    per integration key; beyond it events are refused with 429), and Slack
    deliveries to a trickle while intake is saturated.
    """

    def __init__(self, per_minute: int, now: float, burst: int | None = None) -> None:
        self.capacity = float(burst if burst is not None else per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token; returns 0 when allowed, else the seconds until one is free."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def available(self, now: float) -> int:
        """Whole tokens that could be taken now, without taking them."""
        return int(min(self.capacity, self.tokens + (now - self.updated) * self.rate))


@dataclass(frozen=True)
class LoadAverage:
    """The share of the last `window` seconds or so during which something was busy (0 to 1),
    decaying exponentially. Immutable, so that a holder replaces it whole and other
    threads read a consistent value."""

    value: float = 0.0
    updated: float = 0.0  # when `value` was last folded in
    window: float = 1.0  # time constant, seconds

    def at(self, now: float) -> float:
        return self.value * math.exp(-(now - self.updated) / self.window)

    def busy(self, since: float, now: float) -> LoadAverage:
        """Folds in that it was busy from `since` until `now` (idle before, back to `updated`)."""
        elapsed = max(now - self.updated, 1e-6)
        weight = math.exp(-elapsed / self.window)
        share = min(1.0, (now - since) / elapsed)
        return replace(self, value=self.value * weight + (1 - weight) * share, updated=now)


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniform in [half, all] of min(cap, base·2^(attempt-1))."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling * (0.5 + 0.5 * (rng or random).random())
