"""Key attestation through the real server (docs/protocol.md §6.5): Android Key Attestation,
TPM credential activation + TPM2_Certify, and Apple App Attest (attestation at activation,
assertions as the hardware proof of every authentication), each under the modes DISABLED,
OPTIONAL and REQUIRED, with the attacks that must fail. Every request is sealed, as in
production; the evidence is built for each activation (tests/server/services/
attestation_devices.py), its roots trusted only through the operator's trust directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keybound import crypto
from keybound import protocol as p
from keybound.server.attestation_trust import AttestationTrust
from keybound.server.events.results import verify_result
from keybound.server.repositories import registrations as regs
from keybound.server.services import Keybound
from keybound.server.services.resultkeys import DEFAULT_ISSUER
from keybound.storage import tables as t
from tests.attestation import factory
from tests.conftest import FakeClock
from tests.helpers import RawDevice, RelyingParty, problem_code
from tests.server.services.attestation_devices import (
    ANDROID_POLICY,
    APPLE_POLICY,
    AndroidPlatform,
    AppAttestKey,
    ApplePlatform,
    SoftwareTpm,
    write_trust_dir,
)

ALL_RISK = [attribute.value for attribute in p.RiskAttribute]
Platform = p.Platform


@pytest.fixture(scope="module")
def android() -> AndroidPlatform:
    return AndroidPlatform()


@pytest.fixture(scope="module")
def apple() -> ApplePlatform:
    return ApplePlatform()


@pytest.fixture(scope="module")
def tpm() -> SoftwareTpm:
    return SoftwareTpm()


@pytest.fixture(scope="module")
def trust_dir(
    tmp_path_factory: pytest.TempPathFactory,
    android: AndroidPlatform,
    apple: ApplePlatform,
    tpm: SoftwareTpm,
) -> Path:
    return write_trust_dir(
        tmp_path_factory.mktemp("trust"),
        android=android.pki.root,
        apple=apple.root,
        tpm=tpm.manufacturer,
    )


@pytest.fixture
def revocation_list() -> Path | None:
    return None


@pytest.fixture
def kb(
    database_url: str,
    tmp_path: Path,
    clock: FakeClock,
    trust_dir: Path,
    revocation_list: Path | None,
) -> Iterator[Keybound]:
    """The server with the test roots added by the operator's trust directory."""
    trust = AttestationTrust.configured(
        trust_dir=trust_dir, revocation_list=str(revocation_list) if revocation_list else None
    )
    service = Keybound.open(
        database_url, clock=clock, master_key_file=tmp_path / "master.key", attestation=trust
    )
    yield service
    service.close()


def app(make_rp: Any, **settings: Any) -> RelyingParty:
    rp: RelyingParty = make_rp(enabledRiskData=ALL_RISK, **settings)
    return rp


def activate(
    rp: RelyingParty,
    device: RawDevice,
    *,
    platform: p.Platform = Platform.ANDROID,
    tpm: p.TpmAttestationKey | None = None,
    **kwargs: Any,
) -> tuple[p.ActivationStartResponse, Any]:
    start = device.start_activation(rp.activation_code(), tpm=tpm)
    request = device.activation_request(
        start, profile=p.DeviceProfile(platform=platform, os_version="14"), **kwargs
    )
    return start, device.post(p.DevicePaths.ACTIVATION_FINISH, request)


def risk(rp: RelyingParty, operation_id: str) -> dict[str, Any]:
    result: dict[str, Any] = rp.operation(operation_id)["riskData"]
    return result


def refused(response: Any, code: str, reason: str | None = None) -> None:
    assert problem_code(response) == code, response.text
    assert response.json().get("reason") == reason
    assert "operationId" in response.json()  # the operation is over


