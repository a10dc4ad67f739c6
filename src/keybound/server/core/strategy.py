"""The hardware-key decision table: one table, pure data (docs/protocol.md §6.1).

The software-key signature has already verified when this runs; the table only decides what
the hardware key adds. A row is what the server found about the hardware key -- its result
(§6.1) and, for a key that proved possession, what its attestation said (§6.5); a column is
the application's strategy, or, at an activation on a platform whose attestation mode is
REQUIRED, that mode, which is stricter than every strategy. A cell is ``None`` (pass) or the
code the operation fails with. The client's reported status never changes the decision, and
neither does whether risk attributes are enabled. ``tests/server/core/test_strategy.py``
reads the table in docs/protocol.md and compares it with this one.
"""

from __future__ import annotations

from enum import StrEnum

from keybound.errors import ErrorCode
from keybound.protocol import HwKeyServerResult as R
from keybound.protocol import HwKeyValidationStrategy as S


class Finding(StrEnum):
    """A row: the hardware result, split by attestation where the key is VALID."""

    VALID_ATTESTED = "VALID, attested"  # hwKeyAttestation VERIFIED
    VALID = "VALID, not attested"  # NOT_PROVIDED or NOT_CHECKED
    VALID_ATTESTATION_FAILED = "VALID, attestation failed"  # FAILED_<reason>
    INVALID = "INVALID"
    MISSING = "MISSING"
    NO_KEY_REGISTERED = "NO_KEY_REGISTERED"


class Column(StrEnum):
    """A column: the strategy in force, or the platform's attestation mode REQUIRED."""

    SUPPORTED = S.SUPPORTED.value
    RISK_PARAMS = S.RISK_PARAMS.value
    REQUIRED = S.REQUIRED.value
    ATTESTATION_REQUIRED = "attestation REQUIRED"


_PASS = None
_INVALID = ErrorCode.HARDWARE_KEY_INVALID
_REQUIRED = ErrorCode.HARDWARE_KEY_REQUIRED
_ATTESTATION_INVALID = ErrorCode.ATTESTATION_INVALID
_ATTESTATION_REQUIRED = ErrorCode.ATTESTATION_REQUIRED

F, C = Finding, Column
#: (column, finding) -> None (pass) or the failure code.  The whole table, as data.
DECISIONS: dict[tuple[Column, Finding], ErrorCode | None] = {
    (C.SUPPORTED, F.VALID_ATTESTED): _PASS,
    (C.SUPPORTED, F.VALID): _PASS,
    (C.SUPPORTED, F.VALID_ATTESTATION_FAILED): _PASS,
    (C.SUPPORTED, F.INVALID): _INVALID,
    (C.SUPPORTED, F.MISSING): _REQUIRED,
    (C.SUPPORTED, F.NO_KEY_REGISTERED): _PASS,
    (C.RISK_PARAMS, F.VALID_ATTESTED): _PASS,
    (C.RISK_PARAMS, F.VALID): _PASS,
    (C.RISK_PARAMS, F.VALID_ATTESTATION_FAILED): _PASS,
    (C.RISK_PARAMS, F.INVALID): _PASS,
    (C.RISK_PARAMS, F.MISSING): _PASS,
    (C.RISK_PARAMS, F.NO_KEY_REGISTERED): _PASS,
    (C.REQUIRED, F.VALID_ATTESTED): _PASS,
    (C.REQUIRED, F.VALID): _PASS,
    # a hardware key whose attestation failed is not counted as hardware (§6.5)
    (C.REQUIRED, F.VALID_ATTESTATION_FAILED): _ATTESTATION_INVALID,
    (C.REQUIRED, F.INVALID): _INVALID,
    (C.REQUIRED, F.MISSING): _REQUIRED,
    (C.REQUIRED, F.NO_KEY_REGISTERED): _REQUIRED,
    # only a hardware key that proved possession and whose attestation verified passes
    (C.ATTESTATION_REQUIRED, F.VALID_ATTESTED): _PASS,
    (C.ATTESTATION_REQUIRED, F.VALID): _ATTESTATION_REQUIRED,
    (C.ATTESTATION_REQUIRED, F.VALID_ATTESTATION_FAILED): _ATTESTATION_INVALID,
    (C.ATTESTATION_REQUIRED, F.INVALID): _INVALID,
    (C.ATTESTATION_REQUIRED, F.MISSING): _REQUIRED,  # never at activation
    (C.ATTESTATION_REQUIRED, F.NO_KEY_REGISTERED): _ATTESTATION_REQUIRED,
}


_COLUMN_OF: dict[S, Column] = {strategy: Column(strategy.value) for strategy in S}
_FINDING_OF: dict[R, Finding] = {
    result: Finding(result.value) for result in R if result is not R.VALID
}


def column(strategy: S, *, attestation_required: bool = False) -> Column:
    """The column in force: the platform's attestation mode REQUIRED (at activation) is
    stricter than every strategy, so it replaces the strategy's column."""
    return Column.ATTESTATION_REQUIRED if attestation_required else _COLUMN_OF[strategy]


def finding(server_result: R, attestation: str | None) -> Finding:
    """The row for a hardware result and the key's ``hwKeyAttestation`` (None: nothing
    recorded, as for registrations from before attestation)."""
    if server_result is not R.VALID:
        return _FINDING_OF[server_result]
    if attestation == "VERIFIED":
        return Finding.VALID_ATTESTED
    if attestation is not None and attestation.startswith("FAILED_"):
        return Finding.VALID_ATTESTATION_FAILED
    return Finding.VALID


def decide(strategy: S, row: Finding, *, attestation_required: bool = False) -> ErrorCode | None:
    """None if an operation with this finding passes, else the code it fails with."""
    return DECISIONS[(column(strategy, attestation_required=attestation_required), row)]
