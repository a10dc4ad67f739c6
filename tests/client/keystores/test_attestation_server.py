"""The SDK's devices against the server that judges attestation (docs/protocol.md §6.5),
through the real app and the secure channel, with the operator's trust directory:

- a TPM manufactured by swtpm_setup with swtpm's local CA: the server makes the credential at
  start, the SDK's TPM key store activates it and certifies its hardware key, the server
  verifies it (``VERIFIED``, security level TPM) under OPTIONAL and REQUIRED;
- the emulated secure element as an Android phone: its chains verify once the operator adds
  the emulated (test) root, and are refused under REQUIRED when it is not added;
- a PKCS#11 token, which has no attestation: refused where the TPM mode is REQUIRED."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keybound import protocol
from keybound.client import Device, preset
from keybound.client.keystores import KeyStore, open_keystore
from keybound.client.keystores.emulated import (
    ATTESTATION_ROOT,
    DEMO_PACKAGE_NAME,
    DEMO_SIGNING_DIGEST,
    EmulatedSecureElement,
)
from keybound.errors import ClientError
from keybound.protocol import AttestationFormat, DevicePaths
from keybound.server.attestation_trust import AttestationTrust
from keybound.server.services import Keybound
from tests.client.keystores.conftest import ManufacturedSwtpm, SoftHsmBed
from tests.client.test_device_attestation import RecordingTransport
from tests.conftest import FakeClock
from tests.helpers import RelyingParty

ALL_RISK = [attribute.value for attribute in protocol.RiskAttribute]


@pytest.fixture
def trust_dir(tmp_path: Path) -> Path:
    return tmp_path / "trust"


@pytest.fixture
def kb(database_url: str, tmp_path: Path, clock: FakeClock, trust_dir: Path) -> Iterator[Keybound]:
    """The server as its operator configured it (the anchors each test adds)."""
    trust_dir.mkdir(exist_ok=True)
    service = Keybound.open(
        database_url,
        clock=clock,
        master_key_file=tmp_path / "master.key",
        attestation=AttestationTrust.configured(trust_dir=trust_dir),
    )
    yield service
    service.close()


def _add_anchor(kb: Keybound, trust_dir: Path, platform: str, pem: bytes) -> None:
    (trust_dir / platform).mkdir(parents=True, exist_ok=True)
    (trust_dir / platform / "anchor.pem").write_bytes(pem)
    kb.activation.trust = AttestationTrust.configured(trust_dir=trust_dir)


def _device(
    tmp_path: Path, rp: RelyingParty, http: Any, store: KeyStore | None, profile: str
) -> tuple[Device, RecordingTransport]:
    assert rp.pin is not None
    transport = RecordingTransport(rp.pin, http.raw)
    device = Device.create(
        tmp_path / "device",
        application_id=rp.app_id,
        transport=transport,
        profile=preset(profile),
        hardware=store,
    )
    return device, transport


def _risk(rp: RelyingParty, transport: RecordingTransport) -> dict[str, Any]:
    start = transport.last(DevicePaths.ACTIVATION_START, protocol.ActivationStartResponse)
    risk: dict[str, Any] = rp.operation(start.operation_id)["riskData"]
    return risk


@pytest.mark.swtpm
@pytest.mark.parametrize("mode", ["OPTIONAL", "REQUIRED"])
def test_sdk_tpm_device_attests_to_the_server(
    tmp_path: Path,
    http: Any,
    make_rp: Any,
    kb: Keybound,
    trust_dir: Path,
    manufactured_swtpm: ManufacturedSwtpm,
    mode: str,
) -> None:
    _add_anchor(kb, trust_dir, "tpm", manufactured_swtpm.ca.issuer_certificate.read_bytes())
    rp = make_rp(attestationTpmMode=mode, enabledRiskData=ALL_RISK)
    store = open_keystore("tpm", tmp_path / "device", {"tcti": manufactured_swtpm.tcti})
    device, transport = _device(tmp_path, rp, http, store, "linux")
    result = device.activate(str(rp.activation_code()["activationLink"]))
    assert result.hardware_key_registered and result.attestation_format is AttestationFormat.TPM
    assert (
        transport.last(
            DevicePaths.ACTIVATION_START, protocol.ActivationStartResponse
        ).tpm_credential
        is not None
    )
    risk = _risk(rp, transport)
    assert (risk["hwKeyAttestation"], risk["hwKeySecurityLevel"]) == ("VERIFIED", "TPM")
    auth = device.authenticate()
    assert auth.hw_key_client_status.value == "OK"
    assert rp.device(result.device_id)["hardwareKeyAttestation"] == "VERIFIED"


@pytest.mark.swtpm
def test_sdk_tpm_device_with_an_untrusted_manufacturer(
    tmp_path: Path, http: Any, make_rp: Any, manufactured_swtpm: ManufacturedSwtpm
) -> None:
    """No anchor for swtpm's local CA: no credential at start, so the device sends no
    evidence; REQUIRED refuses the activation."""
    rp = make_rp(attestationTpmMode="REQUIRED")
    store = open_keystore("tpm", tmp_path / "device", {"tcti": manufactured_swtpm.tcti})
    device, transport = _device(tmp_path, rp, http, store, "linux")
    with pytest.raises(ClientError) as refused:
        device.activate(str(rp.activation_code()["activationLink"]))
    assert refused.value.code.value == "attestation_required"
    assert (
        transport.last(
            DevicePaths.ACTIVATION_START, protocol.ActivationStartResponse
        ).tpm_credential
        is None
    )


def _android_app(make_rp: Any, mode: str) -> RelyingParty:
    rp: RelyingParty = make_rp(
        attestationAndroidMode=mode,
        enabledRiskData=ALL_RISK,
        attestationAndroidPackageNames=[DEMO_PACKAGE_NAME],
        attestationAndroidSigningDigests=[DEMO_SIGNING_DIGEST.hex()],
    )
    return rp


def test_emulated_android_device_verifies_once_its_root_is_added(
    tmp_path: Path, http: Any, make_rp: Any, kb: Keybound, trust_dir: Path
) -> None:
    _add_anchor(kb, trust_dir, "android", ATTESTATION_ROOT.read_bytes())
    rp = _android_app(make_rp, "REQUIRED")
    element = EmulatedSecureElement(tmp_path / "device" / "emulated-se")
    device, transport = _device(tmp_path, rp, http, element, "android-14")
    result = device.activate(str(rp.activation_code()["activationLink"]))
    assert result.attestation_format is AttestationFormat.ANDROID_KEY
    risk = _risk(rp, transport)
    assert (
        risk["hwKeyAttestation"],
        risk["hwKeySecurityLevel"],
        risk["hwKeyProvisioningMethod"],
    ) == ("VERIFIED", "TRUSTED_ENVIRONMENT", "FACTORY")
    assert device.authenticate().hw_key_client_status.value == "OK"


def test_emulated_android_device_without_its_root(tmp_path: Path, http: Any, make_rp: Any) -> None:
    """The emulated root is test material: never trusted unless the operator adds it."""
    rp = _android_app(make_rp, "REQUIRED")
    element = EmulatedSecureElement(tmp_path / "device" / "emulated-se")
    device, _ = _device(tmp_path, rp, http, element, "android-14")
    with pytest.raises(ClientError) as refused:
        device.activate(str(rp.activation_code()["activationLink"]))
    assert refused.value.code.value == "attestation_invalid"


@pytest.mark.softhsm
def test_pkcs11_device_where_tpm_attestation_is_required(
    tmp_path: Path, http: Any, make_rp: Any, softhsm: SoftHsmBed
) -> None:
    rp = make_rp(attestationTpmMode="REQUIRED")
    store = open_keystore(
        "pkcs11",
        tmp_path / "device",
        {
            "module": softhsm.module,
            "token_label": softhsm.main.label,
            "user_pin": softhsm.main.user_pin,
        },
    )
    device, _ = _device(tmp_path, rp, http, store, "linux")
    with pytest.raises(ClientError) as refused:
        device.activate(str(rp.activation_code()["activationLink"]))
    assert refused.value.code.value == "attestation_required"
