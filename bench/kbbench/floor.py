"""The crypto floor: the server-side cost of exactly the cryptography one flow needs.

Each primitive is timed in this process with the same functions the server calls
(``keybound.channel`` for the secure channel, ``keybound.crypto`` / ``cryptography`` for keys and
signatures). Public keys are loaded from DER on every verification ("with key load"), so the
floor does not depend on the server's key cache. A flow's floor is the sum over its
primitives times how often the flow needs each (see ``RECIPES``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keybound import channel, crypto
from keybound import protocol as p
from keybound.protocol import b64u_encode

_ECDSA = ec.ECDSA(hashes.SHA256())

#: Primitive -> what it is (for the table).
PRIMITIVES = {
    "hpke_open_request": "HPKE open of a sealed request (X25519, HKDF-SHA256, AES-128-GCM), "
    "header parse, info; channel.open_request",
    "seal_response": "HKDF-SHA256 response key + AES-128-GCM seal; channel.seal_response",
    "ecdsa_verify_with_load": "P-256 SPKI DER load + ECDSA-SHA256 verify of the transcript",
    "parse_public_key": "P-256 SPKI DER load + canonical re-encode (new key)",
    "sha256_key_id": "SHA-256 key id of a 91-byte SPKI",
    "challenge_random": "32 random bytes (challenge)",
    "api_key_check": "SHA-256 of the RP API key secret + constant-time compare",
}

#: How often each flow needs each primitive on the server.
RECIPES: dict[str, dict[str, int]] = {
    # start: open + seal + challenge; finish: open + seal + sw verify + hw verify +
    # parse next key + key id (check) + key id (rotate)
    "device": {
        "hpke_open_request": 2,
        "seal_response": 2,
        "ecdsa_verify_with_load": 2,
        "parse_public_key": 1,
        "sha256_key_id": 2,
        "challenge_random": 1,
    },
    # RP create op (API key), pending (open/seal), start, finish as above, RP read (API key)
    "backend": {
        "hpke_open_request": 3,
        "seal_response": 3,
        "ecdsa_verify_with_load": 2,
        "parse_public_key": 1,
        "sha256_key_id": 2,
        "challenge_random": 1,
        "api_key_check": 2,
    },
    # RP user + RP code (API key, code hash), start (open/seal, code hash, challenge),
    # finish (open/seal, parse sw + hw keys, verify sw + hw, key id)
    "activation": {
        "hpke_open_request": 2,
        "seal_response": 2,
        "ecdsa_verify_with_load": 2,
        "parse_public_key": 2,
        "sha256_key_id": 3,
        "challenge_random": 1,
        "api_key_check": 2,
    },
}


def _time_us(fn: Callable[[], object], iterations: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean CPU µs per call of ``fn`` (this thread's CPU time,
    so a busy neighbour that takes the core away does not count)."""
    for _ in range(max(10, iterations // 10)):
        fn()
    means = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        for _ in range(iterations):
            fn()
        means.append((time.thread_time_ns() - t0) / iterations / 1000)
    return statistics.median(means)


def measure(iterations: int = 2000, repeats: int = 7) -> dict[str, float]:
    """µs per call of every primitive."""
    now = int(time.time())
    key = channel.generate_e2e_key(now=now)
    pin = channel.export_pin(key, application_id="bench", server_url="http://127.0.0.1:8000")
    keyring = {key.key_id: key}
    sw, hw, nxt = crypto.generate_p256(), crypto.generate_p256(), crypto.generate_p256()
    sw_pub, next_pub = crypto.public_der(sw), crypto.public_der(nxt)
    tbs = p.transcript(
        p.Purpose.AUTHENTICATION,
        application_id="bench",
        device_id="0" * 36,
        operation_id="1" * 36,
        challenge=secrets.token_bytes(32),
        context_digest=p.NO_CONTEXT_HASH,
        software_public_key=next_pub,
        auth_method="DEVICE",
        hw_key_client_status="OK",
    )
    sig = crypto.sign_p256(sw, tbs)
    # a finish request body of the real size
    body = json.dumps(
        {
            "applicationId": "bench",
            "deviceId": "0" * 36,
            "operationId": "1" * 36,
            "authMethod": "DEVICE",
            "softwareKeyId": b64u_encode(crypto.key_id(sw_pub)),
            "nextSoftwarePublicKey": b64u_encode(next_pub),
            "softwareSignature": b64u_encode(sig),
            "hardwareSignature": b64u_encode(crypto.sign_p256(hw, tbs)),
            "hwKeyClientStatus": "OK",
        },
        separators=(",", ":"),
    ).encode()
    path = p.DevicePaths.AUTHENTICATION_FINISH
    wire, _ = channel.seal_request(pin, "POST", path, body, now=now)
    opened = channel.open_request(keyring, "bench", "POST", path, wire, now=now)
    response = (
        b'{"operationId":"' + b"1" * 36 + b'","state":"COMPLETED","authMethod":"DEVICE",'
        b'"authLevel":"ONE_FACTOR"}' + b" " * 120
    )
    secret = secrets.token_urlsafe(32)
    stored = hashlib.sha256(secret.encode()).digest()
    load = crypto._load_p256.__wrapped__  # the server's loader without its lru_cache

    def verify() -> None:
        load(sw_pub).verify(sig, tbs, _ECDSA)

    def parse() -> None:
        k = load(next_pub)
        if (
            k.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            != next_pub
        ):
            raise AssertionError

    fns: dict[str, tuple[Callable[[], object], int]] = {
        "hpke_open_request": (
            lambda: channel.open_request(keyring, "bench", "POST", path, wire, now=now),
            iterations,
        ),
        "seal_response": (lambda: channel.seal_response(opened, 200, response), iterations),
        "ecdsa_verify_with_load": (verify, max(200, iterations // 2)),
        "parse_public_key": (parse, iterations),
        "sha256_key_id": (lambda: crypto.key_id(next_pub), iterations * 5),
        "challenge_random": (lambda: secrets.token_bytes(32), iterations * 5),
        "api_key_check": (
            lambda: hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), stored),
            iterations * 5,
        ),
    }
    return {name: _time_us(fn, n, repeats) for name, (fn, n) in fns.items()}


def per_flow(items: dict[str, float]) -> dict[str, float]:
    """µs of crypto per flow, for each flow kind."""
    return {flow: sum(items[k] * n for k, n in recipe.items()) for flow, recipe in RECIPES.items()}


if __name__ == "__main__":  # pragma: no cover
    it = measure()
    for k, v in it.items():
        print(f"{k:24} {v:8.1f} µs")
    for k, v in per_flow(it).items():
        print(f"floor {k:18} {v:8.1f} µs/flow")
