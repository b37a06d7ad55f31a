"""The bot as a real process (`oncall-bot serve`), and a direct view of its database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bot.db import Database

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `condition` until it returns something truthy; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


class BotProcess:
    """Starts, kills and restarts `oncall-bot serve` with a given environment."""

    def __init__(self, env: dict[str, str], *, log_path: Path, token: str | None) -> None:
        self.env = env
        self.log_path = log_path
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.db = Database(env["DATABASE_URL"])
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start(self) -> None:
        """Start and wait until healthy; a port taken between choosing and binding it
        (another process got there first) is retried on a new port."""
        for attempt in range(3):
            try:
                self._spawn()
                return
            except AssertionError:
                if "address already in use" not in self.log() or attempt == 2:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.http.close()
                self.http = httpx.Client(base_url=self.url, timeout=30)

    def _spawn(self) -> None:
        environment = {k: v for k, v in os.environ.items()
                       if not k.startswith(("SLACK_", "PAGERDUTY_", "ALERT_", "ONCALL_"))}
        environment.update(self.env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port",
             str(self.port)],
            env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_path.parent,
        )
        wait_for(self._healthy, timeout=60, what=f"the bot to start (log: {self.log_path})")

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the bot exited early:\n{self.log()}")
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as in a crash or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()
        self.db.dispose()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, source: str, body: Any, *, token: str | None = None,
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        sent = {"Authorization": f"Bearer {token or self.token}",
                "Content-Type": "application/json", **(headers or {})}
        content = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(f"/webhooks/{source}", content=content, headers=sent)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.db.reader.connect() as connection:
            return list(connection.execute(text(sql), params))

    def snapshot(self) -> dict[str, list[Any]]:
        """Every row of every table of the incident record, to prove nothing changed."""
        return {table: self.rows(f"SELECT * FROM {table} ORDER BY id")
                for table in ("incident", "alertoccurrence", "timelineentry", "delivery",
                              "silence")}

    def until(self, condition, *, timeout: float = 10.0, what: str = "condition"):
        """wait_for, with the end of the bot's log in the failure message."""
        try:
            return wait_for(condition, timeout=timeout, what=what)
        except AssertionError as exc:
            tail = "\n".join(self.log().splitlines()[-40:])
            raise AssertionError(f"{exc}\n--- bot log (last lines) ---\n{tail}") from None

    def outbox_settled(self) -> bool:
        return not self.rows("SELECT id FROM delivery WHERE state = 'pending'")


class LoadBalancer:
    """HAProxy (Debian's package) in front of bot replicas: round robin, health checks
    on /readyz, and a request a dead replica did not answer sent again to another one
    (`retries`, `option redispatch`, `retry-on`), as a deployment's balancer would."""

    def __init__(self, servers: list[str], *, directory: Path, threads: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "haproxy.cfg"
        self.log_path = directory / "haproxy.log"
        backends = "\n".join(
            f"    server bot{i} {address.removeprefix('http://')} check inter 300 fall 2 rise 1"
            for i, address in enumerate(servers))
        self.config.write_text(f"""global
    maxconn 1024
    nbthread {threads}
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503
frontend intake
    bind 127.0.0.1:{self.port}
    default_backend bots
backend bots
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{backends}
""")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._listening, timeout=10, what="haproxy to listen")

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"haproxy exited: {self.log_path.read_text(errors='replace')}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
