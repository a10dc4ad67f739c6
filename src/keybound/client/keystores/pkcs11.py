"""PKCS#11 key store (kind ``"pkcs11"``), through python-pkcs11.

Options: ``module`` (path of the token's PKCS#11 library), one of ``token_label`` or
``slot`` (slot id), and ``user_pin``.

``generate`` creates an EC P-256 key pair *on the token* (``CKA_TOKEN``) with a random
16-byte ``CKA_ID``; the private key is ``CKA_SENSITIVE``, not ``CKA_EXTRACTABLE``, and may
only sign. :attr:`KeyHandle.ref` records the token label and the ``CKA_ID`` (never the PIN):
the key itself never leaves the token and this store writes nothing to disk.

``sign`` hashes the message with SHA-256 on the host and signs the digest with ``CKM_ECDSA``
(every EC token has it; SoftHSM2 2.6 has no ``CKM_ECDSA_SHA256``), converts the token's raw
``r || s`` to DER and checks it against the handle's public key, so a handle that points at
some other key is reported as unavailable rather than producing a bad signature.

Each operation opens one session, logs in, and logs out and closes it before returning. The
PKCS#11 login state is shared by all sessions of a process, so operations are serialised by a
process-wide lock.

Error mapping (``hwKeyClientStatus``, see :mod:`keybound.client.keystores.base`):

=========================================================  =======================
module missing, token missing, PIN rejected, token error   KeyGenerationFailed
  during ``generate``
handle corrupt, no such key on the token (destroyed),      KeyUnavailable
  key no longer matches the handle's public key
module/token missing, PIN rejected, token error at sign    SigningFailed
=========================================================  =======================
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keybound.client.keystores.base import (
    KeyHandle,
    KeyStore,
    check_options,
    option_error,
    register,
)
from keybound.crypto import der_signature, p256_public_from_point, verify_signature
from keybound.errors import (
    InvalidSignature,
    KeyGenerationFailed,
    KeyStoreError,
    KeyUnavailable,
    SigningFailed,
)
from keybound.protocol import Algorithm

try:
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
    from pkcs11.exceptions import (
        MultipleObjectsReturned,
        MultipleTokensReturned,
        NoSuchKey,
        NoSuchToken,
        PinExpired,
        PinIncorrect,
        PinLenRange,
        PinLocked,
        PKCS11Error,
        TokenNotPresent,
        UserPinNotInitialized,
    )
    from pkcs11.types import SignMixin
    from pkcs11.util.ec import encode_named_curve_parameters
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

if TYPE_CHECKING:
    from pkcs11 import Session, Token
    from pkcs11._pkcs11 import lib as Pkcs11Lib

KIND = "pkcs11"
REF_FORMAT = "pkcs11/v1"
_P256_OID = "1.2.840.10045.3.1.7"
_ID_BYTES = 16
_UNCOMPRESSED_POINT_LEN = 65

#: PKCS#11 login state is per process and token: one operation at a time.
_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class Pkcs11Options:
    """Parsed ``options`` of the ``pkcs11`` store. The PIN is kept out of ``repr``."""

    module: str
    token_label: str | None = None
    slot: int | None = None
    user_pin: str = field(repr=False)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Pkcs11Options:
        check_options(KIND, options, ("module", "token_label", "slot", "user_pin"))
        module, label, slot, pin = (
            options.get(k) for k in ("module", "token_label", "slot", "user_pin")
        )
        if not isinstance(module, str) or not module:
            raise option_error(KIND, "option 'module' (path of the PKCS#11 library) is required")
        if (label is None) == (slot is None):
            raise option_error(KIND, "needs exactly one of the options 'token_label' or 'slot'")
        if label is not None and not isinstance(label, str):
            raise option_error(KIND, "option 'token_label' must be a string")
        if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int)):
            raise option_error(KIND, "option 'slot' must be an integer slot id")
        if not isinstance(pin, str):
            raise option_error(KIND, "option 'user_pin' (a string) is required")
        return cls(module=module, token_label=label, slot=slot, user_pin=pin)

    def token_name(self) -> str:
        return (
            f"token {self.token_label!r}" if self.token_label is not None else f"slot {self.slot}"
        )


@dataclass(frozen=True, kw_only=True)
class _Ref:
    token_label: str
    key_id: bytes


class Pkcs11KeyStore(KeyStore):
    """Non-extractable P-256 keys on a PKCS#11 token. See the module docs."""

    kind = KIND

    def __init__(self, options: Pkcs11Options) -> None:
        if _IMPORT_ERROR is not None:
            raise KeyStoreError(
                f"the pkcs11 key store needs python-pkcs11 (pip install 'keybound[pkcs11]'): "
                f"{_IMPORT_ERROR}"
            )
        self._options = options

    def describe(self) -> str:
        return f"{KIND} ({self._options.module}, {self._options.token_name()})"

    def options(self) -> Mapping[str, Any]:
        where = (
            {"token_label": self._options.token_label}
            if self._options.token_label is not None
            else {"slot": self._options.slot}
        )
        return {"module": self._options.module, **where}  # never the user PIN

    def available(self) -> bool:
        try:
            token = self._token(None)
            mechanisms = token.slot.get_mechanisms()
        except PKCS11Error:
            return False
        return {Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA} <= mechanisms

    def generate(self, label: str) -> KeyHandle:
        key_id = secrets.token_bytes(_ID_BYTES)
        try:
            with self._session(None, rw=True) as session:
                token_label = session.token.label
                public, _ = session.generate_keypair(
                    KeyType.EC,
                    id=key_id,
                    label=f"{label}/{key_id.hex()}",
                    store=True,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    public_template=_public_template(),
                    private_template=_private_template(),
                )
                spki = _spki(public[Attribute.EC_POINT])
        except PKCS11Error as exc:
            raise KeyGenerationFailed(self._explain("could not generate a key", exc)) from exc
        ref = {"format": REF_FORMAT, "token_label": token_label, "id": key_id.hex()}
        return KeyHandle(store=KIND, public_key=spki, ref=ref)

    def sign(self, handle: KeyHandle, message: bytes) -> bytes:
        ref = _decode_handle(handle)
        digest = hashlib.sha256(message).digest()
        try:
            with self._session(ref.token_label, rw=False) as session:
                key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, id=ref.key_id)
                if not isinstance(key, SignMixin):
                    raise NoSuchKey(f"object {ref.key_id.hex()} is not a signing key")
                raw = key.sign(digest, mechanism=Mechanism.ECDSA)
        except (NoSuchKey, MultipleObjectsReturned) as exc:
            raise KeyUnavailable(
                f"key {ref.key_id.hex()} is no longer on token {ref.token_label!r} "
                f"({type(exc).__name__})"
            ) from exc
        except PKCS11Error as exc:
            raise SigningFailed(self._explain("could not sign", exc, ref.token_label)) from exc
        return _checked_der(raw, handle.public_key, message)

    def delete(self, handle: KeyHandle) -> None:
        ref = _decode_handle(handle)
        try:
            with self._session(ref.token_label, rw=True) as session:
                for obj in list(session.get_objects({Attribute.ID: ref.key_id})):
                    with suppress(PKCS11Error):
                        obj.destroy()
        except PKCS11Error as exc:
            raise KeyStoreError(
                self._explain("could not delete a key", exc, ref.token_label)
            ) from exc

    # --------------------------------------------------------------------- token access

    def _lib(self) -> Pkcs11Lib:
        return pkcs11.lib(self._options.module)

    def _token(self, token_label: str | None) -> Token:
        lib = self._lib()
        if token_label is not None:
            return lib.get_token(token_label=token_label)
        if self._options.token_label is not None:
            return lib.get_token(token_label=self._options.token_label)
        for slot in lib.get_slots(token_present=True):
            if slot.slot_id == self._options.slot:
                return slot.get_token()
        raise TokenNotPresent(f"no token in slot {self._options.slot}")

    @contextmanager
    def _session(self, token_label: str | None, *, rw: bool) -> Iterator[Session]:
        """A logged-in session on ``token_label`` (default: the configured token)."""
        token = self._token(token_label)
        with _LOCK, token.open(rw=rw, user_pin=self._options.user_pin) as session:
            yield session

    def _explain(self, what: str, exc: PKCS11Error, token_label: str | None = None) -> str:
        """A message naming the module, the token and what failed. Never the PIN."""
        token = f"token {token_label!r}" if token_label else self._options.token_name()
        return f"PKCS#11 {token} via {self._options.module} {what}: {_reason(exc)}"


