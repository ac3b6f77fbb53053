"""The docs state what the tests check: the bad-input table names every case the test runs."""

from __future__ import annotations

import re

from shared.settings import PROJECT_ROOT
from tests.integration.bad_input_cases import CASES

RELIABILITY = PROJECT_ROOT / "docs" / "reliability.md"


def test_the_bad_input_table_lists_every_case_with_its_outcome():
    rows = re.findall(r"^\| (\d+) \| `([a-z0-9-]+)` \| (.+?) \| (.+?) \|", RELIABILITY.read_text(), re.M)
    assert [r[1] for r in rows] == [c.id for c in CASES]
    assert len(rows) >= 25
    words = {
        "events": "converted and processed",
        "nothing": "no event",
        "refused": "refused",
        "deadletter": "deadletter",
    }
    for (_, case_id, what, outcome), case in zip(rows, CASES):
        assert what == case.what and words[case.outcome] in outcome, case_id
        if case.outcome == "deadletter":
            assert f"`{case.service}`" in outcome, case_id


def test_the_measured_figures_are_filled_in():
    text = RELIABILITY.read_text()
    assert not re.findall(r"^[A-Z]+_[A-Z]+$", text, re.M), "a placeholder line is left"