# ------------------------------------------------------------------------ Android (§6.5.1)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("DISABLED", "NOT_CHECKED"), ("OPTIONAL", "VERIFIED"), ("REQUIRED", "VERIFIED")],
)
def test_android_attestation_per_mode(
    make_rp: Any, android: AndroidPlatform, mode: str, expected: str
) -> None:
    rp = app(make_rp, attestationAndroidMode=mode, **ANDROID_POLICY)
    device = RawDevice(rp.http, rp.app_id)
    assert device.hw is not None
    hw = device.hw
    start, finish = activate(rp, device, attest=lambda s: android.attest(hw, s.challenge))
    assert finish.status_code == 200, finish.text
    assert finish.json()["hardwareKeyRegistered"] is True
    data = risk(rp, start.operation_id)
    assert data["hwKeyAttestation"] == expected
    if expected == "VERIFIED":
        assert data["hwKeySecurityLevel"] == "TRUSTED_ENVIRONMENT"
        assert data["hwKeyProvisioningMethod"] == "FACTORY"
        assert "hwKeyRevocationListAge" not in data  # no list configured
    view = rp.device(start.device_id)
    assert view["hardwareKeyAttestation"] == expected
    # every authentication reports what the activation decided
    auth = device.authenticate()
    assert auth.status_code == 200, auth.text
    latest = rp.call("GET", f"/rp/v1/operations/{auth.json()['operationId']}")["riskData"]
    assert latest["hwKeyAttestation"] == expected
    assert latest["hwKeyCloneSuspected"] is False


@pytest.mark.parametrize(
    ("mode", "code", "expected"),
    [
        ("DISABLED", None, "NOT_CHECKED"),
        ("OPTIONAL", None, "NOT_PROVIDED"),
        ("REQUIRED", "attestation_required", "NOT_PROVIDED"),
    ],
)
@pytest.mark.parametrize("hardware", [True, False], ids=["hw-key", "software-only"])
def test_no_evidence_per_mode(
    make_rp: Any, mode: str, code: str | None, expected: str, hardware: bool
) -> None:
    """`none` where REQUIRED: a key without attestation, or no hardware key at all."""
    rp = app(make_rp, attestationAndroidMode=mode)
    device = RawDevice(rp.http, rp.app_id, hw=crypto.generate_p256() if hardware else None)
    start, finish = activate(rp, device)
    if code is None:
        assert finish.status_code == 200, finish.text
    else:
        refused(finish, code)
        assert rp.operation(start.operation_id)["state"] == "FAILED"
    assert risk(rp, start.operation_id)["hwKeyAttestation"] == expected


def _other_key(android: AndroidPlatform, challenge: bytes) -> p.AndroidKeyAttestation:
    return android.attest(crypto.generate_p256(), challenge)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda a, hw, s: a.attest(hw, b"\x00" * 32), "CHALLENGE_MISMATCH"),
        (lambda a, hw, s: _other_key(a, s.challenge), "KEY_MISMATCH"),
        (lambda a, hw, s: AndroidPlatform().attest(hw, s.challenge), "CHAIN_UNTRUSTED"),
        (
            lambda a, hw, s: a.attest(hw, s.challenge, attestation_level=0, keymint_level=0),
            "SECURITY_LEVEL_SOFTWARE",
        ),
        (lambda a, hw, s: a.attest(hw, s.challenge, package="com.example.evil"), "APP_ID_MISMATCH"),
        (lambda a, hw, s: a.attest(hw, s.challenge, device_locked=False), "BOOTLOADER_UNLOCKED"),
        (lambda a, hw, s: a.attest(hw, s.challenge, boot_state=2), "BOOT_NOT_VERIFIED"),
    ],
    ids=[
        "wrong-challenge",
        "wrong-key",
        "untrusted-root",
        "software-level",
        "other-app",
        "unlocked",
        "unverified-boot",
    ],
)
def test_android_attacks_are_refused_under_required(
    make_rp: Any, kb: Keybound, android: AndroidPlatform, build: Any, reason: str
) -> None:
    rp = app(make_rp, attestationAndroidMode="REQUIRED", **ANDROID_POLICY)
    device = RawDevice(rp.http, rp.app_id)
    hw = device.hw
    start, finish = activate(rp, device, attest=lambda s: build(android, hw, s))
    refused(finish, "attestation_invalid", reason)
    assert risk(rp, start.operation_id)["hwKeyAttestation"] == f"FAILED_{reason}"
    with kb.db.read() as conn:  # nothing registered
        assert regs.get(conn, start.device_id) is None


