"""docs/intake.md's templates for /webhooks/generic are bodies the bot takes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bot.domain.alert import AlertStatus
from bot.intake import generic

DOC = (Path(__file__).resolve().parents[2] / "docs" / "intake.md").read_text()
TEMPLATES = DOC[DOC.index("## Templates for ML monitors"):]
BLOCKS = re.findall(r"```json\n(.*?)```", TEMPLATES, re.DOTALL)


def test_the_templates_section_has_the_datadog_and_the_whylabs_arize_bodies():
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("block", BLOCKS)
def test_each_template_filled_in_is_a_firing_generic_alert_with_its_own_fingerprint(block):
    filled = re.sub(r"\$[A-Z_]+", "x1", block)  # Datadog's variables, given values
    [alert] = generic.parse(json.loads(filled))
    assert alert.status is AlertStatus.FIRING
    assert alert.fingerprint == json.loads(filled)["fingerprint"]
