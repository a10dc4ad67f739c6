"""The hardware-key validation strategy: a pure decision table (docs/protocol.md §6).

The software-key signature has already verified when this runs; the strategy only decides
what the hardware-key result adds. The client's reported status never changes the decision,
and neither does whether risk attributes are enabled.
"""

from __future__ import annotations

from keybound.errors import ErrorCode
from keybound.protocol import HwKeyServerResult as R
from keybound.protocol import HwKeyValidationStrategy as S

#: (strategy, server result) -> passes?  The whole table, as data.
DECISIONS: dict[tuple[S, R], bool] = {
    (S.SUPPORTED, R.VALID): True,
    (S.SUPPORTED, R.INVALID): False,
    (S.SUPPORTED, R.MISSING): False,
    (S.SUPPORTED, R.NO_KEY_REGISTERED): True,
    (S.RISK_PARAMS, R.VALID): True,
    (S.RISK_PARAMS, R.INVALID): True,
    (S.RISK_PARAMS, R.MISSING): True,
    (S.RISK_PARAMS, R.NO_KEY_REGISTERED): True,
    (S.REQUIRED, R.VALID): True,
    (S.REQUIRED, R.INVALID): False,
    (S.REQUIRED, R.MISSING): False,
    (S.REQUIRED, R.NO_KEY_REGISTERED): False,
}


def decide(strategy: S, server_result: R) -> bool:
    """Does an operation with this hardware-key result pass under this strategy?"""
    return DECISIONS[(strategy, server_result)]


#: hardware result -> the code a failed activation or authentication reports
HW_FAILURE_CODE: dict[R, ErrorCode] = {
    R.INVALID: ErrorCode.HARDWARE_KEY_INVALID,
    R.MISSING: ErrorCode.HARDWARE_KEY_REQUIRED,
    R.NO_KEY_REGISTERED: ErrorCode.HARDWARE_KEY_REQUIRED,
}
