"""Certificate paths for attestation: ordered chains anchored by key, and the checks
(RFC 5280 §6.1, as each platform profiles it) that each verifier runs as its own steps.

A presented chain is leaf first. :func:`build_path` finds the first certificate that an
anchor's key signed (or that carries an anchor's key itself) and requires every earlier
certificate to be named and signed by the next one; after that point only a copy of the
root (a certificate with the anchor's key) may follow. It is deliberately not a general
path *search*: the platforms send ordered chains, and a re-ordered one is refused.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Collection
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtensionOID

from keybound.attestation import certext
from keybound.attestation._der import certificate_parts, load_certificate, load_chain
from keybound.attestation.base import AttestationFailed, Reason, fail
from keybound.attestation.certext import RawExtension
from keybound.attestation.trust import TrustAnchor, TrustStore

BASIC_CONSTRAINTS = ExtensionOID.BASIC_CONSTRAINTS.dotted_string
KEY_USAGE = ExtensionOID.KEY_USAGE.dotted_string

#: Hashes accepted in certificate signatures (SHA-1 and MD5 certificates are refused).
CERT_SIGNATURE_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
#: Smallest RSA modulus accepted for a key that signs certificates or attestations.
MIN_RSA_BITS = 2048
#: Elliptic curves accepted for a key that signs certificates or attestations.
CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

#: Extensions every verifier understands (RFC 5280 §4.2.1); a *critical* extension outside
#: this set and the verifier's own additions refuses the certificate (§4.2).
STANDARD_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS.dotted_string,
        ExtensionOID.KEY_USAGE.dotted_string,
        ExtensionOID.EXTENDED_KEY_USAGE.dotted_string,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string,
        ExtensionOID.CERTIFICATE_POLICIES.dotted_string,
        ExtensionOID.CRL_DISTRIBUTION_POINTS.dotted_string,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS.dotted_string,
    }
)


@dataclass(frozen=True, kw_only=True)
class CertPath:
    """A verified path: ``certificates[i]`` is signed by ``certificates[i + 1]``'s key and
    the last one by ``anchor`` (or *is* the anchor when ``ends_at_anchor``)."""

    certificates: tuple[x509.Certificate, ...]
    ders: tuple[bytes, ...]
    extensions: tuple[dict[str, RawExtension], ...]
    anchor: TrustAnchor
    ends_at_anchor: bool

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    def extension(self, index: int, oid: str) -> RawExtension | None:
        return self.extensions[index].get(oid)

    def extension_value(self, index: int, oid: str) -> bytes | None:
        """The value of extension ``oid`` of certificate ``index``, if present."""
        found = self.extensions[index].get(oid)
        return None if found is None else found.value


def build_path(chain: object, trust: TrustStore, *, what: str = "chain") -> CertPath:
    """Load ``chain`` (DER certificates, leaf first) and anchor it by key in ``trust``."""
    ders = load_chain(chain, what=what)
    certificates: list[x509.Certificate] = []
    unusable = ""
    for index, der in enumerate(ders):
        try:
            certificates.append(load_certificate(der, what=f"{what}[{index}]"))
        except AttestationFailed as exc:
            if index == 0:
                raise
            # A certificate we refuse to parse cannot carry a path (docs/attestation.md).
            unusable = f"; {exc.detail}"
            break
    for index, certificate in enumerate(certificates):
        anchor, is_anchor = _anchor_for(certificate, ders[index], trust)
        if anchor is not None:
            break
    else:
        raise fail(Reason.CHAIN_UNTRUSTED, f"no trusted anchor signed the {what}{unusable}")
    for child, parent in itertools.pairwise(certificates[: index + 1]):
        if child.issuer != parent.subject:
            raise fail(
                Reason.CHAIN_BROKEN,
                f"{what}: issuer name does not match the next certificate's subject",
            )
        try:
            verify_certificate_signature(child, public_key_of(parent))
        except AttestationFailed as exc:
            raise fail(exc.reason, f"{what}: {exc.detail}") from exc
    for trailing in ders[index + 1 :]:
        # Only the root as the device sent it (same key as the anchor) may follow the path.
        if trust.by_spki(certificate_parts(trailing).spki) != anchor:
            raise fail(Reason.CHAIN_BROKEN, f"{what}: certificates follow the anchored path")
    kept = ders[: index + 1]
    return CertPath(
        certificates=tuple(certificates[: index + 1]),
        ders=tuple(kept),
        extensions=tuple(certext.read_extensions(der) for der in kept),
        anchor=anchor,
        ends_at_anchor=is_anchor,
    )


def _anchor_for(
    certificate: x509.Certificate, der: bytes, trust: TrustStore
) -> tuple[TrustAnchor, bool] | tuple[None, bool]:
    """The anchor that signed ``certificate`` (False) or whose key it carries (True)."""
    own = trust.by_spki(certificate_parts(der).spki)
    for anchor in trust.anchors:
        try:
            verify_certificate_signature(certificate, anchor.key)
        except AttestationFailed:
            continue
        return anchor, False
    if own is not None:
        return own, True
    return None, False


def verify_certificate_signature(certificate: x509.Certificate, key: PublicKeyTypes) -> None:
    """Check that ``key`` signed ``certificate``: CHAIN_BROKEN or UNSUPPORTED_ALGORITHM."""
    check_signing_key(key)
    try:
        hash_algorithm = certificate.signature_hash_algorithm
        parameters = certificate.signature_algorithm_parameters
    except UnsupportedAlgorithm as exc:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, "certificate signature algorithm") from exc
    signature, data = certificate.signature, certificate.tbs_certificate_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if not isinstance(hash_algorithm, CERT_SIGNATURE_HASHES) or not isinstance(
                parameters, padding.PKCS1v15 | padding.PSS
            ):
                raise fail(Reason.UNSUPPORTED_ALGORITHM, "RSA certificate signature scheme")
            key.verify(signature, data, parameters, hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(parameters, ec.ECDSA) or not isinstance(
                parameters.algorithm, CERT_SIGNATURE_HASHES
            ):
                raise fail(Reason.UNSUPPORTED_ALGORITHM, "ECDSA certificate signature scheme")
            key.verify(signature, data, parameters)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if hash_algorithm is not None:
                raise fail(Reason.CHAIN_BROKEN, "signature algorithm does not fit the key")
            key.verify(signature, data)
        else:
            raise fail(Reason.UNSUPPORTED_ALGORITHM, f"issuer key {type(key).__name__}")
    except InvalidSignature as exc:
        raise fail(Reason.CHAIN_BROKEN, "certificate signature does not verify") from exc
    except (TypeError, ValueError) as exc:  # key type does not fit the signature algorithm
        raise fail(Reason.CHAIN_BROKEN, "signature algorithm does not fit the key") from exc


def public_key_of(certificate: x509.Certificate) -> PublicKeyTypes:
    """The certificate's key: UNSUPPORTED_ALGORITHM or MALFORMED when it cannot be loaded."""
    try:
        return certificate.public_key()
    except UnsupportedAlgorithm as exc:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, "certificate key algorithm") from exc
    except (ValueError, TypeError) as exc:
        raise fail(Reason.MALFORMED, "certificate public key does not parse") from exc


