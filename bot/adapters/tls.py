"""Outbound TLS trust: the usual CAs plus ONCALL_CA_BUNDLE (corporate proxies, test stand-ins)."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi


def client_ssl_context(extra_ca_bundle: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    if extra_ca_bundle is not None:
        context.load_verify_locations(cafile=str(extra_ca_bundle))
    return context
