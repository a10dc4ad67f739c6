"""Generate the secure-channel test vectors in this folder (see README.md for provenance).

Run from the repository root:  .venv/bin/python tests/vectors/channel/generate.py

The byte layouts are built here from docs/channel.md by hand (struct/int.to_bytes), not with
keybound.channel, so the vectors check the code against the document. X25519 requests are sealed
by pyhpke with a fixed ephemeral key, so they are reproducible bit for bit; the ML-KEM-768+X25519
request is sealed once by keybound.channel (cryptography cannot fix the ephemeral key) and
recorded. Responses use the AEADs from `cryptography` directly with a fixed nonce.
"""

from __future__ import annotations

import hashlib
import json
import struct
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyhpke
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = Path(__file__).parent
VERSION = 1
APPLICATION_ID = "vector-app"
SUITES: dict[str, dict[str, Any]] = {
    "X25519_SHA256_AES128GCM": {
        "ids": (0x0020, 0x0001, 0x0001),
        "tag": "x25519-aesgcm",
        "pyhpke": pyhpke.AEADId.AES128_GCM,
        "aead": AESGCM,
        "nk": 16,
    },
    "X25519_SHA256_CHACHA20POLY1305": {
        "ids": (0x0020, 0x0001, 0x0003),
        "tag": "x25519-chacha",
        "pyhpke": pyhpke.AEADId.CHACHA20_POLY1305,
        "aead": ChaCha20Poly1305,
        "nk": 32,
    },
    "MLKEM768X25519_SHA256_AES128GCM": {
        "ids": (0x647A, 0x0001, 0x0001),
        "tag": "xwing-aesgcm",
        "pyhpke": None,
        "aead": AESGCM,
        "nk": 16,
    },
}


def shake(label: str, n: int) -> bytes:
    return hashlib.shake_256(f"keybound channel test vector: {label}".encode()).digest(n)


def lp(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def suite_id(suite: str) -> bytes:
    return struct.pack(">HHH", *SUITES[suite]["ids"])


def server_key(suite: str) -> tuple[bytes, bytes]:
    if suite.startswith("X25519"):
        sk = shake(f"server key {suite}", 32)
        pk = x25519.X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()
        return sk, pk
    seed, xsk = shake(f"server key {suite} mlkem", 64), shake(f"server key {suite} x25519", 32)
    pk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    pk_x = x25519.X25519PrivateKey.from_private_bytes(xsk).public_key().public_bytes_raw()
    return seed + xsk, pk_m + pk_x


def info(suite: str, key_id: str, method: str, path: str) -> bytes:
    return lp(
        b"keybound/channel/v1/request",
        bytes([VERSION]),
        suite_id(suite),
        key_id.encode(),
        APPLICATION_ID.encode(),
        method.encode(),
        path.encode(),
    )


def request_vector(suite: str, name: str, method: str, path: str, body: bytes) -> dict[str, Any]:
    key_id = f"vec-{SUITES[suite]['tag']}"
    sk, pk = server_key(suite)
    request_id, response_key = shake(f"{name} request id", 16), shake(f"{name} response key", 32)
    timestamp = 1_767_225_600  # 2026-01-01T00:00:00Z
    plaintext = request_id + timestamp.to_bytes(8, "big") + response_key + lp(body)
    the_info = info(suite, key_id, method, path)
    header = bytes([VERSION]) + suite_id(suite) + bytes([len(key_id)]) + key_id.encode()
    eph: bytes | None = None
    if SUITES[suite]["pyhpke"] is not None:
        eph = shake(f"{name} ephemeral key", 32)
        sealed = pyhpke_seal(suite, pk, eph, the_info, plaintext)
        sealed_by = f"pyhpke {version('pyhpke')} with the fixed ephemeral key (reproducible)"
    else:
        sealed = recorded_wire(name, the_info, plaintext)[len(header) :] or cryptography_seal(
            suite, pk, the_info, plaintext
        )
        sealed_by = f"cryptography {version('cryptography')} HPKE (random ephemeral; recorded once)"
    return {
        "name": name,
        "suite": suite,
        "suiteId": suite_id(suite).hex(),
        "keyId": key_id,
        "serverPrivateKey": sk.hex(),
        "serverPublicKey": pk.hex(),
        "ephemeralPrivateKey": eph.hex() if eph else None,
        "applicationId": APPLICATION_ID,
        "method": method,
        "path": path,
        "timestamp": timestamp,
        "requestId": request_id.hex(),
        "responseKey": response_key.hex(),
        "body": body.hex(),
        "info": the_info.hex(),
        "plaintext": plaintext.hex(),
        "wire": (header + sealed).hex(),
        "sealedBy": sealed_by,
    }


def pyhpke_seal(suite: str, pk: bytes, eph: bytes, the_info: bytes, plaintext: bytes) -> bytes:
    hs = pyhpke.CipherSuite.new(
        pyhpke.KEMId.DHKEM_X25519_HKDF_SHA256, pyhpke.KDFId.HKDF_SHA256, SUITES[suite]["pyhpke"]
    )
    eph_key = x25519.X25519PrivateKey.from_private_bytes(eph)
    eks = pyhpke.KEMKeyPair(
        pyhpke.KEMKey.from_pyca_cryptography_key(eph_key),
        pyhpke.KEMKey.from_pyca_cryptography_key(eph_key.public_key()),
    )
    enc, ctx = hs.create_sender_context(hs.kem.deserialize_public_key(pk), the_info, eks=eks)
    return bytes(enc) + bytes(ctx.seal(plaintext, aad=b""))


def recorded_wire(name: str, the_info: bytes, plaintext: bytes) -> bytes:
    """The wire recorded by an earlier run for the same inputs, so reruns change nothing."""
    path = HERE / "request_vectors.json"
    if not path.exists():
        return b""
    for old in json.loads(path.read_text(encoding="utf-8"))["vectors"]:
        same = old["info"] == the_info.hex() and old["plaintext"] == plaintext.hex()
        if old["name"] == name and same:
            return bytes.fromhex(old["wire"])
    return b""


def cryptography_seal(suite: str, pk: bytes, the_info: bytes, plaintext: bytes) -> bytes:
    from cryptography.hazmat.primitives import hpke

    public = hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(pk[:1184]),
        x25519.X25519PublicKey.from_public_bytes(pk[1184:]),
    )
    hs = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    return hs.encrypt(plaintext, public, info=the_info)