@pytest.mark.parametrize(
    ("strategy", "code"),
    [("SUPPORTED", None), ("RISK_PARAMS", None), ("REQUIRED", "attestation_invalid")],
)
def test_optional_reports_a_failed_attestation_and_the_table_decides(
    make_rp: Any, android: AndroidPlatform, strategy: str, code: str | None
) -> None:
    """§6.1: under REQUIRED a hardware key whose attestation failed is not hardware."""
    rp = app(make_rp, attestationAndroidMode="OPTIONAL", hwKeyValidationStrategy=strategy)
    device = RawDevice(rp.http, rp.app_id)
    hw = device.hw
    start, finish = activate(rp, device, attest=lambda s: AndroidPlatform().attest(hw, s.challenge))
    if code is None:
        assert finish.json()["hardwareKeyRegistered"] is True
        assert rp.device(start.device_id)["hardwareKeyAttestation"] == "FAILED_CHAIN_UNTRUSTED"
    else:
        refused(finish, code, "CHAIN_UNTRUSTED")
    data = risk(rp, start.operation_id)
    assert (data["hwKeyAttestation"], data["hwKeyServerResult"]) == (
        "FAILED_CHAIN_UNTRUSTED",
        "VALID",
    )
    assert "hwKeySecurityLevel" not in data  # only what a verified attestation vouches for


def test_a_failed_attestation_stops_counting_once_the_strategy_becomes_required(
    make_rp: Any, kb: Keybound, android: AndroidPlatform
) -> None:
    """The registration keeps its outcome; the table reads it at every authentication."""
    rp = app(make_rp, attestationAndroidMode="OPTIONAL")
    device = RawDevice(rp.http, rp.app_id)
    hw = device.hw
    activate(rp, device, attest=lambda s: AndroidPlatform().attest(hw, s.challenge))
    assert device.authenticate().status_code == 200
    kb.admin.update_application(rp.app_id, {"hwKeyValidationStrategy": "REQUIRED"})
    assert problem_code(device.authenticate()) == "attestation_invalid"


def test_evidence_of_another_platform(make_rp: Any, tpm: SoftwareTpm) -> None:
    rp = app(make_rp, attestationAndroidMode="OPTIONAL")
    device = RawDevice(rp.http, rp.app_id)
    hw = device.hw
    assert hw is not None
    start, finish = activate(rp, device, attest=lambda s: tpm.certify(hw, s.challenge, b"s" * 32))
    assert finish.status_code == 200
    assert risk(rp, start.operation_id)["hwKeyAttestation"] == "FAILED_FORMAT_MISMATCH"


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"attestationAndroidMinSecurityLevel": "STRONG_BOX"}, "SECURITY_LEVEL_INSUFFICIENT"),
        ({"attestationAndroidMinPatchLevel": 202502}, "PATCH_LEVEL_TOO_OLD"),
        ({"attestationAndroidRequireRkp": True}, "PROVISIONING_NOT_RKP"),
        ({"attestationAndroidMaxRevocationListAgeSeconds": 3600}, "REVOCATION_LIST_STALE"),
        (
            {
                "attestationAndroidRequireLockedBootloader": False,
                "attestationAndroidRequireVerifiedBoot": False,
            },
            None,
        ),
    ],
)
def test_android_policy_settings(
    make_rp: Any, android: AndroidPlatform, settings: dict[str, Any], reason: str | None
) -> None:
    rp = app(make_rp, attestationAndroidMode="OPTIONAL", **settings)
    device = RawDevice(rp.http, rp.app_id)
    hw = device.hw
    start, _ = activate(
        rp,
        device,
        attest=lambda s: (
            android.attest(hw, s.challenge, device_locked=False, boot_state=1)
            if reason is None
            else android.attest(hw, s.challenge)
        ),
    )
    expected = "VERIFIED" if reason is None else f"FAILED_{reason}"
    assert risk(rp, start.operation_id)["hwKeyAttestation"] == expected


