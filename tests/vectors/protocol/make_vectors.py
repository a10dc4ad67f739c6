"""Generate tests/vectors/protocol/transcripts.json: the keybound wire-protocol test vectors.

Usage (from the repository root)::

    .venv/bin/python tests/vectors/protocol/make_vectors.py          # (re)write the file
    .venv/bin/python tests/vectors/protocol/make_vectors.py --check  # exit 1 if it would change

Every input is fixed in this file: identifiers, challenges, the PIN and its salt, and the
private keys (each scalar is SHA-256 of a fixed label, reduced into [1, n-1]). Signatures
are ECDSA P-256 / SHA-256, DER-encoded, made with RFC 6979 deterministic nonces where the
``cryptography`` build supports them. To stay reproducible byte for byte on any build, a
signature already in the file is kept as long as it still verifies over the same transcript
with the same key; a new one is only made when an input changed.

The transcript bytes are built here independently of ``keybound.protocol.transcript`` (a
second implementation of docs/protocol.md §4); ``tests/test_protocol.py`` checks that the
library reproduces them byte for byte. The request bodies use the library's models, so the
vector file also shows exactly what goes on the wire.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "transcripts.json"
FORMAT_VERSION = 1

# secp256r1 group order
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

SIGNATURE_LABEL = b"keybound-signature-v1"
PIN_PROOF_LABEL = b"keybound-pin-proof-v1"
FIELD_NAMES = (
    "label",
    "purpose",
    "applicationId",
    "deviceId",
    "operationId",
    "challenge",
    "contextHash",
    "softwarePublicKey",
    "hardwarePublicKey",
    "authMethod",
    "hwKeyClientStatus",
)

# ------------------------------------------------------------------------------ fixed inputs

APPLICATION_ID = "bank.example"
DEVICE_A = "3f2c6f1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f"  # has a hardware key and a PIN
DEVICE_B = "7b9d2e4f-1c3a-4b5d-8f6e-9a0b1c2d3e4f"  # software only
OP_ACTIVATE_A = "c0ffee00-0000-4000-8000-00000000000a"
OP_ACTIVATE_B = "c0ffee00-0000-4000-8000-00000000000b"
OP_AUTH_A = "c0ffee00-0000-4000-8000-0000000000a1"  # backend-initiated, with a context
OP_AUTH_B = "c0ffee00-0000-4000-8000-0000000000b1"  # device-initiated, no context
OP_DECLINE_A = "c0ffee00-0000-4000-8000-0000000000a2"  # backend-initiated, declined
PUSH_TOKEN_A = {"provider": "fcm", "token": "dGVzdC10b2tlbg:APA91bHkeybound-vector"}
OP_SIGN_A = "c0ffee00-0000-4000-8000-0000000000a3"  # a signature operation (§3.2.5)

PIN = "2468"
PIN_SALT = hashlib.sha256(b"keybound protocol vector: pin salt").digest()
SCRYPT_N, SCRYPT_R, SCRYPT_P, PIN_KEY_BYTES = 2**14, 8, 1, 32

PAYMENT_CONTEXT = {"content": "Pay 100 EUR to ACME", "mimeType": "text/plain"}
LOAN_DATA = {
    "content": "I, Alice, agree to the loan contract #4711: 10 000 EUR at 3.1 % over 5 years.",
    "mimeType": "text/plain; charset=utf-8",
}
UNICODE_CONTEXT = {
    "content": '{"amount":"1 000,00","currency":"NOK","to":"Ærø Café ✓"}',
    "mimeType": "application/json; charset=utf-8",
}


def challenge(name: str) -> bytes:
    return hashlib.sha256(b"keybound protocol vector challenge: " + name.encode()).digest()


def private_key(name: str) -> ec.EllipticCurvePrivateKey:
    digest = hashlib.sha256(b"keybound protocol vector key: " + name.encode()).digest()
    scalar = int.from_bytes(digest, "big") % (P256_N - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


# ------------------------------------------------------------------------------ encodings


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def lp(field: bytes) -> bytes:
    return struct.pack(">I", len(field)) + field


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_material(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    public = spki(key)
    return {
        "privateKeyHex": key.private_numbers().private_value.to_bytes(32, "big").hex(),
        "pkcs8Hex": key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).hex(),
        "publicKeySpkiHex": public.hex(),
        "keyIdHex": hashlib.sha256(public).hexdigest(),
    }


def context_canonical(context: dict[str, str] | None) -> bytes | None:
    if context is None:
        return None
    return lp(context["mimeType"].encode("utf-8")) + lp(context["content"].encode("utf-8"))


def context_digest(context: dict[str, str] | None) -> bytes:
    canonical = context_canonical(context)
    return hashlib.sha256(b"" if canonical is None else canonical).digest()


def push_token_digest(token: dict[str, str] | None) -> bytes:
    """docs/protocol.md §3.1.8: SHA-256(LP(provider) || LP(token)); of "" when removed."""
    if token is None:
        return hashlib.sha256(b"").digest()
    return hashlib.sha256(
        lp(token["provider"].encode("utf-8")) + lp(token["token"].encode("utf-8"))
    ).digest()


def pin_key(pin: str, salt: bytes) -> bytes:
    kdf = Scrypt(salt=salt, length=PIN_KEY_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(pin.encode("utf-8"))


# ------------------------------------------------------------------------------ signatures


class Signer:
    """Signs with RFC 6979 where available, but keeps a signature already in the file when it
    still verifies over the same bytes with the same key (reproducible on any build)."""

    def __init__(self, existing: dict[str, Any] | None) -> None:
        self.previous: dict[tuple[str, str, str], str] = {}
        for case in (existing or {}).get("transcripts", []):
            for sig in case.get("signatures", []):
                self.previous[
                    (case["tbsHex"], sig.get("publicKeySpkiHex", ""), sig.get("role", ""))
                ] = sig.get("signatureHex", "")

    def sign(self, key: ec.EllipticCurvePrivateKey, tbs: bytes, role: str) -> bytes:
        public = key.public_key()
        old = self.previous.get((tbs.hex(), spki(key).hex(), role))
        if old:
            try:
                public.verify(bytes.fromhex(old), tbs, ec.ECDSA(hashes.SHA256()))
                return bytes.fromhex(old)
            except (InvalidSignature, ValueError):
                pass
        try:
            algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
            return key.sign(tbs, algorithm)
        except (TypeError, UnsupportedAlgorithm):  # pragma: no cover - old cryptography/OpenSSL
            return key.sign(tbs, ec.ECDSA(hashes.SHA256()))


# ------------------------------------------------------------------------------ transcripts


def transcript_case(
    signer: Signer,
    *,
    name: str,
    description: str,
    purpose: str,
    operation_id: str,
    device_id: str,
    challenge_bytes: bytes,
    context: dict[str, str] | None,
    field8_key: ec.EllipticCurvePrivateKey | None,
    hardware_public_key: bytes,
    auth_method: str,
    hw_key_client_status: str,
    signers: list[tuple[str, ec.EllipticCurvePrivateKey]],
    push_token: dict[str, str] | None = None,
    context_name: str = "preOperationContext",
) -> tuple[dict[str, Any], bytes]:
    digest = push_token_digest(push_token) if purpose == "push-token" else context_digest(context)
    values = (
        SIGNATURE_LABEL,
        purpose.encode("utf-8"),
        APPLICATION_ID.encode("utf-8"),
        device_id.encode("utf-8"),
        operation_id.encode("utf-8"),
        challenge_bytes,
        digest,
        spki(field8_key) if field8_key is not None else b"",
        hardware_public_key,
        auth_method.encode("utf-8"),
        hw_key_client_status.encode("utf-8"),
    )
    tbs = b"".join(lp(v) for v in values)
    case: dict[str, Any] = {
        "name": name,
        "description": description,
        "purpose": purpose,
        "inputs": {
            "applicationId": APPLICATION_ID,
            "deviceId": device_id,
            "operationId": operation_id,
            "challengeHex": challenge_bytes.hex(),
            "challengeB64u": b64u(challenge_bytes),
            context_name: context,
            "contextHashHex": digest.hex(),
            "softwarePublicKeyHex": spki(field8_key).hex() if field8_key is not None else "",
            "hardwarePublicKeyHex": hardware_public_key.hex(),
            "authMethod": auth_method,
            "hwKeyClientStatus": hw_key_client_status,
            **({"pushToken": push_token} if purpose == "push-token" else {}),
        },
        "fields": [
            {
                "index": i,
                "name": field_name,
                "valueHex": value.hex(),
                "encodedHex": lp(value).hex(),
            }
            for i, (field_name, value) in enumerate(zip(FIELD_NAMES, values, strict=True), start=1)
        ],
        "tbsHex": tbs.hex(),
        "tbsSha256Hex": hashlib.sha256(tbs).hexdigest(),
        "signatures": [],
    }
    for role, key in signers:
        signature = signer.sign(key, tbs, role)
        case["signatures"].append(
            {"role": role, **key_material(key), "signatureHex": signature.hex()}
        )
    return case, tbs


def signature_of(case: dict[str, Any], role: str) -> bytes:
    for sig in case["signatures"]:
        if sig["role"] == role:
            return bytes.fromhex(sig["signatureHex"])
    raise KeyError(role)


def build(existing: dict[str, Any] | None = None) -> dict[str, Any]:
    # imported here so the module docstring and --help work without the package installed
    from keybound import protocol as p

    signer = Signer(existing)
    a_sw0, a_hw, a_sw1 = (
        private_key("A-software-0"),
        private_key("A-hardware"),
        private_key("A-software-1"),
    )
    b_sw0, b_sw1 = private_key("B-software-0"), private_key("B-software-1")
    the_pin_key = pin_key(PIN, PIN_SALT)
    profile = {"platform": "ANDROID", "osVersion": "14", "model": "Pixel 8"}

    # 1. activation of device A, with a hardware key (and a PIN key, which is not signed)
    act_a, _ = transcript_case(
        signer,
        name="activation-with-hardware-key",
        description="Activation finish of device A: new software key A-software-0, hardware "
        "key A-hardware generated and able to sign (hwKeyClientStatus OK). Both keys sign the "
        "same transcript. The request also registers a PIN key (not part of the transcript).",
        purpose="activation",
        operation_id=OP_ACTIVATE_A,
        device_id=DEVICE_A,
        challenge_bytes=challenge("activation A"),
        context=None,
        field8_key=a_sw0,
        hardware_public_key=spki(a_hw),
        auth_method="",
        hw_key_client_status="OK",
        signers=[("software", a_sw0), ("hardware", a_hw)],
    )
    act_a["request"] = p.ActivationFinishRequest(
        application_id=APPLICATION_ID,
        operation_id=OP_ACTIVATE_A,
        device_id=DEVICE_A,
        software_public_key=spki(a_sw0),
        software_signature=signature_of(act_a, "software"),
        hardware_public_key=spki(a_hw),
        hardware_signature=signature_of(act_a, "hardware"),
        hw_key_client_status=p.HwKeyClientStatus.OK,
        pin_key=the_pin_key,
        device_profile=p.DeviceProfile.model_validate(profile),
    ).to_wire()

    # 2. activation of device B, software only
    act_b, _ = transcript_case(
        signer,
        name="activation-without-hardware-key",
        description="Activation finish of device B, which has no secure hardware "
        "(hwKeyClientStatus NOT_SUPPORTED): field 9 is empty, only the software key signs.",
        purpose="activation",
        operation_id=OP_ACTIVATE_B,
        device_id=DEVICE_B,
        challenge_bytes=challenge("activation B"),
        context=None,
        field8_key=b_sw0,
        hardware_public_key=b"",
        auth_method="",
        hw_key_client_status="NOT_SUPPORTED",
        signers=[("software", b_sw0)],
    )
    act_b["request"] = p.ActivationFinishRequest(
        application_id=APPLICATION_ID,
        operation_id=OP_ACTIVATE_B,
        device_id=DEVICE_B,
        software_public_key=spki(b_sw0),
        software_signature=signature_of(act_b, "software"),
        hw_key_client_status=p.HwKeyClientStatus.NOT_SUPPORTED,
        device_profile=p.DeviceProfile(platform=p.Platform.LINUX, os_version="6.8"),
    ).to_wire()

    # 3. backend-initiated authentication of device A with a context and DEVICE:PIN
    auth_a, tbs_a = transcript_case(
        signer,
        name="authentication-pin-with-context",
        description="Backend-initiated authentication of device A answered with DEVICE:PIN. "
        "The pre-operation context is hashed into field 7; field 8 is the NEXT software key "
        "(A-software-1); field 9 is empty in every authentication. Signed by the current "
        "software key A-software-0 and by the hardware key.",
        purpose="authentication",
        operation_id=OP_AUTH_A,
        device_id=DEVICE_A,
        challenge_bytes=challenge("authentication A"),
        context=PAYMENT_CONTEXT,
        field8_key=a_sw1,
        hardware_public_key=b"",
        auth_method="DEVICE:PIN",
        hw_key_client_status="OK",
        signers=[("software", a_sw0), ("hardware", a_hw)],
    )
    message = lp(PIN_PROOF_LABEL) + lp(tbs_a)
    proof = hmac.new(the_pin_key, message, hashlib.sha256).digest()
    auth_a["nextSoftwareKey"] = key_material(a_sw1)
    auth_a["pin"] = {
        "pin": PIN,
        "pinSaltHex": PIN_SALT.hex(),
        "pinKeyHex": the_pin_key.hex(),
        "pinProofMessageHex": message.hex(),
        "pinProofHex": proof.hex(),
    }
    auth_a["request"] = p.AuthenticationFinishRequest(
        application_id=APPLICATION_ID,
        device_id=DEVICE_A,
        operation_id=OP_AUTH_A,
        auth_method=p.AuthMethod.DEVICE_PIN,
        software_key_id=hashlib.sha256(spki(a_sw0)).digest(),
        next_software_public_key=spki(a_sw1),
        software_signature=signature_of(auth_a, "software"),
        hardware_signature=signature_of(auth_a, "hardware"),
        hw_key_client_status=p.HwKeyClientStatus.OK,
        pin_proof=proof,
    ).to_wire()

    # 4. device-initiated authentication of device B, no context
    auth_b, _ = transcript_case(
        signer,
        name="authentication-without-context",
        description="Device-initiated authentication of device B (no pre-operation context, so "
        "field 7 is SHA-256 of the empty string), auth method DEVICE, no hardware key "
        "(NOT_SUPPORTED). Signed by B-software-0; field 8 is the next key B-software-1.",
        purpose="authentication",
        operation_id=OP_AUTH_B,
        device_id=DEVICE_B,
        challenge_bytes=challenge("authentication B"),
        context=None,
        field8_key=b_sw1,
        hardware_public_key=b"",
        auth_method="DEVICE",
        hw_key_client_status="NOT_SUPPORTED",
        signers=[("software", b_sw0)],
    )
    auth_b["nextSoftwareKey"] = key_material(b_sw1)
    auth_b["request"] = p.AuthenticationFinishRequest(
        application_id=APPLICATION_ID,
        device_id=DEVICE_B,
        operation_id=OP_AUTH_B,
        auth_method=p.AuthMethod.DEVICE,
        software_key_id=hashlib.sha256(spki(b_sw0)).digest(),
        next_software_public_key=spki(b_sw1),
        software_signature=signature_of(auth_b, "software"),
        hw_key_client_status=p.HwKeyClientStatus.NOT_SUPPORTED,
    ).to_wire()

    # 5. device B deactivates itself with its current key
    deact_b, _ = transcript_case(
        signer,
        name="deactivation",
        description="Device B deactivates itself, signing with its current software key "
        "B-software-1. Fields 5, 6, 9, 10 and 11 are empty (length 0); field 7 is SHA-256 of "
        "the empty string; field 8 is the CURRENT software key.",
        purpose="deactivation",
        operation_id="",
        device_id=DEVICE_B,
        challenge_bytes=b"",
        context=None,
        field8_key=b_sw1,
        hardware_public_key=b"",
        auth_method="",
        hw_key_client_status="",
        signers=[("software", b_sw1)],
    )
    deact_b["request"] = p.DeactivateRequest(
        application_id=APPLICATION_ID,
        device_id=DEVICE_B,
        software_key_id=hashlib.sha256(spki(b_sw1)).digest(),
        software_signature=signature_of(deact_b, "software"),
    ).to_wire()

    # 6. device A declines a backend-initiated operation (after case 3 rotated its key)
    decline_a, _ = transcript_case(
        signer,
        name="decline",
        description="Device A declines a backend-initiated operation after showing its "
        "pre-operation context, signing with its current software key A-software-1 (case 3 "
        "rotated it). Fields 8-11 are empty; field 7 is the context hash.",
        purpose="decline",
        operation_id=OP_DECLINE_A,
        device_id=DEVICE_A,
        challenge_bytes=challenge("decline A"),
        context=PAYMENT_CONTEXT,
        field8_key=None,
        hardware_public_key=b"",
        auth_method="",
        hw_key_client_status="",
        signers=[("software", a_sw1)],
    )
    decline_a["request"] = p.DeclineRequest(
        application_id=APPLICATION_ID,
        device_id=DEVICE_A,
        operation_id=OP_DECLINE_A,
        software_key_id=hashlib.sha256(spki(a_sw1)).digest(),
        software_signature=signature_of(decline_a, "software"),
    ).to_wire()

    # 7. device A answers a signature operation: purpose "signature", field 7 the hash of the
    # data to sign, signed by its current software key (case 3 rotated it) and hardware key
    a_sw2 = private_key("A-software-2")
    sign_a, _ = transcript_case(
        signer,
        name="signature",
        description="Device A answers a signature operation (docs/protocol.md §3.2.5): purpose "
        "signature; field 7 is the hash of the data to sign (§4.1.2 encoding); field 8 the next "
        "software key A-software-2. Signed by the current software key A-software-1 and by the "
        "hardware key, auth method DEVICE. The result's dataHash is field 7 in base64url.",
        purpose="signature",
        operation_id=OP_SIGN_A,
        device_id=DEVICE_A,
        challenge_bytes=challenge("signature A"),
        context=LOAN_DATA,
        context_name="dataToSign",
        field8_key=a_sw2,
        hardware_public_key=b"",
        auth_method="DEVICE",
        hw_key_client_status="OK",
        signers=[("software", a_sw1), ("hardware", a_hw)],
    )
    sign_a["nextSoftwareKey"] = key_material(a_sw2)
    sign_a["dataHashB64u"] = b64u(context_digest(LOAN_DATA))
    sign_a["request"] = p.AuthenticationFinishRequest(
        application_id=APPLICATION_ID,
        device_id=DEVICE_A,
        operation_id=OP_SIGN_A,
        auth_method=p.AuthMethod.DEVICE,
        software_key_id=hashlib.sha256(spki(a_sw1)).digest(),
        next_software_public_key=spki(a_sw2),
        software_signature=signature_of(sign_a, "software"),
        hardware_signature=signature_of(sign_a, "hardware"),
        hw_key_client_status=p.HwKeyClientStatus.OK,
    ).to_wire()
    # 8. device A registers its push token, signing with its current key A-software-1
    push_a, _ = transcript_case(
        signer,
        name="push-token",
        description="Device A registers its FCM push token, signing with its current software "
        "key A-software-1. Fields 5, 6, 9, 10 and 11 are empty; field 7 is SHA-256 of "
        "LP(provider) || LP(token); field 8 is the CURRENT software key.",
        purpose="push-token",
        operation_id="",
        device_id=DEVICE_A,
        challenge_bytes=b"",
        context=None,
        field8_key=a_sw1,
        hardware_public_key=b"",
        auth_method="",
        hw_key_client_status="",
        signers=[("software", a_sw1)],
        push_token=PUSH_TOKEN_A,
    )
    push_a["request"] = p.PushTokenRequest(
        application_id=APPLICATION_ID,
        device_id=DEVICE_A,
        software_key_id=hashlib.sha256(spki(a_sw1)).digest(),
        push_token=p.PushToken.model_validate(PUSH_TOKEN_A),
        software_signature=signature_of(push_a, "software"),
    ).to_wire()

    contexts = []
    for context in (None, PAYMENT_CONTEXT, UNICODE_CONTEXT, LOAN_DATA):
        canonical = context_canonical(context)
        contexts.append(
            {
                "context": context,
                "canonicalHex": None if canonical is None else canonical.hex(),
                "sha256Hex": context_digest(context).hex(),
            }
        )

    key_ids = []
    for key_name, key in (("A-software-0", a_sw0), ("A-hardware", a_hw), ("B-software-0", b_sw0)):
        public = spki(key)
        key_ids.append(
            {
                "key": key_name,
                "publicKeySpkiHex": public.hex(),
                "keyIdHex": hashlib.sha256(public).hexdigest(),
                "keyIdB64u": b64u(hashlib.sha256(public).digest()),
            }
        )

    derivations = []
    for pin, salt in ((PIN, PIN_SALT), ("pïn✓ 1234", bytes(range(32)))):
        derivations.append(
            {
                "pin": pin,
                "pinUtf8Hex": pin.encode("utf-8").hex(),
                "saltHex": salt.hex(),
                "n": SCRYPT_N,
                "r": SCRYPT_R,
                "p": SCRYPT_P,
                "length": PIN_KEY_BYTES,
                "pinKeyHex": pin_key(pin, salt).hex(),
            }
        )

    return {
        "description": "keybound device-API protocol test vectors (docs/protocol.md §1, §4, "
        "§5). Generated by tests/vectors/protocol/make_vectors.py from fixed inputs; see "
        "README.md. All hex is lowercase; signatures are ECDSA P-256/SHA-256 DER.",
        "formatVersion": FORMAT_VERSION,
        "constants": {
            "signatureLabel": SIGNATURE_LABEL.decode(),
            "signatureLabelHex": SIGNATURE_LABEL.hex(),
            "pinProofLabel": PIN_PROOF_LABEL.decode(),
            "pinProofLabelHex": PIN_PROOF_LABEL.hex(),
            "noContextHashHex": hashlib.sha256(b"").hexdigest(),
            "fieldOrder": list(FIELD_NAMES),
        },
        "transcripts": [act_a, act_b, auth_a, auth_b, deact_b, decline_a, sign_a, push_a],
        "contextHashes": contexts,
        "keyIds": key_ids,
        "pinKeyDerivation": derivations,
        "base64url": {
            "valid": [
                {"text": b64u(v), "hex": v.hex()}
                for v in (b"", b"\x00", b"\x00\x00", b"\xfb\xff\xbf", b"\xfb\xff", b"keybound")
            ],
            "invalid": [
                {"text": "AA==", "why": "padding"},
                {"text": "AAA=", "why": "padding"},
                {"text": "AA AA", "why": "whitespace"},
                {"text": "AAAA\n", "why": "whitespace"},
                {"text": "+/+/", "why": "standard alphabet"},
                {"text": "A", "why": "impossible length (4k+1)"},
                {"text": "AB", "why": "non-canonical: trailing bits not zero"},
                {"text": "AAB", "why": "non-canonical: trailing bits not zero"},
            ],
        },
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the file is missing or would change",
    )
    args = parser.parse_args(argv)
    existing = json.loads(OUTPUT.read_text("utf-8")) if OUTPUT.exists() else None
    text = render(build(existing))
    current = OUTPUT.read_text("utf-8") if OUTPUT.exists() else None
    if args.check:
        if text != current:
            print(f"{OUTPUT} is out of date; re-run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if text != current:
        OUTPUT.write_text(text, "utf-8", newline="\n")
    print(f"{'unchanged' if text == current else 'wrote'} {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
