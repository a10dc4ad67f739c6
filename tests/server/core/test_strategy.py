"""The one decision table (docs/protocol.md §6.1): the code's table is the one in the docs,
complete, and its attestation-free part is DESIGN.md's table."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from keybound.errors import ErrorCode
from keybound.protocol import HwKeyServerResult as R
from keybound.protocol import HwKeyValidationStrategy as S
from keybound.server.core.strategy import DECISIONS, Column, Finding, column, decide, finding

DOCS = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

# Transcribed from ../shared/DESIGN.md "Hardware-key validation strategy"
DESIGN_TABLE = """
VALID              pass pass pass
INVALID            fail pass fail
MISSING            fail pass fail
NO_KEY_REGISTERED  pass pass fail
"""


def docs_table() -> dict[tuple[Column, Finding], ErrorCode | None]:
    """§6.1's table as written: header row of columns, one row per finding."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### §6.1") : text.index("### §6.2")]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = next(i for i, row in enumerate(rows) if row.startswith("| finding \\ column"))
    names = [cell.strip() for cell in rows[header].strip("|").split("|")[1:]]
    columns = [Column(re.sub(r"`| \(default\)", "", name)) for name in names]
    table: dict[tuple[Column, Finding], ErrorCode | None] = {}
    for row in rows[header + 1 : header + 1 + len(Finding)]:  # (the |---| line is not a row)
        label, *cells = (cell.strip() for cell in row.strip("|").split("|"))
        row_finding = Finding(label.replace("`", ""))
        for col, cell in zip(columns, cells, strict=True):
            code = re.match(r"fail `([a-z_]+)`", cell)
            assert code or cell.startswith("pass"), cell
            table[(col, row_finding)] = ErrorCode(code.group(1)) if code else None
    return table


def test_the_code_is_the_documented_table() -> None:
    assert set(DECISIONS) == set(itertools.product(Column, Finding))
    assert docs_table() == DECISIONS


def test_without_attestation_it_is_the_design_table() -> None:
    """An unattested key (every registration from before attestation) decides as before."""
    for line in DESIGN_TABLE.strip().splitlines():
        result, *cells = line.split()
        for strategy, cell in zip(S, cells, strict=True):
            for attestation in (None, "NOT_PROVIDED", "NOT_CHECKED"):
                passed = decide(strategy, finding(R(result), attestation)) is None
                assert passed is (cell == "pass"), (strategy, result, attestation)


@pytest.mark.parametrize(
    ("strategy", "result", "attestation"),
    list(itertools.product(S, R, ("VERIFIED", "FAILED_CHAIN_UNTRUSTED", None))),
)
def test_attestation_required_is_at_least_as_strict_as_every_strategy(
    strategy: S, result: R, attestation: str | None
) -> None:
    row = finding(result, attestation)
    if decide(strategy, row) is not None:
        assert decide(strategy, row, attestation_required=True) is not None


def test_findings_and_columns() -> None:
    assert finding(R.VALID, "VERIFIED") is Finding.VALID_ATTESTED
    assert finding(R.VALID, "FAILED_KEY_MISMATCH") is Finding.VALID_ATTESTATION_FAILED
    assert finding(R.VALID, "NOT_CHECKED") is Finding.VALID
    assert finding(R.INVALID, "VERIFIED") is Finding.INVALID  # a key that proved nothing
    assert column(S.RISK_PARAMS) is Column.RISK_PARAMS
    assert column(S.RISK_PARAMS, attestation_required=True) is Column.ATTESTATION_REQUIRED


def test_required_if_supported_is_supported() -> None:
    assert S.parse("REQUIRED_IF_SUPPORTED") is S.SUPPORTED
    with pytest.raises(ValueError):
        S.parse("OPTIONAL")