class TestRevocation:
    """The status list from a file: REVOKED and SUSPENDED refuse, its age is reported."""

    @pytest.fixture
    def revocation_list(self, tmp_path: Path, android: AndroidPlatform) -> Path:
        path = tmp_path / "status.json"
        path.write_text(
            json.dumps(
                {
                    "entries": {
                        format(android.pki.batch.certificate.serial_number, "x"): {
                            "status": "SUSPENDED"
                        },
                        "1234abcd": {"status": "REVOKED", "reason": "KEY_COMPROMISE"},
                    }
                }
            )
        )
        return path

    def test_suspended_batch_key_and_reported_age(
        self, make_rp: Any, kb: Keybound, android: AndroidPlatform, tmp_path: Path
    ) -> None:
        rp = app(make_rp, attestationAndroidMode="OPTIONAL")
        device = RawDevice(rp.http, rp.app_id)
        hw = device.hw
        start, _ = activate(rp, device, attest=lambda s: android.attest(hw, s.challenge))
        assert risk(rp, start.operation_id)["hwKeyAttestation"] == "FAILED_CERT_SUSPENDED"
        # a chain the list does not name verifies, and reports the list's age
        other = AndroidPlatform()
        kb.activation.trust = AttestationTrust.configured(
            trust_dir=write_trust_dir(tmp_path / "other", android=other.pki.root),
            revocation_list=kb.attestation.revocation_source,
        )
        device = RawDevice(rp.http, rp.app_id)
        hw = device.hw
        start, _ = activate(rp, device, attest=lambda s: other.attest(hw, s.challenge))
        data = risk(rp, start.operation_id)
        assert data["hwKeyAttestation"] == "VERIFIED"
        assert isinstance(data["hwKeyRevocationListAge"], int)
        assert 0 <= data["hwKeyRevocationListAge"] < 3600


def test_unknown_formats_are_malformed_requests(make_rp: Any) -> None:
    """The registry is an allow-list: `none`, `packed` or a made-up format never reach a
    verifier, and bounds are the schema's."""
    rp = app(make_rp, attestationAndroidMode="REQUIRED")
    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code())
    body = device.activation_request(start).to_wire()
    for evidence in (
        {"format": "none"},
        {"format": "packed", "certificateChain": ["AA"]},
        {"format": "android-key", "certificateChain": []},
        {"format": "android-key", "certificateChain": ["AA"] * 11},
    ):
        response = device.post(p.DevicePaths.ACTIVATION_FINISH, {**body, "attestation": evidence})
        assert problem_code(response) == "malformed_request"
    assert rp.operation(start.operation_id)["state"] == "PENDING"  # nothing consumed


# ------------------------------------------------------------------------ TPM 2.0 (§6.5.3)


def tpm_attester(tpm: SoftwareTpm, hw: Any, **changes: Any) -> Any:
    """The device side: ActivateCredential on the start's credential, then TPM2_Certify."""

    def attest(start: p.ActivationStartResponse) -> p.TpmAttestation:
        assert start.tpm_credential is not None
        secret = changes.get("secret") or tpm.activate(start.tpm_credential)
        return tpm.certify(
            changes.get("key", hw), changes.get("challenge", start.challenge), secret
        )

    return attest


@pytest.mark.parametrize("mode", ["OPTIONAL", "REQUIRED"])
def test_tpm_credential_activation_and_certify(
    make_rp: Any, kb: Keybound, tpm: SoftwareTpm, mode: str
) -> None:
    rp = app(make_rp, attestationTpmMode=mode)
    device = RawDevice(rp.http, rp.app_id)
    start, finish = activate(
        rp, device, platform=Platform.LINUX, tpm=tpm.keys(), attest=tpm_attester(tpm, device.hw)
    )
    assert finish.status_code == 200, finish.text
    data = risk(rp, start.operation_id)
    assert (data["hwKeyAttestation"], data["hwKeySecurityLevel"]) == ("VERIFIED", "TPM")
    assert _kept_credential(kb, start.operation_id) is None  # single use: erased by finish


def _kept_credential(kb: Keybound, operation_id: str) -> bytes | None:
    with kb.db.read() as conn:
        kept: bytes | None = conn.execute(
            select(t.operations.c.wrapped_tpm_credential).where(t.operations.c.id == operation_id)
        ).scalar_one()
    return kept


def test_tpm_credential_is_kept_wrapped(make_rp: Any, kb: Keybound, tpm: SoftwareTpm) -> None:
    rp = app(make_rp, attestationTpmMode="OPTIONAL")
    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code(), tpm=tpm.keys())
    assert start.tpm_credential is not None
    secret = tpm.activate(start.tpm_credential)
    kept = _kept_credential(kb, start.operation_id)
    assert kept is not None and kept[0] == 0x02
    assert secret not in kept and tpm.ak_public not in kept


