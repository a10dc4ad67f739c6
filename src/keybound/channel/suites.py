"""The HPKE suites on the allow-list, with their KEMs and AEADs (docs/channel.md §2)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybound.channel.errors import DecryptionFailed
from keybound.channel.framing import _KDF_HKDF_SHA256, _RESPONSE_KEY_LABEL, NONCE_SIZE, lp


@dataclass(frozen=True, kw_only=True)
class _Aead:
    """One AEAD as the channel uses it: fixed key size, 12-byte nonces, 16-byte tags."""

    aead_id: int
    key_size: int
    cipher: Callable[[bytes], AESGCM | ChaCha20Poly1305]

    def seal(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        self._check(key, nonce)
        return self.cipher(key).encrypt(nonce, plaintext, aad)

    def open(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Return the plaintext or raise DecryptionFailed."""
        self._check(key, nonce)
        try:
            return self.cipher(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise DecryptionFailed() from None

    def _check(self, key: bytes, nonce: bytes) -> None:
        if len(key) != self.key_size:
            raise ValueError(f"AEAD key must be {self.key_size} bytes")
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"AEAD nonce must be {NONCE_SIZE} bytes")


_AES_128_GCM: Final = _Aead(aead_id=0x0001, key_size=16, cipher=AESGCM)
_AES_256_GCM: Final = _Aead(aead_id=0x0002, key_size=32, cipher=AESGCM)  # key wrapping only
_CHACHA20_POLY1305: Final = _Aead(aead_id=0x0003, key_size=32, cipher=ChaCha20Poly1305)


def _hkdf_sha256(*, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869). Raises ValueError for a length above 255 * 32."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


# --------------------------------------------------------------------------- KEMs (§2)

_HpkePrivate = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
_HpkePublic = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey


class _Kem(Protocol):
    kem_id: ClassVar[int]
    enc_size: ClassVar[int]
    private_size: ClassVar[int]
    public_size: ClassVar[int]
    hpke_kem: ClassVar[hpke.KEM]

    def generate(self) -> bytes: ...
    def public_from_private(self, private: bytes) -> bytes: ...
    def load_private(self, private: bytes) -> _HpkePrivate: ...
    def load_public(self, public: bytes) -> _HpkePublic: ...


class _X25519Kem:
    """DHKEM(X25519, HKDF-SHA256): raw 32-byte private scalar and public u-coordinate."""

    kem_id: ClassVar[int] = 0x0020
    enc_size: ClassVar[int] = 32
    private_size: ClassVar[int] = 32
    public_size: ClassVar[int] = 32
    hpke_kem: ClassVar[hpke.KEM] = hpke.KEM.X25519

    def generate(self) -> bytes:
        return x25519.X25519PrivateKey.generate().private_bytes_raw()

    def public_from_private(self, private: bytes) -> bytes:
        return self.load_private(private).public_key().public_bytes_raw()

    def load_private(self, private: bytes) -> x25519.X25519PrivateKey:
        return x25519.X25519PrivateKey.from_private_bytes(private)

    def load_public(self, public: bytes) -> x25519.X25519PublicKey:
        return x25519.X25519PublicKey.from_public_bytes(public)


class _MLKEM768X25519Kem:
    """ML-KEM-768 + X25519 hybrid ("X-Wing", HPKE KEM id 0x647A).

    Private key (keybound storage format): ML-KEM-768 seed d||z (64) || X25519 scalar (32).
    Public key: ML-KEM-768 encapsulation key (1184) || X25519 public key (32).
    """

    kem_id: ClassVar[int] = 0x647A
    enc_size: ClassVar[int] = 1088 + 32
    private_size: ClassVar[int] = 64 + 32
    public_size: ClassVar[int] = 1184 + 32
    hpke_kem: ClassVar[hpke.KEM] = hpke.KEM.MLKEM768_X25519

    def generate(self) -> bytes:
        seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
        return seed + x25519.X25519PrivateKey.generate().private_bytes_raw()

    def public_from_private(self, private: bytes) -> bytes:
        mlkem_key, x_key = self._split_private(private)
        return mlkem_key.public_key().public_bytes_raw() + x_key.public_key().public_bytes_raw()

    def load_private(self, private: bytes) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(*self._split_private(private))

    def load_public(self, public: bytes) -> hpke.MLKEM768X25519PublicKey:
        if len(public) != self.public_size:
            raise ValueError("ML-KEM-768+X25519 public key must be 1216 bytes")
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public[:1184]),
            x25519.X25519PublicKey.from_public_bytes(public[1184:]),
        )

    def _split_private(
        self, private: bytes
    ) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
        if len(private) != self.private_size:
            raise ValueError("ML-KEM-768+X25519 private key must be 96 bytes")
        return (
            mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64]),
            x25519.X25519PrivateKey.from_private_bytes(private[64:]),
        )


class ChannelSuite(StrEnum):
    """HPKE suites on the allow-list. The suite comes from the stored key, never the wire."""

    X25519_SHA256_AES128GCM = "X25519_SHA256_AES128GCM"
    X25519_SHA256_CHACHA20POLY1305 = "X25519_SHA256_CHACHA20POLY1305"
    MLKEM768X25519_SHA256_AES128GCM = "MLKEM768X25519_SHA256_AES128GCM"


DEFAULT_SUITE: Final = ChannelSuite.X25519_SHA256_AES128GCM


@dataclass(frozen=True, kw_only=True)
class _SuiteSpec:
    kem: _Kem
    aead: _Aead
    hpke_suite: hpke.Suite
    suite_id: bytes  # u16 kem_id || u16 kdf_id || u16 aead_id, as in RFC 9180 §5.1
    response_key_info: bytes  # the HKDF info of every response key (§4.1)


def _spec(kem: _Kem, aead: _Aead, hpke_aead: hpke.AEAD) -> _SuiteSpec:
    suite_id = struct.pack(">HHH", kem.kem_id, _KDF_HKDF_SHA256, aead.aead_id)
    return _SuiteSpec(
        kem=kem,
        aead=aead,
        hpke_suite=hpke.Suite(kem.hpke_kem, hpke.KDF.HKDF_SHA256, hpke_aead),
        suite_id=suite_id,
        response_key_info=lp(_RESPONSE_KEY_LABEL, suite_id),
    )


_SUITES: Final[dict[ChannelSuite, _SuiteSpec]] = {
    ChannelSuite.X25519_SHA256_AES128GCM: _spec(_X25519Kem(), _AES_128_GCM, hpke.AEAD.AES_128_GCM),
    ChannelSuite.X25519_SHA256_CHACHA20POLY1305: _spec(
        _X25519Kem(), _CHACHA20_POLY1305, hpke.AEAD.CHACHA20_POLY1305
    ),
    ChannelSuite.MLKEM768X25519_SHA256_AES128GCM: _spec(
        _MLKEM768X25519Kem(), _AES_128_GCM, hpke.AEAD.AES_128_GCM
    ),
}
_SUITE_BY_ID: Final[dict[bytes, ChannelSuite]] = {s.suite_id: n for n, s in _SUITES.items()}


def suite_id(suite: ChannelSuite) -> bytes:
    """The 6-byte wire id of ``suite``: HPKE kem_id || kdf_id || aead_id (§2)."""
    return _SUITES[suite].suite_id
