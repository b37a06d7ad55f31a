"""The one source of `now` for code with I/O; pure code takes `now` as an argument.

`Clock` tells the time of day (for records); `Monotonic` measures intervals (rate limits,
the intake load average): `time.monotonic` in the bot, a function a test drives.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
Monotonic = Callable[[], float]


def utcnow() -> datetime:
    return datetime.now(UTC)
