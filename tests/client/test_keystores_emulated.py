"""The emulated secure element (kind ``emulated``), its fault injection, and the key-store
factory ``open_keystore``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from keybound import crypto
from keybound.client.keystores import REGISTRY, KeyHandle, KeyStore, open_keystore
from keybound.client.keystores.emulated import EmulatedSecureElement
from keybound.client.keystores.software import NoSecureHardware
from keybound.errors import (
    ClientError,
    ErrorCode,
    InvalidSignature,
    KeyGenerationFailed,
    KeyUnavailable,
    SigningFailed,
)
from keybound.protocol import Algorithm

MESSAGE = b"transcript bytes"


@pytest.fixture
def element(tmp_path: Path) -> EmulatedSecureElement:
    return EmulatedSecureElement(tmp_path / "emulated-se")


def verify(handle: KeyHandle, signature: bytes, message: bytes = MESSAGE) -> None:
    crypto.verify_signature(
        public_key=handle.public_key,
        algorithm=Algorithm.ES256,
        message=message,
        signature=signature,
    )


def test_generate_and_sign(element: EmulatedSecureElement) -> None:
    assert element.available()
    handle = element.generate("keybound:app:device")
    assert handle.store == "emulated"
    assert crypto.parse_public_key(handle.public_key) == handle.public_key
    verify(handle, element.sign(handle, MESSAGE))


def test_handle_holds_only_an_opaque_key_id(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    assert set(handle.ref) == {"key_id"}
    assert len(handle.ref["key_id"]) == 32
    assert element.generate("label").ref["key_id"] != handle.ref["key_id"]


def test_keys_are_wrapped_in_private_files(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    key_file = element.directory / "keys" / f"{handle.ref['key_id']}.key"
    # The PKCS#8 encoding contains the public point; the wrapped file must not.
    assert handle.public_key[-65:] not in key_file.read_bytes()
    for path in (key_file, element.directory / "element.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (element.directory, element.directory / "keys"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_keys_survive_a_new_instance(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    reopened = EmulatedSecureElement(element.directory)
    verify(handle, reopened.sign(handle, MESSAGE))


def test_delete_is_idempotent_and_final(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    other = element.generate("other")
    element.delete(handle)
    element.delete(handle)
    with pytest.raises(KeyUnavailable):
        element.sign(handle, MESSAGE)
    verify(other, element.sign(other, MESSAGE))


def test_lose_keys_simulates_a_wiped_element(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    element.lose_keys()
    assert element.available()
    with pytest.raises(KeyUnavailable):
        element.sign(handle, MESSAGE)
    fresh = element.generate("label")
    verify(fresh, element.sign(fresh, MESSAGE))


def test_fail_generation(element: EmulatedSecureElement) -> None:
    element.fail_generation = True
    with pytest.raises(KeyGenerationFailed) as info:
        element.generate("label")
    assert info.value.code is ErrorCode.KEY_GENERATION_FAILED


def test_fail_signing(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    element.fail_signing = True
    with pytest.raises(SigningFailed) as info:
        element.sign(handle, MESSAGE)
    assert info.value.code is ErrorCode.SIGNING_FAILED
    element.fail_signing = False
    verify(handle, element.sign(handle, MESSAGE))


def test_corrupt_signatures_are_well_formed_but_wrong(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    element.corrupt_signatures = True
    signature = element.sign(handle, MESSAGE)
    r, s = decode_dss_signature(signature)
    assert r > 0 and s > 0
    with pytest.raises(InvalidSignature):
        verify(handle, signature)


def test_absent_element(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    element.present = False
    assert not element.available()
    with pytest.raises(KeyUnavailable):
        element.sign(handle, MESSAGE)
    with pytest.raises(KeyGenerationFailed):
        element.generate("label")


@pytest.mark.parametrize(
    "ref",
    [{}, {"key_id": "../../etc/passwd"}, {"key_id": "A" * 32}, {"key_id": "0" * 31}],
)
def test_malformed_key_refs_are_unavailable(
    element: EmulatedSecureElement, ref: dict[str, str]
) -> None:
    real = element.generate("label")
    with pytest.raises(KeyUnavailable):
        element.sign(KeyHandle(store="emulated", public_key=real.public_key, ref=ref), MESSAGE)
    element.delete(KeyHandle(store="emulated", public_key=real.public_key, ref=ref))


def test_foreign_or_mismatched_handles_are_unavailable(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    other = element.generate("other")
    with pytest.raises(KeyUnavailable):
        element.sign(KeyHandle(store="tpm", public_key=handle.public_key, ref=handle.ref), b"m")
    with pytest.raises(KeyUnavailable):
        element.sign(KeyHandle(store="emulated", public_key=other.public_key, ref=handle.ref), b"m")


def test_tampered_wrapped_key_is_unavailable(element: EmulatedSecureElement) -> None:
    handle = element.generate("label")
    key_file = element.directory / "keys" / f"{handle.ref['key_id']}.key"
    data = bytearray(key_file.read_bytes())
    data[-1] ^= 1
    key_file.write_bytes(bytes(data))
    with pytest.raises(KeyUnavailable):
        element.sign(handle, MESSAGE)


# ---------------------------------------------------------------------- open_keystore


def test_open_emulated_with_options(tmp_path: Path) -> None:
    store = open_keystore("emulated", tmp_path, {"fail_generation": True, "present": True})
    assert isinstance(store, EmulatedSecureElement)
    assert store.directory == tmp_path / "emulated-se"
    assert store.fail_generation and not store.fail_signing
    assert "emulated" in REGISTRY


@pytest.mark.parametrize("options", [{"colour": True}, {"fail_signing": "yes"}])
def test_bad_emulated_options(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ClientError) as info:
        open_keystore("emulated", tmp_path, options)
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION


def test_software_kind_is_no_secure_hardware(tmp_path: Path) -> None:
    store: KeyStore = open_keystore("software", tmp_path)
    assert isinstance(store, NoSecureHardware)
    assert not store.available()
    with pytest.raises(KeyGenerationFailed):
        store.generate("label")
    with pytest.raises(ClientError):
        open_keystore("software", tmp_path, {"fail_generation": True})


@pytest.mark.parametrize("kind", ["nosuchstore", "../emulated", "Emulated", "base.x", ""])
def test_unknown_kinds(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ClientError) as info:
        open_keystore(kind, tmp_path)
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
