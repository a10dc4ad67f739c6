"""`keybound demo`, the README's main job, run as a user runs it: its table must show the
decision table's outcomes with the attestation beside them, over the secure channel, with a
TPM-backed device."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.swtpm
@pytest.mark.server
def test_demo_prints_the_decisions() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keybound.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "HPKE-sealed" in out
    # CI installs swtpm (with swtpm-tools), tpm2-pytss and certtool: the TPM attests
    assert "TPM 2.0 (a private swtpm, EK certificates from swtpm's local CA)" in out

    def row(strategy: str, device: str, step: str) -> list[str]:
        for line in out.splitlines():
            cells = [c.strip() for c in line.split("|")]
            if cells[:3] == [strategy, device, step]:
                return cells[3:]
        raise AssertionError(f"no row {strategy} / {device} / {step}:\n{out}")

    phone = "Android 14, secure element"
    corrupted = "authenticate, corrupted hw signature"
    assert row("SUPPORTED", phone, corrupted) == [
        "OK",
        "INVALID",
        "VERIFIED",
        "FAIL (hardware_key_invalid)",
    ]
    assert row("RISK_PARAMS", phone, corrupted) == ["OK", "INVALID", "VERIFIED", "PASS"]
    assert row("REQUIRED", phone, "authenticate, hw key lost") == [
        "KEY_UNAVAILABLE",
        "MISSING",
        "VERIFIED",
        "FAIL (hardware_key_required)",
    ]
    old = "Android 5, software keys only"
    assert row("SUPPORTED", old, "authenticate") == [
        "NOT_SUPPORTED",
        "NO_KEY_REGISTERED",
        "NOT_PROVIDED",
        "PASS",
    ]
    assert row("REQUIRED", old, "activate") == [
        "NOT_SUPPORTED",
        "NO_KEY_REGISTERED",
        "NOT_PROVIDED",
        "FAIL (hardware_key_required)",
    ]
    tpm = "Linux, TPM 2.0 (swtpm)"
    for strategy in ("SUPPORTED", "RISK_PARAMS", "REQUIRED"):
        assert row(strategy, tpm, "authenticate") == ["OK", "VALID", "VERIFIED", "PASS"]
    # attestation REQUIRED: only attested hardware keys activate (docs/protocol.md §6.1)
    required = "attestation REQUIRED"
    assert row(required, phone, "activate") == ["OK", "VALID", "VERIFIED", "PASS"]
    assert row(required, "Android 14, bootloader unlocked", "activate") == [
        "OK",
        "VALID",
        "FAILED_BOOTLOADER_UNLOCKED",
        "FAIL (attestation_invalid)",
    ]
    assert row(required, old, "activate") == [
        "NOT_SUPPORTED",
        "NO_KEY_REGISTERED",
        "NOT_PROVIDED",
        "FAIL (attestation_required)",
    ]
    assert row(required, tpm, "authenticate") == ["OK", "VALID", "VERIFIED", "PASS"]
    assert "released 'receipt #4711'" in out
    assert "activated by typing the fallback" in out  # the table's devices scanned the link
    # the relying party verifies each signed result against the JWKS URL, and its hash claim
    # against its own copy of what the user saw
    assert "signed result verified (ES256" in out
    assert "preOperationContextHash matches" in out and "dataHash matches" in out
    assert "DOES NOT MATCH" not in out
