"""The loop the outbox dispatcher and the runbook worker share: claim as much work as
there are free slots, run each claimed item as a task, and once a claim finds less than
it could take, sleep until woken (something was just committed) or a poll period passes
(retries fall due, other replicas commit). A failed claim (database down) is logged and
tried again next round."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

from anyio import to_thread

log = logging.getLogger(__name__)
T = TypeVar("T")


async def claim_and_run(*, claim: Callable[[int], list[T]], handle: Callable[[T], Awaitable[None]],
                        in_flight: set[asyncio.Task[None]], concurrency: int, wake: asyncio.Event,
                        poll_seconds: float, what: str,
                        stopped: Callable[[], bool] = lambda: False) -> None:
    """Until cancelled, or `stopped()` once woken; then the items in flight are cancelled
    too. (`stopped` ends the loop for certain: a cancellation that arrives while a claim
    runs in its worker thread can be lost.)"""
    try:
        while not stopped():
            wake.clear()
            claimed: list[T] = []
            free = concurrency - len(in_flight)
            if free > 0:
                try:
                    claimed = await to_thread.run_sync(claim, free)
                except Exception:
                    log.exception("could not claim %s; retrying", what)
            for item in claimed:
                task = asyncio.create_task(handle(item))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if free <= 0 or len(claimed) < free:  # full, or nothing more is due: wait
                with suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=poll_seconds)
    finally:
        for task in list(in_flight):
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
