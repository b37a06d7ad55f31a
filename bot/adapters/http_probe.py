"""The HTTP probe: the one HTTP client of runbook runs. It fetches only from allowed hosts,
never from link-local or cloud-metadata addresses, and never reads more than a capped answer.

`HttpProbe` is built once in create_app, with the shared TLS trust (the usual CAs plus
ONCALL_CA_BUNDLE) and a default timeout; each run fetches through `probe.within(policy)`.

Alert labels and annotations are written by whoever reaches the alert webhook, and a
runbook may turn them into URLs. So every fetch of a run (http steps, Prometheus
queries, wait_until polls, MLflow registry calls) goes through it, and it:

- allows a host only when the run's `HostPolicy` does: the host and port of PROMETHEUS_URL,
  MLFLOW_TRACKING_URI and of URLs written literally in the runbook, and hosts matching
  RUNBOOK_HTTP_ALLOWED_HOSTS (`host` for any port, `host:port`, `*.suffix`);
- resolves the name once, refuses it if any address is link-local or cloud metadata
  (even when a pattern allows the host), and connects to an address it checked: the
  URL is rewritten to that IP, with the Host header and TLS SNI/verification kept to
  the name, so a second DNS answer (rebinding) is never asked for;
- follows redirects itself (at most `MAX_REDIRECTS`), checking every hop the same way;
- streams the answer and stops at `MAX_BYTES`; compressed answers are refused, so the
  cap is on what is held in memory. Proxies from the environment are not used (a
  proxy would resolve the name again), and no connection is kept alive (each request
  connects to the address it checked).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bot.ports import Answer, FetchError, FetchRefused

ALLOW_VARIABLE = "RUNBOOK_HTTP_ALLOWED_HOSTS"
MAX_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = (301, 302, 303, 307, 308)
# Never fetched, whatever the allowlist says: where clouds serve instance credentials.
_REFUSED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16",       # IPv4 link-local: AWS, GCP, Azure, OCI metadata at 169.254.169.254
    "fe80::/10",            # IPv6 link-local
    "fd00:ec2::254/128",    # AWS metadata over IPv6
    "100.100.100.200/32",   # Alibaba Cloud metadata
))
_REFUSED_NAMES = frozenset({"metadata.google.internal", "metadata", "metadata.goog"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (blocking: run it in a thread)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refused_address(text: str) -> str | None:
    """Why `text` (an IP address) is never fetched, or None. IPv4-mapped, IPv4-compatible
    and NAT64 forms of IPv6 are judged by the IPv4 address they carry."""
    address = _ip(text)
    if address is None:
        return None
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and int(address) >> 32 == 0 and int(address) > 1:
        candidates.append(ipaddress.IPv4Address(int(address)))  # ::169.254.169.254 (IPv4-compatible)
    for candidate in candidates:
        if any(candidate.version == n.version and candidate in n for n in _REFUSED_NETWORKS):
            return f"{text} is a link-local or cloud-metadata address"
    return None


def _normal_host(host: str) -> str:
    host = host.strip().strip("[]").rstrip(".").lower()
    address = _ip(host)
    return str(address) if address is not None else host


def origin_of(url: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL, port defaulted by scheme; None for anything else."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return None
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        return None
    return _normal_host(parsed.host), parsed.port or _DEFAULT_PORTS[parsed.scheme]


def parse_patterns(text: str) -> tuple[tuple[str, int | None], ...]:
    """RUNBOOK_HTTP_ALLOWED_HOSTS: comma-separated `host`, `host:port`, `*.suffix[:port]`,
    `[ipv6]:port`. Raises ValueError naming a bad entry (a bare `*` allows everything,
    so it is refused)."""
    patterns = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        host, port = entry, None
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{entry!r}: expected [ipv6]:port")
                port = rest[1:]
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        wildcard = host.startswith("*.")
        name = host[2:] if wildcard else host
        if not name or "*" in name or "/" in name or "@" in name or " " in name:
            raise ValueError(f"{entry!r}: expected host, host:port or *.domain (a lone * is not allowed)")
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{entry!r}: port must be a number from 1 to 65535")
        patterns.append((("*." if wildcard else "") + _normal_host(name), None if port is None else int(port)))
    return tuple(patterns)


@dataclass(frozen=True)
class HostPolicy:
    """Which (host, port) a run may fetch: exact origins from URLs, plus patterns."""

    origins: frozenset[tuple[str, int]] = frozenset()
    patterns: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def build(cls, urls: Iterable[str | None], patterns: str | Iterable[str] = "") -> HostPolicy:
        text = patterns if isinstance(patterns, str) else ",".join(patterns)
        origins = frozenset(o for o in (origin_of(u) for u in urls if u) if o is not None)
        return cls(origins=origins, patterns=parse_patterns(text))

    def allows(self, host: str, port: int) -> bool:
        host = _normal_host(host)
        if (host, port) in self.origins:
            return True
        for pattern, pattern_port in self.patterns:
            if pattern_port is not None and pattern_port != port:
                continue
            if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
            if pattern == host:
                return True
        return False


class HttpProbe:
    """The guarded HTTP client of runbook runs, shared by every run of the process (one
    httpx client, safe for concurrent use on one event loop). Close it with `aclose` (or
    use it as `async with`).

    `ssl_context`: the trust for https (create_app passes the usual CAs plus
    ONCALL_CA_BUNDLE); `timeout`: for a request that gives none (a step gives its budget).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = DEFAULT_TIMEOUT, resolver: Resolver = system_resolver,
                 max_bytes: int = MAX_BYTES, max_redirects: int = MAX_REDIRECTS) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._client = httpx.AsyncClient(
            verify=ssl_context if ssl_context is not None else True, trust_env=False,
            follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0))

    async def __aenter__(self) -> HttpProbe:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def within(self, policy: HostPolicy) -> Fetcher:
        """The guarded client of one run: this probe, fetching only what `policy` allows."""
        return Fetcher(self, policy)

    async def request(self, method: str, url: str, *, policy: HostPolicy, params: Any = None,
                      json: Any = None, headers: dict[str, str] | None = None,
                      timeout: float | None = None) -> Answer:
        """Raises FetchRefused (nothing sent), FetchError (answer not read), or httpx's own
        errors (unreachable, timeouts)."""
        timeout = self.timeout if timeout is None else timeout
        sent_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
        sent_headers["Accept-Encoding"] = "identity"
        request = self._client.build_request(method, url, params=params, json=json, headers=sent_headers)
        for _hop in range(self.max_redirects + 1):
            addresses = await self.check(request.url, policy)
            response = await self._send(request, addresses, timeout)
            try:
                location = response.headers.get("location")
                if response.status_code not in _REDIRECTS or not location:
                    return await self._read(response, request.url)
            finally:
                await response.aclose()
            request = self._redirected(request, response.status_code, location)
        raise FetchError(f"{method} {url}: more than {self.max_redirects} redirects")

    async def check(self, url: httpx.URL, policy: HostPolicy) -> list[str]:
        """The addresses `url` may be fetched at; raises FetchRefused naming why not."""
        if url.scheme not in _DEFAULT_PORTS or not url.host:
            raise FetchRefused(f"{url}: only http:// and https:// URLs are fetched")
        host, port = _normal_host(url.host), url.port or _DEFAULT_PORTS[url.scheme]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if host in _REFUSED_NAMES or refused_address(host):
            raise FetchRefused(f"{where}: link-local and cloud-metadata addresses are never fetched "
                               f"({ALLOW_VARIABLE} cannot allow them)")
        if not policy.allows(host, port):
            raise FetchRefused(f"{where}: host not allowed: set {ALLOW_VARIABLE} "
                               "(see Runbooks in the README)")
        if _ip(host) is not None:
            return [host]
        try:
            addresses = list(await asyncio.to_thread(self.resolver, host, port))
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpx.ConnectError(f"cannot resolve {host}: no address")
        for address in addresses:
            if refused_address(address):
                raise FetchRefused(f"{where} resolves to {address}: link-local and cloud-metadata "
                                   f"addresses are never fetched ({ALLOW_VARIABLE} cannot allow them)")
        return addresses

    async def _send(self, request: httpx.Request, addresses: list[str],
                    timeout: float | None) -> httpx.Response:
        """Send to the first checked address that accepts a connection."""
        url, host = request.url, request.url.host
        headers = httpx.Headers(request.headers)
        headers["Host"] = url.netloc.decode("ascii")
        failure: Exception | None = None
        for address in addresses:
            pinned = self._client.build_request(
                request.method, url.copy_with(host=address), headers=headers, content=request.content,
                timeout=timeout, extensions={"sni_hostname": host})
            try:
                return await self._client.send(pinned, stream=True)
            except httpx.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _read(self, response: httpx.Response, url: httpx.URL) -> Answer:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise FetchError(f"{url}: answered with content-encoding {encoding!r}; only uncompressed "
                             "answers are read")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(f"{url}: the answer is larger than {self.max_bytes} bytes; not read")
        kept = bytearray()
        async for chunk in response.aiter_raw():
            kept += chunk
            if len(kept) > self.max_bytes:
                raise FetchError(f"{url}: the answer is larger than {self.max_bytes} bytes; not read")
        return Answer(response.status_code, response.headers, bytes(kept), str(url))

    def _redirected(self, request: httpx.Request, status: int, location: str) -> httpx.Request:
        """The next request of a redirect, as browsers and httpx make it: 303 (and 301/302
        after a POST) become a GET without a body; credentials stay with their origin."""
        try:
            target = request.url.join(location)
        except httpx.InvalidURL:
            raise FetchRefused(f"{request.url}: redirected to an invalid URL") from None
        method = request.method
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method = "GET"
        headers = httpx.Headers({k: v for k, v in request.headers.items() if k.lower() != "host"})
        content = request.content if method == request.method else b""
        if method != request.method:
            headers.pop("content-length", None)
            headers.pop("content-type", None)
        if origin_of(str(target)) != origin_of(str(request.url)):
            headers.pop("authorization", None)
            headers.pop("cookie", None)
        return self._client.build_request(method, target, headers=headers, content=content)


@dataclass(frozen=True, slots=True)
class Fetcher:
    """Implements `Fetch`: one run's guarded client, `probe` within `policy`."""

    probe: HttpProbe
    policy: HostPolicy

    async def request(self, method: str, url: str, *, params: Any = None, json: Any = None,
                      headers: dict[str, str] | None = None,
                      timeout: float | None = None) -> Answer:
        return await self.probe.request(method, url, policy=self.policy, params=params, json=json,
                                        headers=headers, timeout=timeout)