def response_vector(suite: str, name: str, status: int, body: bytes) -> dict[str, Any]:
    key_id, method, path = "vec-resp-key-1", "POST", "/device/v1/authentication/finish"
    request_id, response_key = shake(f"{name} request id", 16), shake(f"{name} response key", 32)
    nonce = shake(f"{name} nonce", 12)
    aead_key = HKDF(
        algorithm=hashes.SHA256(),
        length=SUITES[suite]["nk"],
        salt=request_id,
        info=lp(b"keybound/channel/v1/response-key", suite_id(suite)),
    ).derive(response_key)
    aad = lp(
        b"keybound/channel/v1/response",
        bytes([VERSION]),
        suite_id(suite),
        key_id.encode(),
        APPLICATION_ID.encode(),
        method.encode(),
        path.encode(),
        request_id,
    )
    plaintext = struct.pack(">H", status) + lp(body)
    sealed = SUITES[suite]["aead"](aead_key).encrypt(nonce, plaintext, aad)
    return {
        "name": name,
        "suite": suite,
        "keyId": key_id,
        "applicationId": APPLICATION_ID,
        "method": method,
        "path": path,
        "requestId": request_id.hex(),
        "responseKey": response_key.hex(),
        "aeadKey": aead_key.hex(),
        "aad": aad.hex(),
        "nonce": nonce.hex(),
        "status": status,
        "body": body.hex(),
        "wire": (bytes([VERSION]) + nonce + sealed).hex(),
    }


def main() -> None:
    requests, responses = [], []
    for suite in SUITES:
        requests.append(
            request_vector(
                suite,
                f"{suite} authentication start",
                "POST",
                "/device/v1/authentication/start",
                b'{"deviceId":"dev-0001","applicationId":"vector-app"}',
            )
        )
        requests.append(request_vector(suite, f"{suite} empty body", "GET", "/device/v1/x", b""))
        responses.append(response_vector(suite, f"{suite} ok", 200, b'{"result":"ok"}'))
        problem = b'{"type":"about:blank","title":"Conflict","status":409,"code":"conflict"}'
        responses.append(response_vector(suite, f"{suite} problem", 409, problem))
        responses.append(response_vector(suite, f"{suite} empty", 204, b""))
    common = {"channelVersion": VERSION, "generator": "tests/vectors/channel/generate.py"}
    write("request_vectors.json", {**common, "vectors": requests})
    write("response_vectors.json", {**common, "vectors": responses})


def write(name: str, data: dict[str, Any]) -> None:
    (HERE / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
