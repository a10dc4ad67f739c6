"""The TPM 2.0 key store against a real (simulated) TPM: swtpm + tpm2-pytss, no mocks."""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keybound import crypto
from keybound.client.keystores import KeyHandle, KeyStore, open_keystore, tpm
from keybound.client.keystores._testbeds import free_port_pair
from keybound.errors import (
    ClientError,
    ErrorCode,
    InvalidSignature,
    KeyGenerationFailed,
    KeyStoreError,
    KeyUnavailable,
    SigningFailed,
)
from keybound.protocol import Algorithm

if TYPE_CHECKING:
    from conftest import SwtpmBed

MESSAGE = b"keybound tpm test transcript"


def _store(tcti: str, state_dir: Path, *, require_usable: bool = True) -> KeyStore:
    return open_keystore("tpm", state_dir, {"tcti": tcti}, require_usable=require_usable)


def _verify(handle: KeyHandle, signature: bytes, message: bytes = MESSAGE) -> None:
    crypto.verify_signature(
        public_key=handle.public_key, algorithm=Algorithm.ES256, message=message,
        signature=signature,
    )  # fmt: skip


@pytest.fixture
def store(swtpm: SwtpmBed, tmp_path: Path) -> KeyStore:
    return _store(swtpm.tcti, tmp_path)


# ---------------------------------------------------------------------------- happy path


@pytest.mark.swtpm
def test_generate_sign_verify(store: KeyStore) -> None:
    assert store.available()
    handle = store.generate("device-1")
    assert handle.store == "tpm"
    assert crypto.parse_public_key(handle.public_key) == handle.public_key
    signature = store.sign(handle, MESSAGE)
    _verify(handle, signature)
    with pytest.raises(InvalidSignature):
        _verify(handle, signature, b"another message")


@pytest.mark.swtpm
def test_each_key_is_new(store: KeyStore) -> None:
    assert store.generate("a").public_key != store.generate("b").public_key


@pytest.mark.swtpm
def test_handle_round_trips_through_json_into_a_new_store(
    swtpm: SwtpmBed, tmp_path: Path, json_roundtrip: Callable[[KeyHandle], KeyHandle]
) -> None:
    handle = _store(swtpm.tcti, tmp_path).generate("device-1")
    restored = json_roundtrip(handle)
    assert restored == handle
    other_store = _store(swtpm.tcti, tmp_path)  # new object, new ESAPI connections
    _verify(handle, other_store.sign(restored, MESSAGE))


@pytest.mark.swtpm
def test_key_survives_tpm_reboot(swtpm: SwtpmBed, store: KeyStore) -> None:
    handle = store.generate("device-1")
    swtpm.restart()  # same state directory: the same TPM after a power cycle
    _verify(handle, store.sign(handle, MESSAGE))


# ----------------------------------------------------------------- non-exportability


@pytest.mark.swtpm
def test_tpm_reports_attributes_that_forbid_export(swtpm: SwtpmBed, store: KeyStore) -> None:
    from tpm2_pytss.constants import TPMA_OBJECT

    handle = store.generate("device-1")
    blobs = tpm._decode_handle(handle)
    with (
        tpm._esapi(swtpm.tcti) as ectx,
        tpm._primary(ectx) as parent,
        tpm._loaded(ectx, parent, blobs) as key,
    ):
        public, _name, _qualified = ectx.read_public(key)
    attributes = public.publicArea.objectAttributes
    for required in (
        TPMA_OBJECT.FIXEDTPM,
        TPMA_OBJECT.FIXEDPARENT,
        TPMA_OBJECT.SENSITIVEDATAORIGIN,
        TPMA_OBJECT.USERWITHAUTH,
        TPMA_OBJECT.SIGN_ENCRYPT,
    ):
        assert attributes & required, f"{required!s} not set"
    for forbidden in (TPMA_OBJECT.DECRYPT, TPMA_OBJECT.RESTRICTED):
        assert not attributes & forbidden, f"{forbidden!s} set"
    assert tpm._spki(public) == handle.public_key


@pytest.mark.swtpm
def test_serialized_state_holds_only_wrapped_blob_and_public_key(
    store: KeyStore, tmp_path: Path
) -> None:
    handle = store.generate("device-1")
    assert set(handle.ref) == {"format", "label", "public", "private"}
    assert list(tmp_path.iterdir()) == []  # the store wrote nothing to disk
    private_blob = base64.b64decode(handle.ref["private"])
    public_point = crypto._load_p256(handle.public_key).public_numbers()
    # No 32-byte window of the wrapped private area is the key's private scalar.
    for start in range(len(private_blob) - 31):
        scalar = int.from_bytes(private_blob[start : start + 32], "big")
        if not 0 < scalar < _P256_ORDER:
            continue
        candidate = ec.derive_private_key(scalar, ec.SECP256R1()).public_key().public_numbers()
        assert candidate != public_point, "private key found in the clear in the handle"


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


