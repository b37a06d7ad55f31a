"""Reads the routing file (ONCALL_CONFIG) from disk; validation lives in domain.routing."""

from __future__ import annotations

from pathlib import Path

import yaml

from bot.domain.routing import RoutingConfig, RoutingError, parse_routing


def load_routing(path: Path) -> RoutingConfig:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RoutingError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RoutingError(f"{path}: not valid YAML: {exc}") from None
    return parse_routing(document, source=str(path))
