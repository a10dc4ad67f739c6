"""Risk attributes reported to the relying party (docs/protocol.md §6.2).

The full set is computed and stored with every operation result; what the relying party
sees is filtered by the application's ``enabledRiskData`` snapshot. Decisions never read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keybound.protocol import HwKeyClientStatus, HwKeyServerResult, RiskAttribute

#: hwKeyAttestation of a registration with nothing recorded (§6.5)
NOT_PROVIDED = {RiskAttribute.HW_KEY_ATTESTATION.value: "NOT_PROVIDED"}

#: the attributes that say what key attestation established (§6.5), carried by a signed
#: result whatever enabledRiskData says (docs/signed-results.md)
ATTESTATION_ATTRIBUTES = frozenset(
    {
        RiskAttribute.HW_KEY_ATTESTATION.value,
        RiskAttribute.HW_KEY_SECURITY_LEVEL.value,
        RiskAttribute.HW_KEY_PROVISIONING_METHOD.value,
        RiskAttribute.HW_KEY_REVOCATION_LIST_AGE.value,
    }
)


def risk_data(
    *,
    client_status: HwKeyClientStatus,
    server_result: HwKeyServerResult,
    platform: str,
    os_version: str,
    overlap: bool = False,
    attestation: Mapping[str, Any] = NOT_PROVIDED,
    hw_key_clone_suspected: bool = False,
) -> dict[str, Any]:
    """``attestation``: hwKeyAttestation and the details a verified attestation gave
    (server.core.attestation.AttestationOutcome.risk)."""
    return {
        RiskAttribute.HW_KEY_CLIENT_STATUS.value: client_status.value,
        RiskAttribute.HW_KEY_SERVER_RESULT.value: server_result.value,
        # a suspected clone never reaches this far: its operation fails with
        # software_key_cloned and its risk data says True (services.authentication)
        RiskAttribute.SOFTWARE_KEY_CLONE_SUSPECTED.value: False,
        RiskAttribute.SOFTWARE_KEY_OVERLAP.value: overlap,
        RiskAttribute.DEVICE_PLATFORM.value: platform,
        RiskAttribute.DEVICE_OS_VERSION.value: os_version,
        **attestation,
        RiskAttribute.HW_KEY_CLONE_SUSPECTED.value: hw_key_clone_suspected,
    }