# ---------------------------------------------------------------------------- failures


@pytest.mark.swtpm
def test_unreachable_tpm(swtpm: SwtpmBed, store: KeyStore, tmp_path: Path) -> None:
    handle = store.generate("device-1")
    tcti = f"swtpm:host=127.0.0.1,port={free_port_pair()}"
    with pytest.raises(KeyStoreError) as refused:  # asked for by name: must work now
        _store(tcti, tmp_path)
    assert refused.value.code is ErrorCode.KEYSTORE_UNAVAILABLE
    assert f"the TPM 2.0 at {tcti} cannot be used" in refused.value.detail
    nowhere = _store(tcti, tmp_path, require_usable=False)  # reopened for existing keys
    assert not nowhere.available()
    with pytest.raises(KeyGenerationFailed) as generation:
        nowhere.generate("device-1")
    assert generation.value.code is ErrorCode.KEY_GENERATION_FAILED
    assert "could not create the key" in str(generation.value)
    with pytest.raises(SigningFailed) as signing:
        nowhere.sign(handle, MESSAGE)
    assert signing.value.code is ErrorCode.SIGNING_FAILED


@pytest.mark.swtpm
def test_stopped_tpm_fails_signing_but_key_returns(swtpm: SwtpmBed, store: KeyStore) -> None:
    handle = store.generate("device-1")
    swtpm.tpm.stop()
    assert not store.available()
    with pytest.raises(SigningFailed):
        store.sign(handle, MESSAGE)
    swtpm.restart()
    _verify(handle, store.sign(handle, MESSAGE))


@pytest.mark.swtpm
def test_fresh_tpm_at_same_address_makes_key_unavailable(swtpm: SwtpmBed, store: KeyStore) -> None:
    handle = store.generate("device-1")
    swtpm.restart(fresh=True)  # a different TPM (new seeds) behind the same TCTI
    assert store.available()
    with pytest.raises(KeyUnavailable) as unavailable:
        store.sign(handle, MESSAGE)
    assert unavailable.value.code is ErrorCode.KEY_UNAVAILABLE
    assert "another TPM" in str(unavailable.value)
    _verify(new := store.generate("device-1"), store.sign(new, MESSAGE))


def _replace_ref(handle: KeyHandle, **changes: str | None) -> KeyHandle:
    ref = {**handle.ref, **changes}
    return dataclasses.replace(handle, ref={k: v for k, v in ref.items() if v is not None})


