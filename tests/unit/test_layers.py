"""The layers, enforced by walking the imports (README "Architecture"): the domain
decides and does no I/O; the edges (web/, slack_app/, timers) translate and leave
sessions, SQL and the store to the use cases; no module grows past ~400 lines.

Each rule is also run over a synthetic package that breaks it, so a checker that
stopped seeing breaches would fail here rather than pass quietly.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[2] / "bot"

# Libraries that talk to the outside world (network, database, processes).
IO = ("httpx", "sqlmodel", "sqlalchemy", "slack_sdk", "slack_bolt", "pagerduty", "aiohttp",
      "requests", "socket", "subprocess", "anyio", "apscheduler", "alembic", "prometheus_client")
# What an edge must leave to the use cases.
PERSISTENCE = ("sqlalchemy", "sqlmodel", "bot.store", "bot.db", "bot.models", "bot.pipeline",
               "bot.silences", "bot.reports", "bot.usecases.actions")
EDGES = ("web", "slack_app", "timers.py")
MAX_LINES = 400


@dataclass(frozen=True)
class Breach:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"bot/{self.module}:{self.line}: {self.what}"


def _modules(root: Path, under: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for part in under:
        path = root / part
        found += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return found


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import, relative ones resolved against the package;
    `from a import b` gives both `a.b` (b may be a module) and `a`, at most one per line
    counting once (see `_first`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["bot", *path.relative_to(root).parent.parts]
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level + 1], base]).rstrip(".")
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            names.append((node.lineno, base))
    return names


def _first(breaches: list[Breach]) -> list[Breach]:
    """One breach per module and line."""
    seen: set[tuple[str, int]] = set()
    return [b for b in breaches if (b.module, b.line) not in seen
            and not seen.add((b.module, b.line))]  # type: ignore[func-returns-value]


def _within(name: str, prefixes: tuple[str, ...]) -> str | None:
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


def domain_breaches(root: Path) -> list[Breach]:
    """The domain imports no I/O library, nothing of the bot outside the domain, and
    reads no environment variable."""
    breaches = []
    for path in _modules(root, ("domain",)):
        module = str(path.relative_to(root))
        for line, name in _imports(path, root):
            if hit := _within(name, IO):
                breaches.append(Breach(module, line, f"imports {hit} (I/O)"))
            elif name.startswith("bot.") and not _within(name, ("bot.domain",)):
                breaches.append(Breach(module, line, f"imports {name} (outside the domain)"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                breaches.append(Breach(module, node.lineno, f"reads os.{node.attr}"))
    return _first(breaches)


def edge_breaches(root: Path) -> list[Breach]:
    """Edges import no database library, nor the store or what writes through it; they
    open no session and run no transaction (`transact`)."""
    breaches = []
    for path in _modules(root, EDGES):
        module = str(path.relative_to(root))
        for line, name in _imports(path, root):
            if hit := _within(name, PERSISTENCE):
                breaches.append(Breach(module, line, f"imports {hit} (the use cases' job)"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "transact":
                breaches.append(Breach(module, node.lineno, "runs a transaction (.transact)"))
            if isinstance(node, ast.Name) and node.id == "Session":
                breaches.append(Breach(module, node.lineno, "handles a Session"))
    return _first(breaches)


def long_modules(root: Path, limit: int = MAX_LINES) -> list[Breach]:
    return [Breach(str(path.relative_to(root)), lines, f"{lines} lines (over {limit})")
            for path in sorted(root.rglob("*.py"))
            if (lines := len(path.read_text().splitlines())) > limit]


def test_the_domain_does_no_io():
    assert [str(b) for b in domain_breaches(BOT)] == []


def test_edges_only_translate():
    assert [str(b) for b in edge_breaches(BOT)] == []


def test_no_module_is_over_400_lines():
    assert [str(b) for b in long_modules(BOT)] == []


def test_the_checks_see_the_bot_itself():
    assert len(_modules(BOT, ("domain",))) >= 10
    assert {p.name for p in _modules(BOT, EDGES)} >= {"alerts.py", "commands.py", "timers.py"}


@pytest.mark.parametrize(("where", "source", "what"), [
    ("domain/bad.py", "import httpx\n", "imports httpx"),
    ("domain/bad.py", "from sqlalchemy.orm import Session\n", "imports sqlalchemy"),
    ("domain/bad.py", "import slack_sdk.web\n", "imports slack_sdk"),
    ("domain/bad.py", "from bot.store import owe\n", "imports bot.store"),
    ("domain/bad.py", "from ..store import owe\n", "imports bot.store"),
    ("domain/bad.py", "import os\nKEY = os.environ['X']\n", "reads os.environ"),
    ("domain/bad.py", "import os\nKEY = os.getenv('X')\n", "reads os.getenv"),
    ("domain/sub/bad.py", "def f():\n    import subprocess\n", "imports subprocess"),
])
def test_a_domain_that_does_io_is_caught(tmp_path, where, source, what):
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "domain" / "ok.py").write_text("from bot.domain.messages import md\nimport re\n")
    (tmp_path / where).write_text(source)
    breaches = domain_breaches(tmp_path)
    assert [b.module for b in breaches] == [where]
    assert what in breaches[0].what


@pytest.mark.parametrize(("where", "source", "what"), [
    ("web/bad.py", "from sqlalchemy.exc import SQLAlchemyError\n", "imports sqlalchemy"),
    ("web/bad.py", "from sqlmodel import select\n", "imports sqlmodel"),
    ("slack_app/bad.py", "from bot import store\n", "imports bot.store"),
    ("slack_app/bad.py", "from bot.store.reads import timeline\n", "imports bot.store"),
    ("slack_app/bad.py", "from ..store import timeline\n", "imports bot.store"),
    ("slack_app/bad.py", "import bot.store.incidents\n", "imports bot.store"),
    ("timers.py", "from bot.pipeline import Pipeline\n", "imports bot.pipeline"),
    ("web/bad.py", "async def f(p):\n    await p.transact(lambda s, n: 1)\n", "transaction"),
    ("slack_app/bad.py", "def f(s: 'Session'):\n    return Session\n", "Session"),
])
def test_an_edge_that_persists_is_caught(tmp_path, where, source, what):
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    for edge in ("web", "slack_app"):
        (tmp_path / edge).mkdir(exist_ok=True)
        (tmp_path / edge / "ok.py").write_text("from bot.usecases import UseCases\n")
    (tmp_path / where).write_text(source)
    breaches = edge_breaches(tmp_path)
    assert [b.module for b in breaches] == [where]
    assert what in breaches[0].what


def test_a_long_module_is_caught(tmp_path):
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert [b.module for b in long_modules(tmp_path)] == ["pkg/long.py"]
