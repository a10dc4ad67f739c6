"""End to end through the real server app with real secure hardware: the SDK's TPM store on a
private swtpm and its PKCS#11 store on a SoftHSM2 token, under all three strategies, plus each
failure the hardware can have. Devices talk through the secure channel (SealedTransport, sealed
to the application's pinned E2E key) to an app with the plaintext switch OFF, as in production.
Nothing is mocked; where a signature must be corrupted, a thin wrapper flips a bit of what the
real hardware returned (the attack under test)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from sqlalchemy import select

from keybound import crypto
from keybound.client import Device, SealedTransport, preset
from keybound.client.keystores import KeyHandle, KeyStore, open_keystore
from keybound.client.keystores._testbeds import init_softhsm_token
from keybound.errors import ClientError
from keybound.storage import tables as t
from tests.client.keystores.conftest import PIN_TOKEN, SoftHsmBed, SwtpmBed
from tests.helpers import RelyingParty

STRATEGIES = ["SUPPORTED", "RISK_PARAMS", "REQUIRED"]
#: strategy -> does an authentication with this hardware result pass?
PASSES = {
    "VALID": {"SUPPORTED": True, "RISK_PARAMS": True, "REQUIRED": True},
    "INVALID": {"SUPPORTED": False, "RISK_PARAMS": True, "REQUIRED": False},
    "MISSING": {"SUPPORTED": False, "RISK_PARAMS": True, "REQUIRED": False},
    "NO_KEY_REGISTERED": {"SUPPORTED": True, "RISK_PARAMS": True, "REQUIRED": False},
}


class Corrupting(KeyStore):
    """Delegates to a real store; flips one bit of its signatures when ``corrupt`` is set."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]
        self.corrupt = False

    def configured(self) -> bool:
        return self.inner.configured()

    def available(self) -> bool:
        return self.inner.available()

    def generate(self, label: str) -> KeyHandle:
        return self.inner.generate(label)

    def sign(self, handle: KeyHandle, message: bytes) -> bytes:
        signature = self.inner.sign(handle, message)
        if not self.corrupt:
            return signature
        flipped = bytearray(signature)
        flipped[-1] ^= 0x01
        return bytes(flipped)

    def delete(self, handle: KeyHandle) -> None:
        self.inner.delete(handle)


def tpm_store(bed: SwtpmBed, directory: Path) -> KeyStore:
    return open_keystore("tpm", directory, {"tcti": bed.tcti})


def pkcs11_store(
    bed: SoftHsmBed,
    directory: Path,
    *,
    label: str | None = None,
    pin: str | None = None,
    require_usable: bool = True,
) -> KeyStore:
    return open_keystore(
        "pkcs11",
        directory,
        {
            "module": bed.module,
            "token_label": label or bed.main.label,
            "user_pin": pin or bed.main.user_pin,
        },
        require_usable=require_usable,
    )


Sealed = Callable[[RelyingParty], SealedTransport]


@pytest.fixture
def sealed(http: TestClient) -> Sealed:
    """sealed(rp) -> a transport through the secure channel to rp's application."""

    def make(rp: RelyingParty) -> SealedTransport:
        assert rp.pin is not None
        return SealedTransport(rp.pin, http)

    return make


def make_device(tmp_path: Path, rp: RelyingParty, sealed: Sealed, store: KeyStore) -> Device:
    return Device.create(
        tmp_path / "device",
        application_id=rp.app_id,
        transport=sealed(rp),
        profile=preset("linux"),
        hardware=store,
    )


def outcome(rp: RelyingParty, action: Callable[[], Any]) -> tuple[str, dict[str, Any]]:
    """Run a device action; return (decision, the operation's risk data)."""
    try:
        op_id = action().operation_id
        decision = "PASS"
    except ClientError as exc:
        op_id = exc.fields.get("operation_id")
        decision = exc.code.value
    risk = rp.operation(op_id)["riskData"] if op_id else {}
    return decision, risk


def expect(strategy: str, server_result: str, decision: str) -> None:
    assert (decision == "PASS") is PASSES[server_result][strategy], (strategy, decision)


# -- happy path under every strategy -----------------------------------------------------