def _flip_last_byte(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


CORRUPTIONS: dict[str, Callable[[KeyHandle, KeyHandle], KeyHandle]] = {
    "private blob deleted": lambda h, _: _replace_ref(h, private=None),
    "public blob deleted": lambda h, _: _replace_ref(h, public=None),
    "ref emptied": lambda h, _: dataclasses.replace(h, ref={}),
    "private not base64": lambda h, _: _replace_ref(h, private="%%%not base64%%%"),
    "private truncated": lambda h, _: _replace_ref(h, private=h.ref["private"][:40]),
    "private tampered": lambda h, _: _replace_ref(h, private=_flip_last_byte(h.ref["private"])),
    "public tampered": lambda h, _: _replace_ref(h, public=_flip_last_byte(h.ref["public"])),
    "blob of another key": lambda h, o: _replace_ref(h, private=o.ref["private"]),
    "public key swapped": lambda h, o: dataclasses.replace(h, public_key=o.public_key),
    "other store kind": lambda h, _: dataclasses.replace(h, store="pkcs11"),
    "unknown format": lambda h, _: _replace_ref(h, format="tpm2b/v0"),
}


@pytest.mark.swtpm
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_handle_is_key_unavailable(store: KeyStore, corruption: str) -> None:
    handle, other = store.generate("device-1"), store.generate("device-2")
    broken = CORRUPTIONS[corruption](handle, other)
    with pytest.raises(KeyUnavailable) as unavailable:
        store.sign(broken, MESSAGE)
    assert unavailable.value.code is ErrorCode.KEY_UNAVAILABLE
    _verify(handle, store.sign(handle, MESSAGE))  # the store is still usable afterwards


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


@pytest.mark.swtpm
def test_connections_are_closed(store: KeyStore, tmp_path: Path) -> None:
    handle = store.generate("device-1")
    broken = _replace_ref(handle, private=_flip_last_byte(handle.ref["private"]))
    nowhere = _store(
        f"swtpm:host=127.0.0.1,port={free_port_pair()}", tmp_path, require_usable=False
    )
    before = _open_fds()
    for _ in range(20):
        store.sign(handle, MESSAGE)
        assert store.available()
        with pytest.raises(KeyUnavailable):
            store.sign(broken, MESSAGE)
        with pytest.raises(KeyGenerationFailed):
            nowhere.generate("device-1")
    assert _open_fds() == before


@pytest.mark.swtpm
def test_delete_is_idempotent_and_harmless(store: KeyStore) -> None:
    """As TpmKeyStore.delete documents: nothing is destroyed inside the TPM (the key is only
    the wrapped blob the SDK discards), so deleting twice raises nothing, a copy of the blob
    still signs on this TPM, and the store keeps working."""
    handle = store.generate("device-1")
    store.delete(handle)
    store.delete(handle)
    _verify(handle, store.sign(handle, MESSAGE))
    other = store.generate("device-2")
    _verify(other, store.sign(other, MESSAGE))


# ------------------------------------------------------------------ no hardware needed


def test_no_tpm_configured(tmp_path: Path) -> None:
    store = tpm.TpmKeyStore(tcti=None)
    assert not store.available()
    with pytest.raises(KeyGenerationFailed, match="no TPM"):
        store.generate("device-1")


def test_a_tpm_asked_for_on_a_machine_without_one_is_an_error(tmp_path: Path) -> None:
    """Issue 14: ``open_keystore("tpm", ...)`` without a TPM used to give a store that let
    the device activate with software keys. Asked for by name, it must fail, saying why."""
    store = tpm.TpmKeyStore(tcti=None)  # what open_keystore builds when nothing names a TPM
    with pytest.raises(KeyStoreError) as refused:
        store.check_usable()
    assert refused.value.code is ErrorCode.KEYSTORE_UNAVAILABLE
    assert "no TPM 2.0 on this machine" in refused.value.detail
    if not tpm.DEFAULT_DEVICE.exists():
        with pytest.raises(KeyStoreError, match=r"no TPM 2\.0 on this machine"):
            open_keystore("tpm", tmp_path)
        with pytest.raises(KeyStoreError, match=r"no TPM 2\.0 on this machine"):
            open_keystore("tpm", tmp_path, {})


@pytest.mark.parametrize(
    "options", [{"tcti": ""}, {"tcti": 7}, {"tcti": "device:/dev/tpmrm0", "pin": "x"}]
)
def test_bad_options_are_configuration_errors(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ClientError) as error:  # open_keystore's contract, as for every kind
        open_keystore("tpm", tmp_path, options)
    assert error.value.code is ErrorCode.CLIENT_CONFIGURATION


def test_import_without_tpm2_pytss_fails_only_at_construction() -> None:
    script = (
        "import sys; sys.modules['tpm2_pytss'] = None\n"
        "from keybound.client.keystores import tpm\n"
        "from keybound.errors import KeyStoreError\n"
        "try:\n"
        "    tpm.TpmKeyStore(tcti='device:/dev/tpmrm0')\n"
        "except KeyStoreError as exc:\n"
        "    print(exc.code.value, '|', exc.detail)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    code, _, detail = done.stdout.partition(" | ")
    assert code == ErrorCode.KEYSTORE_UNAVAILABLE.value
    assert "tpm2-pytss" in detail


def test_detection_without_tpm2_pytss_is_quiet_unless_a_tcti_is_named(tmp_path: Path) -> None:
    """Without the tpm extra, ``--keystore auto`` finds nothing and says nothing; only a
    $KEYBOUND_TPM_TCTI that cannot be used is worth a warning."""
    script = (
        "import logging, sys; sys.modules['tpm2_pytss'] = None\n"
        "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')\n"
        "from keybound.client.keystores import TPM_TCTI_ENV, detect_keystore\n"
        "print(detect_keystore(sys.argv[1], {}))\n"
        "print(detect_keystore(sys.argv[1], {TPM_TCTI_ENV: 'device:/dev/tpmrm0'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["None", "None"]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stderr
    assert "KEYBOUND_TPM_TCTI" in warnings[0] and "tpm2-pytss" in warnings[0]