@register(KIND)
def open_pkcs11_store(state_dir: Path, options: Mapping[str, Any]) -> KeyStore:
    """Registry factory. ``state_dir`` is unused: the keys live on the token."""
    return Pkcs11KeyStore(Pkcs11Options.parse(options))


# ----------------------------------------------------------------------------- helpers


def _public_template() -> dict[Attribute, Any]:
    return {
        Attribute.EC_PARAMS: encode_named_curve_parameters(_P256_OID),
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
        Attribute.DERIVE: False,
    }


def _private_template() -> dict[Attribute, Any]:
    return {
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }


def _reason(exc: PKCS11Error) -> str:
    """Human text for a python-pkcs11 error (its class names the CKR_* code)."""
    reasons: list[tuple[type[PKCS11Error], str]] = [
        (PinIncorrect, "the user PIN was rejected (CKR_PIN_INCORRECT)"),
        (PinLocked, "the user PIN is locked (CKR_PIN_LOCKED)"),
        (PinExpired, "the user PIN has expired (CKR_PIN_EXPIRED)"),
        (PinLenRange, "the user PIN has the wrong length (CKR_PIN_LEN_RANGE)"),
        (UserPinNotInitialized, "the token's user PIN is not initialised"),
        (NoSuchToken, "no such token"),
        (MultipleTokensReturned, "several tokens have that label"),
        (TokenNotPresent, "the token is not present"),
    ]
    for kind, text in reasons:
        if isinstance(exc, kind):
            return text
    detail = str(exc).strip()
    return f"{type(exc).__name__}{': ' + detail if detail else ''}"