def check_signing_key(key: PublicKeyTypes) -> None:
    """Refuse keys too weak (or too exotic) to sign certificates or attestations."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, f"RSA key of {key.key_size} bits")
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, CURVES):
        raise fail(Reason.UNSUPPORTED_ALGORITHM, f"curve {key.curve.name}")


def check_issuers(path: CertPath, *, exempt: Collection[int] = ()) -> None:
    """RFC 5280 §6.1.4 (k), (l), (m), (n): every certificate that signed another one in the
    path is a CA (basicConstraints cA=TRUE) allowed to sign certificates (keyUsage with
    keyCertSign), within its pathLenConstraint. ``exempt`` holds path indexes the caller
    has justified otherwise (Android ATTEST_KEY certificates)."""
    for index in range(1, len(path.certificates)):
        if index in exempt:
            continue
        constraints = certext.basic_constraints(path.extension(index, BASIC_CONSTRAINTS))
        usage = certext.key_usage(path.extension(index, KEY_USAGE))
        if constraints is None or not constraints.ca:
            raise fail(Reason.ISSUER_NOT_CA, f"certificate {index} signs but is not a CA")
        if usage is None or not usage.key_cert_sign:
            raise fail(Reason.ISSUER_NOT_CA, f"certificate {index} lacks keyCertSign")
        below = sum(1 for lower in range(1, index) if lower not in exempt)
        if constraints.path_length is not None and below > constraints.path_length:
            raise fail(Reason.PATH_LENGTH_EXCEEDED, f"certificate {index} pathLen exceeded")


def check_validity(
    path: CertPath,
    now: dt.datetime,
    *,
    skip: Collection[int] = (),
    ignore_expiry: bool = False,
) -> None:
    """RFC 5280 §6.1.3 (a)(2): each certificate's validity period contains ``now``.
    A certificate that *is* the anchor is not checked (anchors are keys)."""
    last = len(path.certificates) - (1 if path.ends_at_anchor else 0)
    for index in range(last):
        if index in skip:
            continue
        certificate = path.certificates[index]
        if now < certificate.not_valid_before_utc:
            raise fail(Reason.CHAIN_NOT_YET_VALID, f"certificate {index} is not yet valid")
        if now > certificate.not_valid_after_utc and not ignore_expiry:
            raise fail(
                Reason.CHAIN_EXPIRED,
                f"certificate {index} expired {certificate.not_valid_after_utc:%Y-%m-%d}",
            )


def check_critical_extensions(
    path: CertPath, *, understood: Collection[str], skip: Collection[int] = ()
) -> None:
    """RFC 5280 §4.2: refuse a certificate with a critical extension nobody here processes."""
    allowed = STANDARD_EXTENSIONS | frozenset(understood)
    for index, extensions in enumerate(path.extensions):
        if index in skip:
            continue
        for oid, extension in extensions.items():
            if extension.critical and oid not in allowed:
                raise fail(
                    Reason.CRITICAL_EXTENSION_UNKNOWN, f"certificate {index}: critical {oid}"
                )


def spki_of(certificate: x509.Certificate) -> bytes:
    """The certificate's SubjectPublicKeyInfo exactly as encoded in it."""
    return certificate_parts(certificate.public_bytes(serialization.Encoding.DER)).spki


def same_public_key(spki: bytes, expected: bytes) -> bool:
    """Whether two SubjectPublicKeyInfo encodings hold the same key (canonical DER)."""
    return canonical_spki(spki) == canonical_spki(expected)


def canonical_spki(spki: bytes) -> bytes:
    """``spki`` re-encoded by cryptography; UNSUPPORTED_ALGORITHM if it cannot load it."""
    try:
        key = serialization.load_der_public_key(spki)
    except UnsupportedAlgorithm as exc:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, "public key algorithm not supported") from exc
    except (ValueError, TypeError) as exc:
        raise fail(Reason.MALFORMED, "public key does not parse") from exc
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