def test_tpm_mode_disabled_makes_no_credential(
    make_rp: Any, kb: Keybound, tpm: SoftwareTpm
) -> None:
    rp = app(make_rp)
    device = RawDevice(rp.http, rp.app_id)
    start = device.start_activation(rp.activation_code(), tpm=tpm.keys())
    assert start.tpm_credential is None
    assert _kept_credential(kb, start.operation_id) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"secret": b"\x00" * 32}, "TPM_CREDENTIAL_MISMATCH"),
        ({"challenge": b"\x01" * 32}, "CHALLENGE_MISMATCH"),
        ({"key": "other"}, "KEY_MISMATCH"),
    ],
    ids=["wrong-secret", "wrong-challenge", "wrong-key"],
)
def test_tpm_attacks_are_refused_under_required(
    make_rp: Any, tpm: SoftwareTpm, changes: dict[str, Any], reason: str
) -> None:
    rp = app(make_rp, attestationTpmMode="REQUIRED")
    device = RawDevice(rp.http, rp.app_id)
    if changes.get("key") == "other":
        changes = {"key": crypto.generate_p256()}
    start, finish = activate(
        rp,
        device,
        platform=Platform.LINUX,
        tpm=tpm.keys(),
        attest=tpm_attester(tpm, device.hw, **changes),
    )
    refused(finish, "attestation_invalid", reason)
    assert risk(rp, start.operation_id)["hwKeyAttestation"] == f"FAILED_{reason}"


def test_tpm_ek_of_an_unknown_manufacturer(make_rp: Any, tpm: SoftwareTpm) -> None:
    """The start never fails because of attestation; the finish reports why."""
    rp = app(make_rp, attestationTpmMode="REQUIRED")
    device = RawDevice(rp.http, rp.app_id)
    stranger = SoftwareTpm(ek=tpm.ek, ak=tpm.ak)  # a manufacturer CA nobody configured
    hw = device.hw
    assert hw is not None
    start, finish = activate(
        rp,
        device,
        platform=Platform.LINUX,
        tpm=stranger.keys(),
        attest=lambda s: stranger.certify(hw, s.challenge, b"?" * 32),
    )
    assert start.tpm_credential is None
    refused(finish, "attestation_invalid", "CHAIN_UNTRUSTED")


def test_tpm_ak_that_is_not_restricted(make_rp: Any, tpm: SoftwareTpm) -> None:
    """An AK that could sign anything could sign a forged TPMS_ATTEST: no credential."""
    rp = app(make_rp, attestationTpmMode="OPTIONAL")
    device = RawDevice(rp.http, rp.app_id)
    loose = p.TpmAttestationKey(
        ek_certificate=tpm.ek_certificate,
        ak_public=factory.tpmt_public_ecc(tpm.ak.public_key(), attributes=factory.TPM_SIGN_ONLY),
    )
    hw = device.hw
    assert hw is not None
    start, finish = activate(
        rp,
        device,
        platform=Platform.LINUX,
        tpm=loose,
        attest=lambda s: tpm.certify(hw, s.challenge, b"?" * 32),
    )
    assert start.tpm_credential is None and finish.status_code == 200
    assert risk(rp, start.operation_id)["hwKeyAttestation"] == "FAILED_TPM_KEY_ATTRIBUTES"


def test_tpm_evidence_without_credential_activation(make_rp: Any, tpm: SoftwareTpm) -> None:
    rp = app(make_rp, attestationTpmMode="REQUIRED")
    device = RawDevice(rp.http, rp.app_id)
    hw = device.hw
    assert hw is not None
    _, finish = activate(
        rp,
        device,
        platform=Platform.WINDOWS,
        attest=lambda s: tpm.certify(hw, s.challenge, b"?" * 32),
    )
    refused(finish, "attestation_invalid", "TPM_NOT_ACTIVATED")


# ------------------------------------------------------------------- App Attest (§6.5.2)