@pytest.mark.swtpm
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tpm_device_end_to_end(
    tmp_path: Path, make_rp: Any, sealed: Sealed, swtpm: SwtpmBed, strategy: str
) -> None:
    rp = make_rp(hwKeyValidationStrategy=strategy)
    device = make_device(tmp_path, rp, sealed, tpm_store(swtpm, tmp_path / "device"))
    activation = device.activate(rp.activation_code()["activationLink"])
    assert activation.hardware_key_registered
    for _ in range(2):
        decision, risk = outcome(rp, device.authenticate)
        assert (decision, risk) == (
            "PASS",
            {"hwKeyClientStatus": "OK", "hwKeyServerResult": "VALID"},
        )
    # the key survives a restart of the SDK (new objects, new TPM connection)
    again = Device.load(
        tmp_path / "device", transport=sealed(rp), hardware=tpm_store(swtpm, tmp_path / "device")
    )
    assert outcome(rp, again.authenticate)[0] == "PASS"
    assert rp.device(device.device_id)["hardwareKey"] is True


@pytest.mark.softhsm
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pkcs11_device_end_to_end(
    tmp_path: Path, make_rp: Any, sealed: Sealed, softhsm: SoftHsmBed, strategy: str
) -> None:
    rp = make_rp(hwKeyValidationStrategy=strategy)
    device = make_device(tmp_path, rp, sealed, pkcs11_store(softhsm, tmp_path / "device"))
    assert device.activate(rp.activation_code()["activationLink"]).hardware_key_registered
    decision, risk = outcome(rp, device.authenticate)
    assert (decision, risk) == ("PASS", {"hwKeyClientStatus": "OK", "hwKeyServerResult": "VALID"})


# -- failures: each gives the right client status and the strategy decides ------------------


@pytest.mark.swtpm
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tpm_unreachable_at_activation(
    tmp_path: Path, make_rp: Any, sealed: Sealed, swtpm: SwtpmBed, strategy: str
) -> None:
    rp = make_rp(hwKeyValidationStrategy=strategy)
    store = tpm_store(swtpm, tmp_path / "device")
    swtpm.tpm.stop()
    device = make_device(tmp_path, rp, sealed, store)
    code = rp.activation_code()["activationLink"]
    decision, risk = outcome(rp, lambda: device.activate(code))
    assert risk == {
        "hwKeyClientStatus": "GENERATION_FAILED",
        "hwKeyServerResult": "NO_KEY_REGISTERED",
    }
    expect(strategy, "NO_KEY_REGISTERED", decision)
    if decision != "PASS":
        assert decision == "hardware_key_required"


@pytest.mark.swtpm
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    ("fault", "status"),
    [("fresh_tpm", "KEY_UNAVAILABLE"), ("tpm_down", "SIGNING_FAILED"), ("corrupt", "OK")],
)
def test_tpm_faults_after_activation(
    tmp_path: Path,
    make_rp: Any,
    sealed: Sealed,
    swtpm: SwtpmBed,
    strategy: str,
    fault: str,
    status: str,
) -> None:
    rp = make_rp(hwKeyValidationStrategy=strategy)
    store = Corrupting(tpm_store(swtpm, tmp_path / "device"))
    device = make_device(tmp_path, rp, sealed, store)
    device.activate(rp.activation_code()["activationLink"])
    if fault == "fresh_tpm":
        swtpm.restart(fresh=True)  # TPM cleared / replaced: the wrapped blob no longer loads
    elif fault == "tpm_down":
        swtpm.tpm.stop()
    else:
        store.corrupt = True
    decision, risk = outcome(rp, device.authenticate)
    server_result = "INVALID" if fault == "corrupt" else "MISSING"
    assert risk == {"hwKeyClientStatus": status, "hwKeyServerResult": server_result}
    expect(strategy, server_result, decision)


@pytest.mark.softhsm
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pkcs11_key_deleted_behind_the_sdks_back(
    tmp_path: Path, make_rp: Any, sealed: Sealed, softhsm: SoftHsmBed, strategy: str
) -> None:
    rp = make_rp(hwKeyValidationStrategy=strategy)
    store = pkcs11_store(softhsm, tmp_path / "device")
    device = make_device(tmp_path, rp, sealed, store)
    device.activate(rp.activation_code()["activationLink"])
    _destroy_all_keys(softhsm)
    decision, risk = outcome(rp, device.authenticate)
    assert risk == {"hwKeyClientStatus": "KEY_UNAVAILABLE", "hwKeyServerResult": "MISSING"}
    expect(strategy, "MISSING", decision)


