"""A local APNs: the provider API's wire format (Apple, "Sending notification requests to
APNs" and "Handling notification responses from APNs") over real HTTP/2 with TLS.

It checks what APNs checks before accepting a request - HTTP/2, ``POST /3/device/<token>``,
the provider token (ES256, kid, team id, signature with the team's key, age of ``iat``), the
topic and the apns-* headers, the payload - and answers with APNs's status codes and
``{"reason": ...}`` bodies (410 adds ``timestamp``). What it answers for a device token is
configured per token; an unknown token is a BadDeviceToken, as at Apple.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from tests.server.notify.servers import Receive, Scope, Send, lifespan, read_body, respond

MAX_PAYLOAD_BYTES = 4096
_DEVICE_PATH = re.compile(r"/3/device/([0-9a-fA-F]+)")


class Device(StrEnum):
    ACTIVE = "active"  # 200
    BAD_TOKEN = "bad_token"  # 400 BadDeviceToken
    NOT_FOR_TOPIC = "not_for_topic"  # 400 DeviceTokenNotForTopic
    UNREGISTERED = "unregistered"  # 410 Unregistered + timestamp
    TOO_MANY = "too_many"  # 429 TooManyRequests
    UNAVAILABLE = "unavailable"  # 503 ServiceUnavailable


@dataclass(frozen=True, kw_only=True)
class Answer:
    device: Device
    retry_after: str | None = None  # a Retry-After header to add (Apple sends none today)
    unregistered_at_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class Seen:
    """One request as the receiver saw it, and what it answered."""

    http_version: str
    path: str
    headers: dict[str, str]
    payload: Any
    peer: tuple[str, int] | None = None  # the client's address: one per connection
    token_header: dict[str, Any] = field(default_factory=dict)
    token_claims: dict[str, Any] = field(default_factory=dict)
    status: int = 0
    reason: str = ""


class ApnsError(Exception):
    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra


class ApnsReceiver:
    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        public_key: ec.EllipticCurvePublicKey,
        topic: str,
        clock: Any,
        max_token_age: int = 3600,
    ) -> None:
        self.team_id, self.key_id, self.topic = team_id, key_id, topic
        self.max_token_age = max_token_age
        self._key = jwk.JWK.from_pyca(public_key)
        self._clock = clock
        self.devices: dict[str, Answer] = {}
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        client = scope.get("client")
        seen = Seen(
            http_version=scope["http_version"],
            path=scope["path"],
            headers=headers,
            payload=None,
            peer=tuple(client) if client else None,
        )
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        try:
            seen = self._check(scope, headers, body, seen)
            answer = self._device_answer(scope["path"])
        except ApnsError as error:
            self.seen.append(_answered(seen, error.status, error.reason))
            response_headers = {"apns-id": apns_id, "content-type": "application/json"}
            if "retry_after" in error.extra:
                response_headers["retry-after"] = error.extra.pop("retry_after")
            await respond(
                send,
                error.status,
                json.dumps({"reason": error.reason, **error.extra}).encode(),
                response_headers,
            )
            return
        self.seen.append(_answered(seen, 200, answer))
        await respond(send, 200, b"", {"apns-id": apns_id})

    def _check(self, scope: Scope, headers: dict[str, str], body: bytes, seen: Seen) -> Seen:
        if scope["http_version"] != "2":  # the provider API is HTTP/2 only
            raise ApnsError(505, "HTTP/2 required")
        if scope["method"] != "POST":
            raise ApnsError(405, "MethodNotAllowed")
        if not _DEVICE_PATH.fullmatch(scope["path"]):
            raise ApnsError(404, "BadPath")
        token_header, token_claims = self._provider_token(headers.get("authorization"))
        seen = replace(seen, token_header=token_header, token_claims=token_claims)
        if "apns-topic" not in headers:
            raise ApnsError(400, "MissingTopic")
        if headers["apns-topic"] != self.topic:
            raise ApnsError(400, "TopicDisallowed")
        push_type = headers.get("apns-push-type")
        if push_type not in {"alert", "background"}:
            raise ApnsError(400, "InvalidPushType")
        priority = headers.get("apns-priority", "10")
        if priority not in {"5", "10"} or (push_type == "background" and priority != "5"):
            raise ApnsError(400, "BadPriority")
        if not headers.get("apns-expiration", "0").isdigit():
            raise ApnsError(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            raise ApnsError(400, "BadCollapseId")
        if len(body) > MAX_PAYLOAD_BYTES:
            raise ApnsError(413, "PayloadTooLarge")
        try:
            payload = json.loads(body)
        except ValueError:
            raise ApnsError(400, "PayloadEmpty") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            raise ApnsError(400, "PayloadEmpty")
        return replace(seen, payload=payload)

    def _provider_token(self, authorization: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        if not authorization:
            raise ApnsError(403, "MissingProviderToken")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise ApnsError(403, "InvalidProviderToken")
        try:
            obj = jws.JWS()
            obj.deserialize(token)
            header = obj.jose_header
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                raise ApnsError(403, "InvalidProviderToken")
            obj.verify(self._key, alg="ES256")
            claims = json.loads(obj.payload)
        except (JWException, ValueError):
            raise ApnsError(403, "InvalidProviderToken") from None
        if (
            not isinstance(claims, dict)
            or claims.get("iss") != self.team_id
            or type(claims.get("iat")) is not int
        ):
            raise ApnsError(403, "InvalidProviderToken")
        now = int(self._clock())
        if claims["iat"] > now + 60:
            raise ApnsError(403, "InvalidProviderToken")
        if now - claims["iat"] > self.max_token_age:
            raise ApnsError(403, "ExpiredProviderToken")
        return header, claims

    def _device_answer(self, path: str) -> str:
        token = path.rsplit("/", 1)[1]
        answer = self.devices.get(token, Answer(device=Device.BAD_TOKEN))
        extra: dict[str, Any] = {}
        if answer.retry_after is not None:
            extra["retry_after"] = answer.retry_after
        match answer.device:
            case Device.ACTIVE:
                return "delivered"
            case Device.BAD_TOKEN:
                raise ApnsError(400, "BadDeviceToken")
            case Device.NOT_FOR_TOPIC:
                raise ApnsError(400, "DeviceTokenNotForTopic")
            case Device.UNREGISTERED:
                raise ApnsError(410, "Unregistered", timestamp=answer.unregistered_at_ms)
            case Device.TOO_MANY:
                raise ApnsError(429, "TooManyRequests", **extra)
            case Device.UNAVAILABLE:
                raise ApnsError(503, "ServiceUnavailable", **extra)


def _answered(seen: Seen, status: int, reason: str) -> Seen:
    return replace(seen, status=status, reason=reason)
