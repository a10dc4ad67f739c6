"""The PKCS#11 key store against a real token: SoftHSM2 + python-pkcs11, no mocks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from keybound import crypto
from keybound.client.keystores import KeyHandle, KeyStore, open_keystore
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
    from pkcs11 import Session

    from conftest import SoftHsmBed
    from keybound.client.keystores._testbeds import SoftHsmToken

MESSAGE = b"keybound pkcs11 test transcript"
WRONG_PIN = "not-the-pin-9876"


def _options(token: SoftHsmToken, **changes: Any) -> dict[str, Any]:
    options = {"module": token.module, "token_label": token.label, "user_pin": token.user_pin}
    options.update(changes)
    return {k: v for k, v in options.items() if v is not None}


def _store(
    token: SoftHsmToken, state_dir: Path, *, require_usable: bool = True, **changes: Any
) -> KeyStore:
    return open_keystore(
        "pkcs11", state_dir, _options(token, **changes), require_usable=require_usable
    )


def _refused(token: SoftHsmToken, state_dir: Path, **changes: Any) -> str:
    """A store that cannot be used now is refused when opened by name (keystore_unavailable)."""
    with pytest.raises(KeyStoreError) as refused:
        _store(token, state_dir, **changes)
    assert refused.value.code is ErrorCode.KEYSTORE_UNAVAILABLE
    return refused.value.detail


def _verify(handle: KeyHandle, signature: bytes, message: bytes = MESSAGE) -> None:
    crypto.verify_signature(
        public_key=handle.public_key, algorithm=Algorithm.ES256, message=message,
        signature=signature,
    )  # fmt: skip


@contextmanager
def _token_session(token: SoftHsmToken) -> Iterator[Session]:
    """A session of the test's own, behind the store's back."""
    import pkcs11

    lib = pkcs11.lib(token.module)
    with lib.get_token(token_label=token.label).open(rw=True, user_pin=token.user_pin) as s:
        yield s


def _private_key(session: Session, handle: KeyHandle) -> Any:
    from pkcs11 import KeyType, ObjectClass

    key_id = bytes.fromhex(handle.ref["id"])
    return session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, id=key_id)


@pytest.fixture
def store(softhsm: SoftHsmBed, tmp_path: Path) -> KeyStore:
    return _store(softhsm.main, tmp_path)


# ---------------------------------------------------------------------------- happy path


@pytest.mark.softhsm
def test_generate_sign_verify(store: KeyStore, softhsm: SoftHsmBed) -> None:
    assert store.available()
    handle = store.generate("device-1")
    assert handle.store == "pkcs11"
    assert handle.ref["token_label"] == softhsm.main.label
    assert crypto.parse_public_key(handle.public_key) == handle.public_key
    signature = store.sign(handle, MESSAGE)
    _verify(handle, signature)
    with pytest.raises(InvalidSignature):
        _verify(handle, signature, b"another message")


@pytest.mark.softhsm
def test_store_selected_by_slot(softhsm: SoftHsmBed, tmp_path: Path) -> None:
    with _token_session(softhsm.main) as session:
        slot = session.token.slot.slot_id
    store = _store(softhsm.main, tmp_path, token_label=None, slot=slot)
    assert store.available()
    handle = store.generate("device-1")
    assert handle.ref["token_label"] == softhsm.main.label
    _verify(handle, store.sign(handle, MESSAGE))


@pytest.mark.softhsm
def test_handle_round_trips_through_json_and_survives_module_restart(
    softhsm: SoftHsmBed, tmp_path: Path, json_roundtrip: Callable[[KeyHandle], KeyHandle]
) -> None:
    import pkcs11

    handle = _store(softhsm.main, tmp_path).generate("device-1")
    restored = json_roundtrip(handle)
    assert restored == handle
    pkcs11.lib(softhsm.module).reinitialize()  # C_Finalize + C_Initialize: a new "process"
    other_store = _store(softhsm.main, tmp_path)
    _verify(handle, other_store.sign(restored, MESSAGE))


# ----------------------------------------------------------------- non-exportability


@pytest.mark.softhsm
def test_token_attributes_forbid_export(store: KeyStore, softhsm: SoftHsmBed) -> None:
    from pkcs11 import Attribute
    from pkcs11.exceptions import AttributeSensitive

    handle = store.generate("device-1")
    with _token_session(softhsm.main) as session:
        key = _private_key(session, handle)
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.ALWAYS_SENSITIVE] is True
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.SIGN] is True
        assert key[Attribute.DECRYPT] is False
        assert key[Attribute.DERIVE] is False
        with pytest.raises(AttributeSensitive):
            key[Attribute.VALUE]


@pytest.mark.softhsm
def test_serialized_state_holds_no_pin_and_no_private_key(
    store: KeyStore, softhsm: SoftHsmBed, tmp_path: Path, handle_json: Callable[[KeyHandle], str]
) -> None:
    handle = store.generate("device-1")
    assert set(handle.ref) == {"format", "token_label", "id"}
    state = handle_json(handle)
    assert softhsm.main.user_pin not in state
    assert softhsm.main.user_pin not in repr(store) + store.describe()
    assert list(tmp_path.iterdir()) == []  # the store wrote nothing to disk


# ---------------------------------------------------------------------------- failures


@pytest.mark.softhsm
def test_key_destroyed_behind_the_stores_back_is_unavailable(
    store: KeyStore, softhsm: SoftHsmBed
) -> None:
    handle = store.generate("device-1")
    with _token_session(softhsm.main) as session:
        _private_key(session, handle).destroy()
    with pytest.raises(KeyUnavailable) as unavailable:
        store.sign(handle, MESSAGE)
    assert unavailable.value.code is ErrorCode.KEY_UNAVAILABLE
    assert handle.ref["id"] in str(unavailable.value)


@pytest.mark.softhsm
def test_delete_destroys_the_key_and_is_idempotent(store: KeyStore, softhsm: SoftHsmBed) -> None:
    handle = store.generate("device-1")
    store.delete(handle)
    store.delete(handle)
    with _token_session(softhsm.main) as session:
        from pkcs11 import Attribute

        assert list(session.get_objects({Attribute.ID: bytes.fromhex(handle.ref["id"])})) == []
    with pytest.raises(KeyUnavailable):
        store.sign(handle, MESSAGE)


@pytest.mark.softhsm
def test_wrong_pin(softhsm: SoftHsmBed, tmp_path: Path) -> None:
    handle = _store(softhsm.pin, tmp_path).generate("device-1")
    wrong = _store(softhsm.pin, tmp_path, user_pin=WRONG_PIN)
    with pytest.raises(KeyGenerationFailed) as generation:
        wrong.generate("device-2")
    with pytest.raises(SigningFailed) as signing:
        wrong.sign(handle, MESSAGE)
    for error in (generation.value, signing.value):
        assert "PIN was rejected" in str(error)
        assert softhsm.pin.label in str(error)
        assert WRONG_PIN not in str(error)
        assert softhsm.pin.user_pin not in str(error)
    _verify(handle, _store(softhsm.pin, tmp_path).sign(handle, MESSAGE))  # right PIN still works


@pytest.mark.softhsm
def test_missing_token(store: KeyStore, softhsm: SoftHsmBed, tmp_path: Path) -> None:
    handle = store.generate("device-1")
    assert "'no-such-token'" in _refused(softhsm.main, tmp_path, token_label="no-such-token")
    missing = _store(softhsm.main, tmp_path, token_label="no-such-token", require_usable=False)
    assert not missing.available()
    with pytest.raises(KeyGenerationFailed, match=r"'no-such-token'.*no such token"):
        missing.generate("device-1")
    moved = dataclasses.replace(handle, ref={**handle.ref, "token_label": "no-such-token"})
    with pytest.raises(SigningFailed, match=r"'no-such-token'.*no such token"):
        store.sign(moved, MESSAGE)


@pytest.mark.softhsm
def test_missing_slot(softhsm: SoftHsmBed, tmp_path: Path) -> None:
    assert "slot 987654" in _refused(softhsm.main, tmp_path, token_label=None, slot=987654)
    store = _store(softhsm.main, tmp_path, token_label=None, slot=987654, require_usable=False)
    assert not store.available()
    with pytest.raises(KeyGenerationFailed, match="slot 987654"):
        store.generate("device-1")


@pytest.mark.softhsm
def test_missing_module(softhsm: SoftHsmBed, tmp_path: Path) -> None:
    module = str(tmp_path / "libno-such-pkcs11.so")
    assert module in _refused(softhsm.main, tmp_path, module=module)
    store = _store(softhsm.main, tmp_path, module=module, require_usable=False)
    assert not store.available()
    with pytest.raises(KeyGenerationFailed) as generation:
        store.generate("device-1")
    assert module in str(generation.value)


CORRUPTIONS: dict[str, Callable[[KeyHandle, KeyHandle], KeyHandle]] = {
    "id deleted": lambda h, _: dataclasses.replace(h, ref={**h.ref, "id": ""}),
    "id not hex": lambda h, _: dataclasses.replace(h, ref={**h.ref, "id": "zz" * 16}),
    "unknown id": lambda h, _: dataclasses.replace(h, ref={**h.ref, "id": "00" * 16}),
    "ref emptied": lambda h, _: dataclasses.replace(h, ref={}),
    "other store kind": lambda h, _: dataclasses.replace(h, store="tpm"),
    "id of another key": lambda h, o: dataclasses.replace(h, ref=o.ref),
}


@pytest.mark.softhsm
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_handle_is_key_unavailable(store: KeyStore, corruption: str) -> None:
    handle, other = store.generate("device-1"), store.generate("device-2")
    with pytest.raises(KeyUnavailable) as unavailable:
        store.sign(CORRUPTIONS[corruption](handle, other), MESSAGE)
    assert unavailable.value.code is ErrorCode.KEY_UNAVAILABLE
    _verify(handle, store.sign(handle, MESSAGE))


# ------------------------------------------------------------------ no hardware needed


@pytest.mark.parametrize(
    "options",
    [
        {"token_label": "t", "user_pin": "pin-secret-77"},
        {"module": "/x.so", "user_pin": "pin-secret-77"},
        {"module": "/x.so", "token_label": "t", "slot": 1, "user_pin": "pin-secret-77"},
        {"module": "/x.so", "token_label": "t"},
        {"module": "/x.so", "slot": "1", "user_pin": "pin-secret-77"},
        {"module": "/x.so", "token_label": "t", "user_pin": "pin-secret-77", "so_pin": "2"},
    ],
)
def test_bad_options_are_configuration_errors(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as error:  # open_keystore's contract, as for every kind
        open_keystore("pkcs11", tmp_path, options)
    assert error.value.code is ErrorCode.CLIENT_CONFIGURATION
    assert "pin-secret-77" not in str(error.value)


def test_import_without_python_pkcs11_fails_only_at_construction() -> None:
    script = (
        "import sys; sys.modules['pkcs11'] = None\n"
        "from keybound.client.keystores import pkcs11\n"
        "from keybound.errors import KeyStoreError\n"
        "options = pkcs11.Pkcs11Options(module='/x.so', token_label='t', user_pin='1')\n"
        "try:\n"
        "    pkcs11.Pkcs11KeyStore(options)\n"
        "except KeyStoreError as exc:\n"
        "    print(exc.code.value, '|', exc.detail)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    code, _, detail = done.stdout.partition(" | ")
    assert code == ErrorCode.KEYSTORE_UNAVAILABLE.value
    assert "python-pkcs11" in detail
