"""The pure decision table (docs/protocol.md §6.1), checked against DESIGN.md's table."""

from __future__ import annotations

import itertools

import pytest

from keybound.protocol import HwKeyServerResult as R
from keybound.protocol import HwKeyValidationStrategy as S
from keybound.server.core.strategy import DECISIONS, decide

# Transcribed from ../shared/DESIGN.md "Hardware-key validation strategy"
DESIGN_TABLE = """
VALID              pass pass pass
INVALID            fail pass fail
MISSING            fail pass fail
NO_KEY_REGISTERED  pass pass fail
"""


def _expected() -> dict[tuple[S, R], bool]:
    table = {}
    for line in DESIGN_TABLE.strip().splitlines():
        result, *cells = line.split()
        for strategy, cell in zip((S.SUPPORTED, S.RISK_PARAMS, S.REQUIRED), cells, strict=True):
            table[(strategy, R(result))] = cell == "pass"
    return table


def test_table_is_complete_and_matches_design() -> None:
    assert set(DECISIONS) == set(itertools.product(S, R))
    assert _expected() == DECISIONS


@pytest.mark.parametrize(("strategy", "result"), list(itertools.product(S, R)))
def test_decide(strategy: S, result: R) -> None:
    assert decide(strategy, result) is _expected()[(strategy, result)]


def test_required_if_supported_is_supported() -> None:
    assert S.parse("REQUIRED_IF_SUPPORTED") is S.SUPPORTED
    with pytest.raises(ValueError):
        S.parse("OPTIONAL")