def app_attest_device(
    rp: RelyingParty, apple: ApplePlatform, **changes: Any
) -> tuple[RawDevice, AppAttestKey, Any]:
    """An iOS device whose hardware key is its App Attest key."""
    key = AppAttestKey(crypto.generate_p256())
    device = RawDevice(rp.http, rp.app_id, hw=key.key, hw_prover=key.assertion)

    def attest(start: p.ActivationStartResponse) -> p.AppleAppAttestation:
        return apple.attest(key.key, start, application_id=rp.app_id, **changes)

    return device, key, attest


@pytest.mark.parametrize("mode", ["OPTIONAL", "REQUIRED"])
def test_app_attest_key_is_the_hardware_key(
    make_rp: Any, kb: Keybound, apple: ApplePlatform, mode: str
) -> None:
    rp = app(make_rp, attestationIosMode=mode, **APPLE_POLICY)
    device, key, attest = app_attest_device(rp, apple)
    start, finish = activate(rp, device, platform=Platform.IOS, attest=attest)
    assert finish.status_code == 200, finish.text
    data = risk(rp, start.operation_id)
    assert (data["hwKeyAttestation"], data["hwKeySecurityLevel"]) == ("VERIFIED", "SECURE_ENCLAVE")
    assert rp.device(start.device_id)["hardwareKeyAlgorithm"] == "APPLE_APP_ATTEST"
    for expected_counter in (2, 3):  # each authentication's proof is the next assertion
        auth = device.authenticate()
        assert auth.status_code == 200, auth.text
        assert _counter(kb, start.device_id) == expected_counter == key.counter


def _counter(kb: Keybound, device_id: str) -> int | None:
    with kb.db.read() as conn:
        stored = regs.get(conn, device_id)
    assert stored is not None and stored.state == "ACTIVE"
    return stored.hw_counter


@pytest.mark.parametrize(
    ("strategy", "code"), [("SUPPORTED", "hardware_key_invalid"), ("RISK_PARAMS", None)]
)
def test_app_attest_counter_replayed_or_lower(
    make_rp: Any, kb: Keybound, apple: ApplePlatform, strategy: str, code: str | None
) -> None:
    """§4.6: an assertion whose counter does not increase is an invalid proof, reported as
    hwKeyCloneSuspected and judged by the strategy (not a lock); it is never stored."""
    rp = app(
        make_rp,
        attestationIosMode="OPTIONAL",
        hwKeyValidationStrategy=strategy,
        amountFailuresAllowed=5,
        **APPLE_POLICY,
    )
    device, key, attest = app_attest_device(rp, apple)
    start, _ = activate(rp, device, platform=Platform.IOS, attest=attest)
    assert device.authenticate().status_code == 200  # counter 2
    for counter in (2, 1):  # the same counter again (replayed), then a lower one
        device.hw_prover = lambda tbs, c=counter: key.assertion(tbs, counter=c)
        response = device.authenticate()
        if code is None:
            assert response.status_code == 200, response.text
        else:
            assert problem_code(response) == code
        data = rp.operation(response.json()["operationId"])["riskData"]
        assert (data["hwKeyServerResult"], data["hwKeyCloneSuspected"]) == ("INVALID", True)
        assert _counter(kb, start.device_id) == 2  # reported, not stored, not locked
    device.hw_prover = key.assertion  # the genuine key carries on from its own counter
    assert device.authenticate().status_code == 200
    assert _counter(kb, start.device_id) == 3


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"client_data": b"another activation"}, "CHALLENGE_MISMATCH"),
        ({"apple_app_id": "TEAM123456.com.example.other"}, "APP_ID_MISMATCH"),
        ({"counter": 3}, "COUNTER_INVALID"),
        ({"aaguid": b"appattest" + bytes(7)}, "ENVIRONMENT_MISMATCH"),
        ({"untrusted": True}, "CHAIN_UNTRUSTED"),
    ],
    ids=["wrong-challenge", "other-app", "counter", "production-key", "untrusted-root"],
)
def test_app_attest_attacks_are_refused_under_required(
    make_rp: Any, apple: ApplePlatform, changes: dict[str, Any], reason: str
) -> None:
    rp = app(make_rp, attestationIosMode="REQUIRED", **APPLE_POLICY)
    changes = dict(changes)
    platform = ApplePlatform() if changes.pop("untrusted", False) else apple
    device, _, attest = app_attest_device(rp, platform, **changes)
    _, finish = activate(rp, device, platform=Platform.IOS, attest=attest)
    refused(finish, "attestation_invalid", reason)


