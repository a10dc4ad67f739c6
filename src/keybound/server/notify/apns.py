"""Apple Push Notification service, token-based, over HTTP/2.

Authorisation is a provider token: a JWT signed ES256 with the team's APNs key (a ``.p8``
file), header ``kid`` = the key id, claims ``iss`` = the team id and ``iat``. APNs refuses a
token older than an hour and complains about new tokens more often than every 20 minutes,
so one token is reused for ``token_refresh_seconds`` (50 minutes by default) and re-signed
once, at once, when APNs answers 403 ExpiredProviderToken.

Request: ``POST /3/device/<hex token>`` with ``apns-topic`` (the bundle id),
``apns-push-type`` (``background``: ``content-available`` only, priority 5; or ``alert`` with
the operator's fixed text, priority 10), ``apns-expiration`` (now + time to live) and
``apns-collapse-id``; the payload's ``keybound`` member is the hint (:class:`.base.PushHint`).

Answers (Apple's "Handling notification responses from APNs"): 400 BadDeviceToken or
DeviceTokenNotForTopic and 410 Unregistered or ExpiredToken drop the token (410 says since
when); 429 and 5xx retry; other 4xx (InvalidProviderToken, BadTopic, ...) fail.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey

from keybound.errors import ConfigurationInvalid
from keybound.server.clock import Clock, wall_clock
from keybound.server.notify.base import (
    DEFAULT_RETRY_SECONDS,
    Outcome,
    ProviderKind,
    PushHint,
    json_object,
    retry_as_asked,
    token_well_formed,
)

#: APNs refuses provider tokens older than this.
PROVIDER_TOKEN_MAX_AGE_SECONDS: Final = 3600
#: ... and warns (TooManyProviderTokenUpdates) about new ones more often than this.
PROVIDER_TOKEN_MIN_INTERVAL_SECONDS: Final = 1200
DEFAULT_TOKEN_REFRESH_SECONDS: Final = 3000
COLLAPSE_ID: Final = "keybound.operation_pending"
_APPLE_ID: Final = re.compile(r"[A-Z0-9]{10}")  # team ids and key ids
_TOKEN_DROPPED: Final = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
)


class ApnsEnvironment(StrEnum):
    PRODUCTION = "https://api.push.apple.com"
    SANDBOX = "https://api.sandbox.push.apple.com"  # tokens of development builds


class ApnsPushType(StrEnum):
    BACKGROUND = "background"  # wakes the app silently; iOS may delay or drop it
    ALERT = "alert"  # shows the operator's fixed text; delivered reliably


def load_p8(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """The ``AuthKey_<key id>.p8`` file Apple issues: a PKCS#8 P-256 key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigurationInvalid("unreadable APNs key (.p8)") from None
    if not (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
        raise ConfigurationInvalid("an APNs key is a P-256 key")
    return key


@dataclass(frozen=True, kw_only=True)
class ApnsConfig:
    team_id: str
    key_id: str
    signing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    topic: str  # the app's bundle id
    environment: ApnsEnvironment = ApnsEnvironment.PRODUCTION
    base_url: str | None = None  # instead of the environment's (a local receiver in tests)
    push_type: ApnsPushType = ApnsPushType.BACKGROUND
    alert_title: str = ""
    alert_body: str = ""
    time_to_live_seconds: int = 300
    token_refresh_seconds: int = DEFAULT_TOKEN_REFRESH_SECONDS
    timeout_seconds: float = 10.0
    default_retry_seconds: float = DEFAULT_RETRY_SECONDS
    connections: int = 4  # HTTP/2 connections to APNs, each used by one thread at a time

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ConfigurationInvalid("APNs needs at least one connection")
        if not (_APPLE_ID.fullmatch(self.team_id) and _APPLE_ID.fullmatch(self.key_id)):
            raise ConfigurationInvalid("APNs team id and key id are 10 characters")
        if (
            not PROVIDER_TOKEN_MIN_INTERVAL_SECONDS
            <= self.token_refresh_seconds
            < PROVIDER_TOKEN_MAX_AGE_SECONDS
        ):
            raise ConfigurationInvalid("APNs provider tokens live 20 to 60 minutes")
        if self.push_type is ApnsPushType.ALERT and not self.alert_body:
            raise ConfigurationInvalid("an alert push needs the operator's alert text")
        if not self.topic or self.time_to_live_seconds < 0:
            raise ConfigurationInvalid("APNs topic and time to live")

    @property
    def url(self) -> str:
        return (self.base_url or self.environment.value).rstrip("/")


class _Connections:
    """HTTP/2 clients lent to one thread at a time. httpcore's sync HTTP/2 connection is not
    safe to share between threads (stream ids and HPACK state race, and APNs would close the
    connection with PROTOCOL_ERROR), so each request borrows a client of its own; at most
    ``size`` exist."""

    def __init__(self, *, size: int, verify: ssl.SSLContext | bool, timeout: float) -> None:
        self._size, self._verify, self._timeout = size, verify, timeout
        self._idle: list[httpx.Client] = []
        self._all: list[httpx.Client] = []
        self._available = threading.Condition()

    @contextmanager
    def borrow(self) -> Iterator[httpx.Client]:
        with self._available:
            while not self._idle and len(self._all) >= self._size:
                self._available.wait()
            if self._idle:
                client = self._idle.pop()
            else:  # APNs speaks HTTP/2 only
                client = httpx.Client(
                    http2=True,
                    http1=False,
                    verify=self._verify,
                    timeout=self._timeout,
                    follow_redirects=False,
                )
                self._all.append(client)
        try:
            yield client
        finally:
            with self._available:
                self._idle.append(client)
                self._available.notify()

    def close(self) -> None:
        with self._available:
            for client in self._all:
                client.close()


@dataclass(frozen=True)
class _ProviderToken:
    value: str = field(repr=False)
    issued_at: int


class ApnsProvider:
    kind = ProviderKind.APNS

    def __init__(
        self, config: ApnsConfig, *, clock: Clock = wall_clock, verify: ssl.SSLContext | bool = True
    ) -> None:
        self._config = config
        self._clock = clock
        self._connections = _Connections(
            size=config.connections, verify=verify, timeout=config.timeout_seconds
        )
        self._signing_key = ECKey.import_key(
            config.signing_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self._lock = threading.Lock()
        self._token: _ProviderToken | None = None

    def payload(self, hint: PushHint) -> dict[str, Any]:
        config = self._config
        aps: dict[str, Any] = (
            {"content-available": 1}
            if config.push_type is ApnsPushType.BACKGROUND
            else {"alert": {"title": config.alert_title, "body": config.alert_body}}
        )
        return {"aps": aps, "keybound": hint.for_device()}

    def send(self, push_token: str, hint: PushHint) -> Outcome:
        if not token_well_formed(self.kind, push_token):
            return Outcome.token_invalid("malformed device token")
        body = json.dumps(self.payload(hint), separators=(",", ":")).encode()
        try:
            token = self._provider_token(stale=None)
            response = self._post(push_token, token, body)
            if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
                response = self._post(push_token, self._provider_token(stale=token), body)
        except httpx.TransportError as exc:
            return Outcome.retry(self._config.default_retry_seconds, type(exc).__name__)
        return self._outcome(response)

    def _post(self, push_token: str, token: _ProviderToken, body: bytes) -> httpx.Response:
        config = self._config
        background = config.push_type is ApnsPushType.BACKGROUND
        headers = {
            "authorization": f"bearer {token.value}",
            "apns-topic": config.topic,
            "apns-push-type": config.push_type.value,
            "apns-priority": "5" if background else "10",  # background must be 5
            "apns-expiration": str(int(self._clock()) + config.time_to_live_seconds),
            "apns-collapse-id": COLLAPSE_ID,
            "content-type": "application/json",
        }
        with self._connections.borrow() as client:
            return client.post(f"{config.url}/3/device/{push_token}", content=body, headers=headers)

    def _provider_token(self, *, stale: _ProviderToken | None) -> _ProviderToken:
        """The current token unless it is ``stale`` or due for renewal; a thread that got
        ExpiredProviderToken after another one re-signed uses the new token."""
        with self._lock:
            now = int(self._clock())
            current = self._token
            if (
                current is not None
                and current is not stale
                and now - current.issued_at < self._config.token_refresh_seconds
            ):
                return current
            header = {"alg": "ES256", "kid": self._config.key_id}
            claims = {"iss": self._config.team_id, "iat": now}
            value = jws.serialize_compact(
                header, json.dumps(claims).encode(), self._signing_key, algorithms=["ES256"]
            )
            self._token = _ProviderToken(value, now)
            return self._token

    def _outcome(self, response: httpx.Response) -> Outcome:
        status = response.status_code
        if status == 200:
            return Outcome.delivered(response.headers.get("apns-id"))
        reason = _reason(response) or f"HTTP {status}"
        if reason in _TOKEN_DROPPED and status in {400, 410}:
            return Outcome.token_invalid(reason, invalid_since=_timestamp(response))
        if status == 429 or status >= 500:
            return retry_as_asked(
                response, reason, now=self._clock(), default=self._config.default_retry_seconds
            )
        return Outcome.failed(reason)

    def close(self) -> None:
        self._connections.close()


def _reason(response: httpx.Response) -> str:
    reason = json_object(response).get("reason")
    return reason if isinstance(reason, str) else ""


def _timestamp(response: httpx.Response) -> float | None:
    """410's ``timestamp``: when (ms since the epoch) APNs found the token no longer valid."""
    value = json_object(response).get("timestamp")
    return value / 1000 if type(value) is int else None
