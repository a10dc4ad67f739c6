"""The server side of TPM credential activation: TPM2_MakeCredential in software.

The server encrypts a fresh secret so that only the TPM holding the EK can decrypt it, and
only for the AK with the given Name (TPM 2.0 Library Part 1 §24 "Credential Protection",
[P1 24]; Part 3 §12.6 TPM2_MakeCredential / §12.5 TPM2_ActivateCredential). The device's
TPM returns the secret through ActivateCredential; the server compares it (constant time)
and from then on trusts that AK as resident in the same TPM as the EK, whose certificate
it verified (:func:`keybound.attestation.tpm.verify_ek_certificate`).

Construction, for an EK with name algorithm H and symmetric definition AES-k-CFB:

- seed: RSA EK: |H| random bytes, sent as RSA-OAEP(H, label "IDENTITY\\0") [P1 B.10.4];
  ECC EK: an ephemeral key on the EK's curve, Z = ECDH x-coordinate,
  seed = KDFe(H, Z, "IDENTITY", ephemeral.x, EK.x, |H| bits), sent as the ephemeral
  TPMS_ECC_POINT [P1 C.6.4];
- symKey = KDFa(H, seed, "STORAGE", AK Name, "", k) [P1 24.4];
- encIdentity = AES-k-CFB(symKey, IV = 0) of TPM2B_DIGEST(secret) [P1 24.4];
- HMACkey = KDFa(H, seed, "INTEGRITY", "", "", |H| bits) and
  outerHMAC = HMAC-H(HMACkey, encIdentity || AK Name) [P1 24.5];
- credentialBlob (TPM2B_ID_OBJECT's buffer) = TPM2B_DIGEST(outerHMAC) || encIdentity.

KDFa is SP 800-108 counter-mode HMAC and KDFe SP 800-56A concatenation, both as TPM 2.0
Part 1 §11.4.10 defines them (labels end with their NUL octet).
"""

from __future__ import annotations

import hmac
import os
from typing import NamedTuple

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from keybound.attestation.base import Reason, fail
from keybound.attestation.tpm_structures import (
    HASHES,
    ObjectAttributes,
    TpmAlg,
    parse_public,
)


class MadeCredential(NamedTuple):
    """What TPM2_ActivateCredential takes: ``credential_blob`` is TPM2B_ID_OBJECT's buffer,
    ``encrypted_secret`` TPM2B_ENCRYPTED_SECRET's (size prefixes not included)."""

    credential_blob: bytes
    encrypted_secret: bytes


#: TCG EK templates by key (EK Credential Profile 2.x, Annex B): name hash and AES key size,
#: used when the EK comes as a public key (from its certificate) rather than a TPMT_PUBLIC.
_TEMPLATE_BY_RSA_BITS = {
    2048: (TpmAlg.SHA256, 128),
    3072: (TpmAlg.SHA384, 256),
    4096: (TpmAlg.SHA384, 256),
}
_TEMPLATE_BY_CURVE = {
    "secp256r1": (TpmAlg.SHA256, 128),
    "secp384r1": (TpmAlg.SHA384, 256),
    "secp521r1": (TpmAlg.SHA512, 256),
}


def make_credential(
    ek_public: bytes | PublicKeyTypes, ak_name: bytes, secret: bytes
) -> MadeCredential:
    """Protect ``secret`` for the TPM holding ``ek_public`` and the AK named ``ak_name``.

    ``ek_public`` is the EK's TPMT_PUBLIC (marshalled; its nameAlg and symmetric
    definition are used) or its public key from the EK certificate (the TCG default EK
    template for that key type and size is assumed). ``ak_name`` is nameAlg || H(AK's
    TPMT_PUBLIC); ``secret`` at most as long as the EK name hash's digest.
    """
    key, name_hash, aes_bits = _ek_parameters(ek_public)
    digest_size = name_hash().digest_size
    if not 0 < len(secret) <= digest_size:
        raise fail(Reason.MALFORMED, f"secret must be 1..{digest_size} bytes")
    _check_name(ak_name)
    if isinstance(key, rsa.RSAPublicKey):
        seed = os.urandom(digest_size)
        encrypted_secret = key.encrypt(
            seed,
            padding.OAEP(
                mgf=padding.MGF1(name_hash()), algorithm=name_hash(), label=b"IDENTITY\x00"
            ),
        )
    else:
        ephemeral = ec.generate_private_key(key.curve)
        shared_x = ephemeral.exchange(ec.ECDH(), key)
        size = (key.curve.key_size + 7) // 8
        own = ephemeral.public_key().public_numbers()
        own_x, own_y = own.x.to_bytes(size, "big"), own.y.to_bytes(size, "big")
        ek_x = key.public_numbers().x.to_bytes(size, "big")
        seed = kdfe(name_hash, shared_x, b"IDENTITY", own_x, ek_x, digest_size * 8)
        encrypted_secret = _sized(own_x) + _sized(own_y)
    sym_key = kdfa(name_hash, seed, b"STORAGE", ak_name, b"", aes_bits)
    # TPM 2.0 fixes CFB-128 with a zero IV for credentials (cryptography files CFB under
    # "decrepit"; the TPM leaves no choice).
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(_sized(secret)) + encryptor.finalize()
    hmac_key = kdfa(name_hash, seed, b"INTEGRITY", b"", b"", digest_size * 8)
    outer_hmac = hmac.new(hmac_key, enc_identity + ak_name, name_hash().name).digest()
    return MadeCredential(
        credential_blob=_sized(outer_hmac) + enc_identity, encrypted_secret=encrypted_secret
    )