@pytest.mark.softhsm
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pkcs11_wrong_pin_and_missing_token(
    tmp_path: Path, make_rp: Any, sealed: Sealed, softhsm: SoftHsmBed, strategy: str
) -> None:
    import pkcs11

    rp = make_rp(hwKeyValidationStrategy=strategy)
    # wrong token PIN at activation: generation fails, reported truthfully
    wrong = pkcs11_store(softhsm, tmp_path / "a", label=PIN_TOKEN, pin="0000")
    device = make_device(tmp_path / "a", rp, sealed, wrong)
    code = rp.activation_code()["activationLink"]
    decision, risk = outcome(rp, lambda: device.activate(code))
    assert risk["hwKeyClientStatus"] == "GENERATION_FAILED"
    expect(strategy, "NO_KEY_REGISTERED", decision)
    # token removed after activation: a token of its own, deleted with SoftHSM's own tool
    removable = init_softhsm_token(softhsm.main.directory, label="removable", user_pin="2222")
    pkcs11.lib(softhsm.module).reinitialize()  # the module rescans its slots
    token_store = pkcs11_store(softhsm, tmp_path / "b", label="removable", pin="2222")
    second = make_device(tmp_path / "b", rp, sealed, token_store)
    assert second.activate(rp.activation_code()["activationLink"]).hardware_key_registered
    subprocess.run(
        ["softhsm2-util", "--delete-token", "--token", "removable"],
        env={**os.environ, **removable.env},
        check=True,
        capture_output=True,
    )
    pkcs11.lib(softhsm.module).reinitialize()
    reloaded = Device.load(
        tmp_path / "b" / "device",
        transport=sealed(rp),
        hardware=pkcs11_store(
            softhsm, tmp_path / "b", label="removable", pin="2222", require_usable=False
        ),
    )
    decision, risk = outcome(rp, reloaded.authenticate)
    assert risk["hwKeyClientStatus"] in ("KEY_UNAVAILABLE", "SIGNING_FAILED")
    assert risk["hwKeyServerResult"] == "MISSING"
    expect(strategy, "MISSING", decision)


@pytest.mark.swtpm
def test_state_directory_holds_no_hardware_private_key(
    tmp_path: Path, make_rp: Any, sealed: Sealed, swtpm: SwtpmBed, kb: Any
) -> None:
    """The state directory holds only the TPM's wrapped blob and public keys for the hardware
    key: no private key found on disk belongs to the registered hardware public key, and
    nothing is readable by other users. (The rotating software key is a software key.)"""
    rp = make_rp()
    device = make_device(tmp_path, rp, sealed, tpm_store(swtpm, tmp_path / "device"))
    device.activate(rp.activation_code()["activationLink"])
    with kb.db.read() as conn:
        hw_public = conn.execute(
            select(t.registrations.c.hw_public_key).where(t.registrations.c.id == device.device_id)
        ).scalar_one()
    assert hw_public is not None
    files = [p for p in (tmp_path / "device").rglob("*") if p.is_file()]
    assert files
    pems = []
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, path
        text = path.read_text(errors="replace").replace("\\n", "\n")
        pems += re.findall(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
            text,
            flags=re.S,
        )
    for pem in pems:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert crypto.public_der(key) != hw_public  # type: ignore[arg-type]


def _destroy_all_keys(bed: SoftHsmBed) -> None:
    """Delete every key object on the token with the token's own tool (behind our back)."""
    import pkcs11

    lib = pkcs11.lib(bed.module)
    token = lib.get_token(token_label=bed.main.label)
    with token.open(rw=True, user_pin=bed.main.user_pin) as session:
        for obj in list(
            session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY})
        ):
            obj.destroy()


@pytest.mark.swtpm
def test_detect_keystore(tmp_path: Path, swtpm: SwtpmBed) -> None:
    from keybound.client.keystores import TPM_TCTI_ENV, detect_keystore, open_keystore

    found = detect_keystore(tmp_path, {TPM_TCTI_ENV: swtpm.tcti})
    assert found is not None and found.kind == "tpm"
    assert found.options == {"tcti": swtpm.tcti}  # what a configuration stores to reopen it
    assert open_keystore(found.kind, tmp_path, found.options).available()
    assert detect_keystore(tmp_path, {TPM_TCTI_ENV: "swtpm:host=127.0.0.1,port=9"}) is None
    assert (detect_keystore(tmp_path, {}) is not None) is Path("/dev/tpmrm0").exists()