def test_app_attest_key_proves_by_assertion_only(make_rp: Any, apple: ApplePlatform) -> None:
    """An ES256 hardwareSignature for an App Attest key is an invalid proof, whatever the
    attestation says."""
    rp = app(make_rp, attestationIosMode="OPTIONAL", **APPLE_POLICY)
    device, _, attest = app_attest_device(rp, apple)
    device.hw_prover = None  # ES256 by the key
    start, finish = activate(rp, device, platform=Platform.IOS, attest=attest)
    refused(finish, "hardware_key_invalid")
    assert risk(rp, start.operation_id)["hwKeyAttestation"] == "VERIFIED"


def test_app_attest_ignored_where_ios_mode_is_disabled(make_rp: Any, apple: ApplePlatform) -> None:
    """DISABLED checks nothing, so the hardware key is a plain ES256 key (§6.5)."""
    rp = app(make_rp, **APPLE_POLICY)
    device, _, attest = app_attest_device(rp, apple)
    start, finish = activate(rp, device, platform=Platform.IOS, attest=attest)
    refused(finish, "hardware_key_invalid")
    assert risk(rp, start.operation_id)["hwKeyAttestation"] == "NOT_CHECKED"
    device.hw_prover = None
    start, finish = activate(rp, device, platform=Platform.IOS, attest=attest)
    assert finish.status_code == 200
    assert rp.device(start.device_id)["hardwareKeyAlgorithm"] == "ES256"


def test_counter_is_stored_only_upward(make_rp: Any, kb: Keybound, apple: ApplePlatform) -> None:
    """The one conditional UPDATE (§4.6): a rotation carrying a counter that is not above the
    stored one changes nothing, so of two finishes racing on one counter one wins."""
    rp = app(make_rp, attestationIosMode="OPTIONAL", **APPLE_POLICY)
    device, _, attest = app_attest_device(rp, apple)
    start, _ = activate(rp, device, platform=Platform.IOS, attest=attest)
    nxt = crypto.public_der(crypto.generate_p256())
    with kb.db.write() as conn:
        reg = regs.get(conn, start.device_id)
        assert reg is not None and reg.hw_counter == 1
        rotation = {
            "signer_key_id": reg.sw_key_id,
            "signer_key": reg.sw_public_key,
            "next_key": nxt,
            "next_key_id": crypto.key_id(nxt),
            "now": 1,
        }
        assert not regs.rotate(conn, reg, hardware_counter=1, **rotation)
        assert regs.rotate(conn, reg, hardware_counter=7, **rotation)
        again = regs.get(conn, start.device_id)
    assert again is not None and again.hw_counter == 7 and again.sw_key_id == crypto.key_id(nxt)


# ------------------------------------------------------------- signed results (issue 16)


def test_signed_results_carry_the_attestation_whatever_risk_data_shows(
    make_rp: Any, android: AndroidPlatform
) -> None:
    """The activation's and each authentication's signed result say what attestation
    established, even where enabledRiskData lets none of it through (docs/signed-results.md)."""
    rp: RelyingParty = make_rp(
        enabledRiskData=[], attestationAndroidMode="REQUIRED", **ANDROID_POLICY
    )
    device = RawDevice(rp.http, rp.app_id)
    hw = device.hw
    assert hw is not None
    start, finish = activate(rp, device, attest=lambda s: android.attest(hw, s.challenge))
    assert finish.status_code == 200, finish.text
    auth = device.authenticate()
    assert auth.status_code == 200, auth.text
    for operation_id in (start.operation_id, auth.json()["operationId"]):
        operation = rp.operation(operation_id)
        assert operation["riskData"] == {}
        claims = verify_result(
            operation["resultJws"], rp.jwks(), expected_issuer=DEFAULT_ISSUER
        ).claims
        assert claims["riskData"] == {}
        assert claims["attestation"] == {
            "hwKeyAttestation": "VERIFIED",
            "hwKeySecurityLevel": "TRUSTED_ENVIRONMENT",
        } | ({"hwKeyProvisioningMethod": "FACTORY"} if operation_id == start.operation_id else {})
        assert claims["hwKeyServerResult"] == "VALID"