def _decode_handle(handle: KeyHandle) -> _Ref:
    if handle.store != KIND:
        raise KeyUnavailable(f"handle belongs to key store {handle.store!r}, not {KIND!r}")
    if handle.ref.get("format") != REF_FORMAT:
        raise KeyUnavailable(f"PKCS#11 key handle has unknown format {handle.ref.get('format')!r}")
    try:
        key_id = bytes.fromhex(handle.ref["id"])
        token_label = handle.ref["token_label"]
    except (KeyError, ValueError) as exc:
        raise KeyUnavailable(f"PKCS#11 key handle is missing or corrupt: {exc!r}") from exc
    if len(key_id) != _ID_BYTES or not token_label:
        raise KeyUnavailable("PKCS#11 key handle has a malformed key id or token label")
    return _Ref(token_label=token_label, key_id=key_id)


def _spki(ec_point: bytes) -> bytes:
    """SPKI DER from CKA_EC_POINT (a DER OCTET STRING, or a raw point on some tokens)."""
    point = ec_point
    if len(point) == _UNCOMPRESSED_POINT_LEN + 2 and point[:2] == b"\x04\x41":
        point = point[2:]
    if len(point) != _UNCOMPRESSED_POINT_LEN or point[0] != 0x04:
        raise PKCS11Error("token returned an EC point that is not an uncompressed P-256 point")
    x, y = (int.from_bytes(point[i : i + 32], "big") for i in (1, 33))
    try:
        return p256_public_from_point(x, y)
    except ValueError as exc:
        raise PKCS11Error(f"token returned an invalid P-256 point: {exc}") from exc


def _checked_der(raw: bytes, public_key: bytes, message: bytes) -> bytes:
    """DER of the token's ``r || s``, verified against the handle's public key."""
    if len(raw) != 64:
        raise SigningFailed(f"token returned a {len(raw)}-byte ECDSA signature, expected 64")
    signature = der_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        verify_signature(
            public_key=public_key, algorithm=Algorithm.ES256, message=message, signature=signature
        )
    except InvalidSignature as exc:
        raise KeyUnavailable(
            "the key on the token no longer matches the handle's public key"
        ) from exc
    return signature