def kdfa(
    hash_type: type[hashes.HashAlgorithm],
    key: bytes,
    label: bytes,
    context_u: bytes,
    context_v: bytes,
    bits: int,
) -> bytes:
    """KDFa [P1 11.4.10.2]: HMAC-H(key, [i]32 || label || 0x00 || contextU || contextV ||
    [bits]32) for i = 1, 2, ..., truncated to ``bits`` (top bits masked)."""
    output = b""
    counter = 1
    while len(output) * 8 < bits:
        block = counter.to_bytes(4, "big") + label + b"\x00" + context_u + context_v
        output += hmac.new(key, block + bits.to_bytes(4, "big"), hash_type().name).digest()
        counter += 1
    return _truncate(output, bits)


def kdfe(
    hash_type: type[hashes.HashAlgorithm],
    z: bytes,
    label: bytes,
    party_u: bytes,
    party_v: bytes,
    bits: int,
) -> bytes:
    """KDFe [P1 11.4.10.3]: H([i]32 || Z || label || 0x00 || partyUInfo || partyVInfo)
    for i = 1, 2, ..., truncated to ``bits``."""
    output = b""
    counter = 1
    while len(output) * 8 < bits:
        hasher = hashes.Hash(hash_type())
        hasher.update(counter.to_bytes(4, "big") + z + label + b"\x00" + party_u + party_v)
        output += hasher.finalize()
        counter += 1
    return _truncate(output, bits)


def _truncate(output: bytes, bits: int) -> bytes:
    result = bytearray(output[: (bits + 7) // 8])
    if bits % 8:
        result[0] &= (1 << (bits % 8)) - 1
    return bytes(result)


def _sized(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _check_name(name: bytes) -> None:
    if len(name) < 2:
        raise fail(Reason.MALFORMED, "AK name too short")
    algorithm = HASHES.get(int.from_bytes(name[:2], "big"))
    if algorithm is None:
        raise fail(Reason.UNSUPPORTED_ALGORITHM, "AK name algorithm")
    if len(name) != 2 + algorithm().digest_size:
        raise fail(Reason.MALFORMED, "AK name length does not fit its algorithm")


def _ek_parameters(
    ek_public: bytes | PublicKeyTypes,
) -> tuple[rsa.RSAPublicKey | ec.EllipticCurvePublicKey, type[hashes.HashAlgorithm], int]:
    if isinstance(ek_public, bytes | bytearray):
        public = parse_public(bytes(ek_public), what="EK TPMT_PUBLIC")
        wanted = ObjectAttributes.RESTRICTED | ObjectAttributes.DECRYPT
        if (
            public.attributes & wanted != wanted
            or public.attributes & ObjectAttributes.SIGN_ENCRYPT
        ):
            raise fail(Reason.TPM_KEY_ATTRIBUTES, "the EK is not a restricted decryption key")
        algorithm, bits, mode = public.symmetric
        if algorithm != TpmAlg.AES or mode != TpmAlg.CFB or bits not in (128, 192, 256):
            raise fail(Reason.UNSUPPORTED_ALGORITHM, "EK symmetric definition is not AES-CFB")
        name_hash = HASHES.get(public.name_alg)
        if name_hash is None or name_hash is hashes.SHA1:
            raise fail(Reason.UNSUPPORTED_ALGORITHM, f"EK nameAlg 0x{public.name_alg:04x}")
        return public.public_key(), name_hash, bits
    if isinstance(ek_public, rsa.RSAPublicKey) and ek_public.key_size in _TEMPLATE_BY_RSA_BITS:
        alg, bits = _TEMPLATE_BY_RSA_BITS[ek_public.key_size]
        return ek_public, HASHES[alg], bits
    if (
        isinstance(ek_public, ec.EllipticCurvePublicKey)
        and ek_public.curve.name in _TEMPLATE_BY_CURVE
    ):
        alg, bits = _TEMPLATE_BY_CURVE[ek_public.curve.name]
        return ek_public, HASHES[alg], bits
    raise fail(Reason.UNSUPPORTED_ALGORITHM, f"EK key {type(ek_public).__name__}")
