"""The client side of the load: a lean keep-alive HTTP/1.1 client on asyncio streams, the
relying party, and a protocol-level device that does exactly the SDK's crypto.

The device is "lean" in that it skips what is client-only (state files, pydantic models): it
builds the same JSON the SDK sends (``keybound.protocol.transcript`` for the signed bytes,
``keybound.channel.seal_request`` for the secure channel), with a software P-256 key rotated on
every authentication and a second P-256 key standing in for the hardware key (the SDK's
emulated secure element signs with a P-256 key too). ``bench/loadgen.py``'s SDK probe
(``sdk_probe.py``; ``--no-sdk`` skips it) runs the real SDK against the same server to show the
two are interchangeable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from keybound import channel, crypto
from keybound import protocol as p
from keybound.protocol import b64u_decode, b64u_encode

SEALED = channel.SEALED_MEDIA_TYPE
#: uvicorn closes keep-alive connections idle for 5 s; reopen before that (as HTTP client
#: libraries do) instead of racing the close.
IDLE_REOPEN_S = 4.0


class HttpError(Exception):
    def __init__(self, step: str, why: str) -> None:
        super().__init__(f"{step}: {why}")
        self.step, self.why = step, why


class Conn:
    """One keep-alive HTTP/1.1 connection (Content-Length bodies only, as uvicorn sends)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.hosthdr = f"Host: {host}:{port}\r\n".encode()
        self.last_used = 0.0

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: bytes = b""
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is not None and time.monotonic() - self.last_used > IDLE_REOPEN_S:
            await self.close()  # the server may be closing it right now (keep-alive timeout)
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\n".encode()
            + self.hosthdr
            + headers
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        self.writer.write(head + body)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise HttpError("http", f"connection lost: {exc!r}") from None
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        hdrs: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower()] = v.strip()
        length = int(hdrs.get(b"content-length", b"0"))
        data = await self.reader.readexactly(length) if length else b""
        self.last_used = time.monotonic()
        if hdrs.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, hdrs, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class RelyingParty:
    """The RP API with the bearer API key (JSON in, JSON out)."""

    def __init__(self, conn: Conn, token: str) -> None:
        self.conn = conn
        self.auth = f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()

    async def call(
        self, step: str, method: str, path: str, body: Any = None, expect: int = 200
    ) -> Any:
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        status, _, out = await self.conn.request(method, path, data, self.auth)
        if status != expect:
            raise HttpError(step, f"HTTP {status} {out[:160]!r}")
        return json.loads(out)


