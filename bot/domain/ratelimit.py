"""Rate limits and retry delays, as pure arithmetic over a `now` the caller passes."""

from __future__ import annotations

import random


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


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniform in [half, all] of min(cap, base·2^(attempt-1))."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling * (0.5 + 0.5 * (rng or random).random())
