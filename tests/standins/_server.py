"""Shared machinery: a threaded stdlib HTTP(S) server, request recording, faults.

A stand-in subclasses :class:`StandIn` and implements :meth:`StandIn.route`,
which returns a :class:`Reply`.  The base class records every request, applies
injected faults before routing (so a failed call never changes state), and
runs the server on a daemon thread.
"""

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request as received: ``name`` is the API method or route it hit."""

    name: str
    http_method: str
    path: str
    query: dict  # name -> list of values
    headers: dict  # lower-cased names
    body: object  # parsed JSON / form dict, or None
    raw: bytes
    time: float = field(default_factory=time.time)
    status: int | None = None  # HTTP status answered
    response: object = None  # JSON body answered


@dataclass
class Reply:
    status: int
    body: object  # JSON-serialisable
    headers: dict = field(default_factory=dict)
    failed: bool = False  # log under failed_requests (e.g. rate limited)


@dataclass
class _Fault:
    match: str | None
    status: int
    times: int
    retry_after: int | None
    hang: float | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, on the per-connection thread, so a
        # misbehaving client cannot stall the accept loop.
        # (socketserver closes the raw socket, which wrap_socket detached, so
        # the TLS socket is closed here.)
        if self.ssl_context is None:
            return super().finish_request(request, client_address)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request, client_address):
        pass  # clients hanging up mid-request (e.g. on timeout) are expected


class StandIn:
    """Base for the stand-ins: lifecycle, recording and fault injection.

    Attributes (read them under no lock only after the calls you care about
    have returned):

    * ``requests`` -- every request that was answered normally, in order.
    * ``failed_requests`` -- requests answered by an injected fault, an
      outage (:meth:`down`) or a rate limit; they never change state.
    * ``violations`` -- strings describing requests that broke the API's
      documented format; tests assert ``violations == []``.
    """

    scheme = "http"

    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        self.lock = threading.RLock()
        self._idle = threading.Condition(self.lock)
        self._in_flight = 0
        self.requests: list[Request] = []
        self.failed_requests: list[Request] = []
        self.violations: list[str] = []
        self._faults: list[_Fault] = []
        self._down = False
        self._ssl_context = ssl_context
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self):
        """Bind 127.0.0.1 on a free port and serve on a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.ssl_context = self._ssl_context
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=type(self).__name__,
            daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (e.g. a ``hang`` finished)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    # -- fault injection -------------------------------------------------
    def _add_fault(self, match, status, times, retry_after, hang):
        with self.lock:
            self._faults.append(_Fault(match, status, times, retry_after, hang))

    def down(self, status: int = 503):
        """Answer every request with HTTP ``status`` (503 by default) until :meth:`up`."""
        with self.lock:
            self._down = status

    def up(self):
        with self.lock:
            self._down = False

    def _take_fault(self, name: str) -> _Fault | None:
        with self.lock:
            if self._down:
                return _Fault(None, self._down, 1, None, None)
            for fault in self._faults:
                if fault.match is None or self.fault_matches(fault.match, name):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- hooks for subclasses ---------------------------------------------
    def route_name(self, http_method: str, path: str) -> str:
        """Name recorded for a request (the API method or the path)."""
        return path

    def fault_matches(self, match: str, name: str) -> bool:
        return name == match

    def fault_reply(self, fault: _Fault, req: Request) -> Reply:
        raise NotImplementedError

    def route(self, req: Request) -> Reply:
        raise NotImplementedError

    def violation(self, req: Request, message: str):
        """Record that ``req`` broke the documented API format."""
        with self.lock:
            self.violations.append(f"{req.http_method} {req.name}: {message}")

    # -- request handling --------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler):
        with self._idle:
            self._in_flight += 1
        try:
            self._answer(h)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _answer(self, h: BaseHTTPRequestHandler):
        url = urlsplit(h.path)
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in h.headers.items()}
        req = Request(
            name=self.route_name(h.command, url.path),
            http_method=h.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers=headers,
            body=_parse_body(headers.get("content-type", ""), raw),
            raw=raw,
        )
        fault = self._take_fault(req.name)
        if fault is not None and fault.hang is not None:
            time.sleep(fault.hang)  # slow server: then answer normally
            fault = None
        if fault is not None:
            reply = self.fault_reply(fault, req)
            if fault.retry_after is not None:
                reply.headers["Retry-After"] = str(fault.retry_after)
        with self.lock:  # one request at a time reads or changes state
            if fault is None:
                try:
                    reply = self.route(req)
                except Exception as exc:  # a stand-in bug: make it visible
                    self.violation(req, f"stand-in crashed: {exc!r}")
                    reply = Reply(500, {"error": f"stand-in crashed: {exc!r}"})
            payload = json.dumps(reply.body).encode()  # snapshot of live state
            req.status, req.response = reply.status, json.loads(payload)
            (self.failed_requests if fault or reply.failed else self.requests).append(req)
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json; charset=utf-8")
            h.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(payload)
        except OSError:
            pass  # the client gave up (timeout); the request is still recorded

    def _handler_class(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                standin._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, *args):
                pass

        return Handler


def _parse_body(content_type: str, raw: bytes):
    """Parse a JSON or form-encoded body; ``None`` when empty or unparseable."""
    if not raw:
        return None
    try:
        if content_type.startswith("application/json"):
            return json.loads(raw)
        if content_type.startswith("application/x-www-form-urlencoded"):
            return {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
    except (ValueError, UnicodeDecodeError):
        pass
    return None
