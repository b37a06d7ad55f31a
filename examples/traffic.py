"""Steady prediction traffic for examples/model_server.py, so the rates in Prometheus exist.

    python examples/traffic.py --url http://127.0.0.1:8000 --rate 20 --duration 600

Sends `--rate` requests a second (sequentially, paced against the clock) for at most
`--duration` seconds, then exits; Ctrl-C stops it sooner. Answers are not checked: the
model server counts its own successes and failures.
"""

from __future__ import annotations

import argparse
import json
import time
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen


def send(url: str, rate: float, duration: float) -> dict[str, int]:
    """Bounded by `duration`; returns counts by outcome."""
    body = json.dumps({"instances": [[12, 70.5, 1]]}).encode()
    counts = {"ok": 0, "failed": 0, "unreachable": 0}
    interval, started = 1.0 / rate, time.monotonic()
    sent = 0
    while (now := time.monotonic()) - started < duration:
        due = started + sent * interval
        if due > now:
            time.sleep(min(due - now, 1.0))
            continue
        sent += 1
        request = Request(f"{url.rstrip('/')}/predict", data=body, method="POST",
                          headers={"Content-Type": "application/json"})
        try:
            with urlopen(request, timeout=2) as response:  # noqa: S310
                response.read()
            counts["ok"] += 1
        except HTTPError as exc:
            exc.read()
            counts["failed"] += 1
        except (URLError, OSError):
            counts["unreachable"] += 1
            time.sleep(min(interval * 5, 1.0))
        if sent > rate * 2 and now - started > 2 and sent < (now - started) * rate - rate * 5:
            sent = int((now - started) * rate)  # fell far behind (slow server): do not burst
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds, then exit")
    args = parser.parse_args(argv)
    try:
        counts = send(args.url, args.rate, args.duration)
    except KeyboardInterrupt:
        return 0
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
