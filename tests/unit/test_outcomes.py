"""One Outcome enum carries every outcome's exit code; the docs and --help say the same codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from support import ROOT

from remediate.outcomes import SEVERITY, Outcome, worst_exit

pytestmark = pytest.mark.unit

README = ROOT / "README.md"


def test_an_outcome_is_its_text_and_carries_its_exit_code() -> None:
    assert Outcome.FIXED == "fixed" and json.dumps([Outcome.ROLLED_BACK]) == '["rolled-back"]'
    assert (Outcome.ROLLED_BACK.exit_code, Outcome.APPLIED_UNVERIFIED.exit_code) == (4, 7)
    assert Outcome.parse("restored") is Outcome.RESTORED
    assert Outcome.parse("something a host never says") is Outcome.FAILED  # unknown is never success


def test_every_exit_code_an_outcome_carries_is_documented_in_the_readme_and_in_help() -> None:
    table = dict(re.findall(r"^\| (\d) \| ([a-z ,]+)", README.read_text(), re.M))
    helped = subprocess.run([sys.executable, "-m", "remediate.cli", "--help"], capture_output=True, text=True).stdout
    for outcome in Outcome:
        assert str(outcome.exit_code) in table, f"{outcome}: exit {outcome.exit_code} is not in README's table"
        assert re.search(rf"^  {outcome.exit_code}  ", helped, re.M), f"exit {outcome.exit_code} is not in --help"
    assert set(SEVERITY) == {o.exit_code for o in Outcome} | {2}


def test_a_fleet_exits_with_its_worst_host() -> None:
    assert worst_exit([Outcome.FIXED.exit_code, Outcome.APPLIED_UNVERIFIED.exit_code]) == 7
    assert worst_exit([7, 3]) == 3 and worst_exit([3, 4, 6]) == 6 and worst_exit([6, 1]) == 1
    assert worst_exit([]) == 0 and worst_exit([99]) == 1
