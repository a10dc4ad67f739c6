"""An emulated secure element (kind ``emulated``) for tests and the demo. NOT secure hardware.

It behaves like one from the SDK's side: keys are generated inside it and never leave it; the
:class:`~keybound.client.keystores.base.KeyHandle` holds only an opaque key id. Inside, each
private key is wrapped with AES-256-GCM under an element-internal key and kept in the
element's own directory ``<state_dir>/emulated-se/`` (files 0600, directory 0700)::

    emulated-se/element.key          32-byte element-internal wrapping key
    emulated-se/keys/<key id>.key    nonce(12) || AES-GCM(PKCS#8 DER), AAD = key id

Fault injection (attributes, or factory options of the same names)::

    present = False             available() is False; sign raises KeyUnavailable
    fail_generation = True      generate raises KeyGenerationFailed
    fail_signing = True         sign raises SigningFailed
    corrupt_signatures = True   sign returns a well-formed signature over other bytes
    lose_keys()                 wipe the element (TEE reset): later signs raise KeyUnavailable
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keybound import crypto
from keybound.client.files import write_private
from keybound.client.keystores.base import (
    KeyHandle,
    KeyStore,
    check_options,
    option_error,
    register,
)
from keybound.errors import (
    KeyGenerationFailed,
    KeyUnavailable,
    SigningFailed,
)

ELEMENT_DIR = "emulated-se"
_KEY_ID = re.compile(r"^[0-9a-f]{32}$")
_NONCE_BYTES = 12
_CORRUPTION_PREFIX = b"keybound-emulated-se-corrupted"
_OPTIONS = ("present", "fail_generation", "fail_signing", "corrupt_signatures")


class EmulatedSecureElement(KeyStore):
    """A file-backed emulation of a secure element, with fault injection for tests."""

    kind: ClassVar[str] = "emulated"

    def __init__(
        self,
        directory: Path | str,
        *,
        present: bool = True,
        fail_generation: bool = False,
        fail_signing: bool = False,
        corrupt_signatures: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.present = present
        self.fail_generation = fail_generation
        self.fail_signing = fail_signing
        self.corrupt_signatures = corrupt_signatures

    # ------------------------------------------------------------------ KeyStore

    def configured(self) -> bool:
        """An absent element (``present = False``) models a device without one."""
        return self.present

    def available(self) -> bool:
        return self.present

    def generate(self, label: str) -> KeyHandle:
        if not self.present:
            raise KeyGenerationFailed("emulated secure element is not present")
        if self.fail_generation:
            raise KeyGenerationFailed("emulated secure element: injected generation failure")
        private_key = crypto.generate_p256()
        key_id = secrets.token_hex(16)
        self._store(key_id, private_key)
        return KeyHandle(
            store=self.kind, public_key=crypto.public_der(private_key), ref={"key_id": key_id}
        )

    def sign(self, handle: KeyHandle, message: bytes) -> bytes:
        if not self.present:
            raise KeyUnavailable("emulated secure element is not present")
        private_key = self._load(handle)
        if self.fail_signing:
            raise SigningFailed("emulated secure element: injected signing failure")
        if self.corrupt_signatures:
            message = _CORRUPTION_PREFIX + message
        return crypto.sign_p256(private_key, message)

    def delete(self, handle: KeyHandle) -> None:
        key_id = _key_id(handle)
        if key_id is not None:
            self._key_path(key_id).unlink(missing_ok=True)

    def describe(self) -> str:
        return f"emulated secure element at {self.directory} (NOT secure hardware)"

    # ------------------------------------------------------------------ faults

    def lose_keys(self) -> None:
        """Simulate a wiped TEE: every key and the wrapping key are gone."""
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ inside the element

    def _key_path(self, key_id: str) -> Path:
        return self.directory / "keys" / f"{key_id}.key"

    def _store(self, key_id: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        der = private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + AESGCM(self._wrapping_key()).encrypt(nonce, der, key_id.encode())
        write_private(self._key_path(key_id), sealed)

    def _load(self, handle: KeyHandle) -> ec.EllipticCurvePrivateKey:
        key_id = _key_id(handle)
        if handle.store != self.kind or key_id is None:
            raise KeyUnavailable("not a key of the emulated secure element")
        wrapping_path = self.directory / "element.key"
        try:
            sealed = self._key_path(key_id).read_bytes()
            wrapping_key = wrapping_path.read_bytes()
            der = AESGCM(wrapping_key).decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], key_id.encode()
            )
            private_key = serialization.load_der_private_key(der, password=None)
        except (OSError, ValueError, InvalidTag) as exc:
            raise KeyUnavailable("key is gone from the emulated secure element") from exc
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise KeyUnavailable("key in the emulated secure element is not an EC key")
        if not crypto.constant_time_equal(crypto.public_der(private_key), handle.public_key):
            raise KeyUnavailable("key in the emulated secure element does not match the handle")
        return private_key

    def _wrapping_key(self) -> bytes:
        path = self.directory / "element.key"
        if not path.exists():
            write_private(path, AESGCM.generate_key(bit_length=256))
        return path.read_bytes()


def _key_id(handle: KeyHandle) -> str | None:
    """The handle's key id if it is well-formed (it becomes a file name)."""
    key_id = handle.ref.get("key_id", "")
    return key_id if _KEY_ID.match(key_id) else None


@register(EmulatedSecureElement.kind)
def _factory(state_dir: Path, options: Mapping[str, Any]) -> KeyStore:
    check_options(EmulatedSecureElement.kind, options, _OPTIONS)
    flags: dict[str, bool] = {}
    for name, value in options.items():
        if not isinstance(value, bool):
            raise option_error(EmulatedSecureElement.kind, f"option {name!r} must be true or false")
        flags[name] = value
    return EmulatedSecureElement(Path(state_dir) / ELEMENT_DIR, **flags)