def _lp(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def context_hash(ctx: dict[str, str] | None) -> bytes:
    """§4.1.2 from the JSON object as received (no pydantic)."""
    if ctx is None:
        return p.NO_CONTEXT_HASH
    return hashlib.sha256(_lp(ctx["mimeType"].encode()) + _lp(ctx["content"].encode())).digest()


class LeanDevice:
    """One device: software key (rotated on every authentication) + hardware key."""

    def __init__(self, conn: Conn, pin: channel.ChannelPin) -> None:
        self.conn = conn
        self.pin = pin
        self.app = pin.application_id
        self.sw: ec.EllipticCurvePrivateKey = crypto.generate_p256()
        self.hw: ec.EllipticCurvePrivateKey = crypto.generate_p256()
        self.hw_pub = crypto.public_der(self.hw)
        self.device_id = ""
        self.crypto_s = 0.0  # client-side crypto time of the last flow
        self._sw_kid: tuple[ec.EllipticCurvePrivateKey | None, str] = (None, "")

    async def post(self, step: str, path: str, msg: dict[str, Any]) -> dict[str, Any]:
        t = time.perf_counter()
        body = json.dumps(msg, separators=(",", ":")).encode()
        wire, opener = channel.seal_request(self.pin, "POST", path, body, now=int(time.time()))
        self.crypto_s += time.perf_counter() - t
        status, hdrs, data = await self.conn.request(
            "POST", path, wire, b"Content-Type: application/keybound-sealed\r\n"
        )
        if status != 200 or hdrs.get(b"content-type") != SEALED.encode():
            raise HttpError(step, f"outer HTTP {status} {data[:160]!r}")
        t = time.perf_counter()
        opened = opener.open(data)
        self.crypto_s += time.perf_counter() - t
        if opened.status != 200:
            raise HttpError(step, f"HTTP {opened.status} {opened.body[:200]!r}")
        out: dict[str, Any] = json.loads(opened.body)
        return out

    # -- activation (§3.1.1-2) ------------------------------------------------------------
    async def activation_start(self, token: str) -> dict[str, Any]:
        """With the activation link's token (§3.2.5), as a phone that scanned it."""
        return await self.post(
            "act_start",
            p.DevicePaths.ACTIVATION_START,
            {"applicationId": self.app, "activationToken": token},
        )

    async def activation_finish(self, start: dict[str, Any]) -> None:
        t = time.perf_counter()
        self.sw, self.hw = crypto.generate_p256(), crypto.generate_p256()
        self.hw_pub = crypto.public_der(self.hw)
        sw_pub = crypto.public_der(self.sw)
        tbs = p.transcript(
            p.Purpose.ACTIVATION,
            application_id=self.app,
            device_id=start["deviceId"],
            operation_id=start["operationId"],
            challenge=b64u_decode(start["challenge"]),
            context_digest=p.NO_CONTEXT_HASH,
            software_public_key=sw_pub,
            hardware_public_key=self.hw_pub,
            hw_key_client_status="OK",
        )
        msg = {
            "applicationId": self.app,
            "operationId": start["operationId"],
            "deviceId": start["deviceId"],
            "softwarePublicKey": b64u_encode(sw_pub),
            "softwareSignature": b64u_encode(crypto.sign_p256(self.sw, tbs)),
            "hardwarePublicKey": b64u_encode(self.hw_pub),
            "hardwareSignature": b64u_encode(crypto.sign_p256(self.hw, tbs)),
            "hwKeyClientStatus": "OK",
            "deviceProfile": {"platform": "LINUX", "osVersion": "6.8", "model": "bench"},
        }
        self.crypto_s += time.perf_counter() - t
        done = await self.post("act_finish", p.DevicePaths.ACTIVATION_FINISH, msg)
        if not done.get("hardwareKeyRegistered"):
            raise HttpError("act_finish", f"hardware key not registered: {done}")
        self.device_id = start["deviceId"]

    # -- authentication (§3.1.3-4), both keys, software-key rotation ----------------------
    async def auth_start(self, operation_id: str | None = None) -> dict[str, Any]:
        msg = {"applicationId": self.app, "deviceId": self.device_id}
        if operation_id:
            msg["operationId"] = operation_id
        return await self.post("auth_start", p.DevicePaths.AUTHENTICATION_START, msg)

    async def auth_finish(self, start: dict[str, Any]) -> dict[str, Any]:
        t = time.perf_counter()
        following = crypto.generate_p256()
        next_pub = crypto.public_der(following)
        tbs = p.transcript(
            p.Purpose.AUTHENTICATION,
            application_id=self.app,
            device_id=self.device_id,
            operation_id=start["operationId"],
            challenge=b64u_decode(start["challenge"]),
            context_digest=context_hash(start.get("preOperationContext")),
            software_public_key=next_pub,
            auth_method="DEVICE",
            hw_key_client_status="OK",
        )
        msg = {
            "applicationId": self.app,
            "deviceId": self.device_id,
            "operationId": start["operationId"],
            "authMethod": "DEVICE",
            "softwareKeyId": self._sw_key_id(),
            "nextSoftwarePublicKey": b64u_encode(next_pub),
            "softwareSignature": b64u_encode(crypto.sign_p256(self.sw, tbs)),
            "hardwareSignature": b64u_encode(crypto.sign_p256(self.hw, tbs)),
            "hwKeyClientStatus": "OK",
        }
        self.crypto_s += time.perf_counter() - t
        done = await self.post("auth_finish", p.DevicePaths.AUTHENTICATION_FINISH, msg)
        if done.get("state") != "COMPLETED":
            raise HttpError("auth_finish", f"not completed: {done}")
        self.sw = following  # rotate only on success, as the SDK does
        self._sw_kid = (following, b64u_encode(crypto.key_id(next_pub)))
        return done

    def _sw_key_id(self) -> str:
        """The software key's id, worked out once per key rather than on every flow."""
        if self._sw_kid[0] is not self.sw:  # a new key: activation, or a seeded one
            self._sw_kid = (self.sw, b64u_encode(crypto.key_id(crypto.public_der(self.sw))))
        return self._sw_kid[1]

    async def pending(self) -> list[dict[str, Any]]:
        out = await self.post(
            "pending",
            p.DevicePaths.PENDING_OPERATIONS,
            {"applicationId": self.app, "deviceId": self.device_id},
        )
        ops: list[dict[str, Any]] = out["operations"]
        return ops
