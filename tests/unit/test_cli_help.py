"""Every subcommand and every argument of `oncall-bot` explains itself in --help."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from bot.cli import parser


def walk(command: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str | None]]:
    """(what, its help) for every subcommand and argument under `command`."""
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # one per subcommand, its aliases aside
                yield f"{path} {choice.dest}", choice.help
                yield from walk(action.choices[choice.dest], f"{path} {choice.dest}")
            continue
        yield f"{path} {'/'.join(action.option_strings) or action.dest}", action.help


def test_every_subcommand_and_argument_has_a_help_text():
    missing = [what for what, text in walk(parser(), "oncall-bot") if not (text or "").strip()]
    assert missing == []


def test_the_walk_sees_nested_subcommands_and_their_arguments():
    seen = dict(walk(parser(), "oncall-bot"))
    assert "oncall-bot incidents show" in seen and "oncall-bot incidents show id" in seen
    assert "oncall-bot silence add --for" in seen and "oncall-bot serve --port" in seen
