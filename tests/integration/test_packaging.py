"""The package as a wheel installs it: built from the sources alone, it imports nothing of the
test suite, only the demo command imports examples/ (once it found a checkout), its CLI
starts from a directory outside the checkout, and `oncall-bot demo` says in one line that
the demo needs a checkout.

Builds the wheel with pip in a copy of the sources, so that a stale build/ of the checkout
cannot leak into it, and without build isolation: the build backend (setuptools and wheel,
in the test extra) comes from this environment, so the test reaches no package index."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(ROOT / "bot", source / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("oncall_bot-*.whl")
    return wheel


def imported(path: str, code: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(code, filename=path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_wheel_imports_nothing_of_the_checkout_and_its_demo_asks_for_one(tmp_path: Path):
    wheel = build_wheel(tmp_path)
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        assert all(name.startswith(("bot/", "oncall_bot-")) for name in files), files
        imports = {name: imported(name, archive.read(name).decode()) for name in files if name.endswith(".py")}

        def importers(top: str) -> dict[str, list[str]]:
            return {name: sorted(m for m in modules if m.split(".")[0] == top)
                    for name, modules in imports.items() if any(m.split(".")[0] == top for m in modules)}

        assert importers("tests") == {}
        assert importers("examples") == {"bot/cli.py": ["examples.demo.narrate"]}
        archive.extractall(installed)
    assert (installed / "bot" / "default_routing.yaml").is_file()
    assert any((installed / "bot" / "migrations" / "versions").glob("*.py"))
    # The web console's templates and stylesheet (templates/**/* in package-data).
    console = installed / "bot" / "templates" / "console"
    assert {"base.html", "incidents.html", "incident.html", "scorecard.html",
            "console.css"} <= {path.name for path in console.iterdir()}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "ONCALL_"))}
    env["PYTHONPATH"] = str(installed)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=60)

    where = subprocess.run([sys.executable, "-c", "import bot.cli; print(bot.cli.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(installed / "bot" / "cli.py"), where.stdout + where.stderr

    helped = cli("--help")
    assert helped.returncode == 0, helped.stderr
    assert "demo" in helped.stdout and "serve" in helped.stdout

    demo = cli("demo")
    assert demo.returncode != 0
    assert demo.stdout == "" and len(demo.stderr.splitlines()) == 1, demo.stderr
    assert "checkout" in demo.stderr and "Traceback" not in demo.stderr
