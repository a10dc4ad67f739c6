"""The interface: the explicit registry, the one failure type, the boundary net."""

from __future__ import annotations

import datetime as dt

import pytest

from keybound.attestation import (
    REGISTRY,
    AndroidKeyVerifier,
    AppAttestVerifier,
    AttestationFailed,
    AttestationFormat,
    Reason,
    TpmVerifier,
    verifier_class,
)
from keybound.attestation.base import guarded, utc
from keybound.errors import ErrorCode, KeyboundError


def test_registry_is_an_explicit_allow_list() -> None:
    assert {
        "android-key": AndroidKeyVerifier,
        "apple-appattest": AppAttestVerifier,
        "tpm": TpmVerifier,
    } == REGISTRY
    for name, cls in REGISTRY.items():
        assert cls.format == AttestationFormat(name)
        assert verifier_class(name) is cls
    for unknown in ("packed", "none", "android-safetynet", "", None):
        with pytest.raises(AttestationFailed) as caught:
            verifier_class(unknown)  # type: ignore[arg-type]
        assert caught.value.reason is Reason.MALFORMED


def test_failure_carries_a_stable_code_and_reason() -> None:
    error = AttestationFailed(Reason.CERT_SUSPENDED, "serial abc")
    assert isinstance(error, KeyboundError)
    assert error.code is ErrorCode.ATTESTATION_INVALID and error.code.value == "attestation_invalid"
    assert error.reason is Reason.CERT_SUSPENDED and error.fields == {"reason": "CERT_SUSPENDED"}


def test_boundary_net_types_unexpected_exceptions() -> None:
    def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(AttestationFailed) as caught:
        guarded(buggy)
    assert caught.value.reason is Reason.INTERNAL_ERROR
    assert isinstance(caught.value.__cause__, KeyError)


def test_verification_time_must_be_aware() -> None:
    with pytest.raises(AttestationFailed):
        utc(dt.datetime(2025, 1, 1))
    assert utc(dt.datetime(2025, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))).hour == 0


def test_package_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, keybound.attestation; "
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'httpx', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
