"""Trust anchors: pinned public keys, shipped with the package, changed only by configuration.

An anchor is a *key*, not a certificate: Google's RSA attestation root exists as three
certificates (2016, 2019, 2022) over one key, and RKP chains leave the root out altogether,
so a path is anchored where a certificate is signed by (or carries) an anchor's key.

Shipped anchors (``keybound/attestation/roots/<format>/*.pem``):

=================  =======================================================================
android-key        Google Hardware Attestation Root (RSA 4096, the 2022-2042 certificate)
                   and Google "Key Attestation CA1" (ECDSA P-384, 2025-2035)
apple-appattest    Apple App Attestation Root CA (P-384, 2020-2045)
tpm                Microsoft TPM Root Certificate Authority 2014 (the AIK CA behind
                   Windows Hello's ``tpm`` attestations)
=================  =======================================================================

Anchors are never taken from a request and never fetched at run time. An operator adds
anchors from PEM files (certificates or bare ``PUBLIC KEY`` blocks) and removes any anchor
by its key's SHA-256 (:meth:`TrustStore.configured`); a TPM deployment adds its TPM
vendors' EK/AK CA roots (or swtpm's local CA) this way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from keybound.attestation._der import certificate_parts
from keybound.attestation.base import AttestationFormat, Reason, fail
from keybound.errors import ConfigurationInvalid

#: Largest PEM file read as anchors (a bundle of a few dozen certificates).
MAX_ANCHOR_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class TrustAnchor:
    """One pinned key. ``key_sha256`` (hex SHA-256 of the SubjectPublicKeyInfo) names it."""

    label: str
    spki: bytes
    key_sha256: str
    key: PublicKeyTypes = field(compare=False, repr=False)

    @classmethod
    def from_spki(cls, spki: bytes, *, label: str) -> TrustAnchor:
        key = serialization.load_der_public_key(spki)
        canonical = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(
            label=label, spki=canonical, key=key, key_sha256=hashlib.sha256(canonical).hexdigest()
        )


@dataclass(frozen=True)
class TrustStore:
    """An immutable set of anchors, deduplicated by key."""

    anchors: tuple[TrustAnchor, ...] = ()

    def __post_init__(self) -> None:
        unique: dict[str, TrustAnchor] = {}
        for anchor in self.anchors:
            unique.setdefault(anchor.key_sha256, anchor)
        object.__setattr__(self, "anchors", tuple(unique.values()))

    # ------------------------------------------------------------------ construction

    @classmethod
    def builtin(cls, fmt: AttestationFormat) -> TrustStore:
        """The anchors shipped for ``fmt`` (see the module docs)."""
        folder = resources.files("keybound.attestation").joinpath("roots")
        folder = folder.joinpath(_FOLDERS[AttestationFormat(fmt)])
        anchors: list[TrustAnchor] = []
        for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
            if item.name.endswith(".pem"):
                anchors.extend(anchors_from_pem(item.read_bytes(), label=item.name))
        return cls(tuple(anchors))

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> TrustStore:
        """Anchors from PEM files (certificates and/or ``PUBLIC KEY`` blocks)."""
        anchors: list[TrustAnchor] = []
        for path in paths:
            anchors.extend(_anchors_from_file(Path(path)))
        return cls(tuple(anchors))

    @classmethod
    def configured(
        cls,
        fmt: AttestationFormat,
        *,
        add_files: Iterable[Path | str] = (),
        remove_keys: Iterable[str] = (),
        include_builtin: bool = True,
    ) -> TrustStore:
        """The operator's store for ``fmt``: the shipped anchors (unless turned off), plus
        anchors from ``add_files``, minus the anchors whose key SHA-256 is in
        ``remove_keys``. An unknown key in ``remove_keys`` is a configuration error, so a
        typo cannot leave an anchor trusted."""
        base = cls.builtin(fmt).anchors if include_builtin else ()
        store = cls(base + cls.from_files(add_files).anchors)
        return store.without_keys(remove_keys)

    def with_anchors(self, anchors: Iterable[TrustAnchor]) -> TrustStore:
        return TrustStore(self.anchors + tuple(anchors))

    def without_keys(self, key_sha256s: Iterable[str]) -> TrustStore:
        removing = {value.strip().lower().replace(":", "") for value in key_sha256s}
        unknown = removing - {anchor.key_sha256 for anchor in self.anchors}
        if unknown:
            raise ConfigurationInvalid(f"no trust anchor has key SHA-256 {sorted(unknown)}")
        return TrustStore(tuple(a for a in self.anchors if a.key_sha256 not in removing))

    # ----------------------------------------------------------------------- lookup

    def by_spki(self, spki: bytes) -> TrustAnchor | None:
        """The anchor whose key is ``spki`` (compared canonically), if any."""
        try:
            key = serialization.load_der_public_key(spki)
            canonical = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except Exception:  # an unparseable key is simply not an anchor
            return None
        digest = hashlib.sha256(canonical).hexdigest()
        return next((a for a in self.anchors if a.key_sha256 == digest), None)

    def __len__(self) -> int:
        return len(self.anchors)


_FOLDERS = {
    AttestationFormat.ANDROID_KEY: "android",
    AttestationFormat.APPLE_APP_ATTEST: "apple",
    AttestationFormat.TPM: "tpm",
}


def anchors_from_pem(data: bytes, *, label: str) -> list[TrustAnchor]:
    """Every certificate and public key in a PEM bundle, as anchors."""
    anchors: list[TrustAnchor] = []
    for index, block in enumerate(_pem_blocks(data)):
        name = f"{label}#{index}"
        kind, der = block
        if kind == "CERTIFICATE":
            anchors.append(TrustAnchor.from_spki(certificate_parts(der).spki, label=name))
        elif kind == "PUBLIC KEY":
            anchors.append(TrustAnchor.from_spki(der, label=name))
    if not anchors:
        raise ConfigurationInvalid(f"{label}: no CERTIFICATE or PUBLIC KEY block")
    return anchors


def _anchors_from_file(path: Path) -> list[TrustAnchor]:
    try:
        if path.stat().st_size > MAX_ANCHOR_FILE_BYTES:
            raise ConfigurationInvalid(f"{path}: larger than {MAX_ANCHOR_FILE_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationInvalid(f"{path}: cannot read trust anchors: {exc}") from exc
    try:
        return anchors_from_pem(data, label=path.name)
    except ConfigurationInvalid:
        raise
    except Exception as exc:  # a broken anchor file is a configuration error
        raise ConfigurationInvalid(f"{path}: not usable as trust anchors: {exc}") from exc


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    blocks: list[tuple[str, bytes]] = []
    for obj in x509.load_pem_x509_certificates(data) if b"CERTIFICATE" in data else []:
        blocks.append(("CERTIFICATE", obj.public_bytes(serialization.Encoding.DER)))
    text = data.decode("ascii", errors="replace")
    begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    start = text.find(begin)
    while start != -1:
        stop = text.find(end, start)
        if stop == -1:
            raise fail(Reason.MALFORMED, "PUBLIC KEY block without END line")
        pem = text[start : stop + len(end)].encode("ascii")
        key = serialization.load_pem_public_key(pem)
        blocks.append(
            (
                "PUBLIC KEY",
                key.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )
        )
        start = text.find(begin, stop)
    return blocks
