"""Firebase Cloud Messaging, HTTP v1 API.

Authorisation is OAuth 2.0 for a service account (the JWT bearer grant, RFC 7523): an
assertion signed RS256 with the service account's private key is exchanged at its
``token_uri`` for an access token, which is cached until shortly before it expires and
fetched anew once when FCM answers 401.

The message is data-only (``{"type", "applicationId"}``, see :class:`.base.PushHint`), high
priority on Android so it wakes the app, a background push for iOS tokens, and collapsed
per application so a device gets one wake-up however many operations wait.

Answers (FCM's ErrorCode reference): UNREGISTERED, SENDER_ID_MISMATCH, NOT_FOUND, and an
INVALID_ARGUMENT about the token drop the token; QUOTA_EXCEEDED (429), UNAVAILABLE (503),
INTERNAL (500) and other 5xx retry after Retry-After (or the configured default); 401 fetches
a new access token and sends once more; anything else fails.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.jwk import RSAKey

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

DEFAULT_API_BASE_URL: Final = "https://fcm.googleapis.com"
FCM_SCOPE: Final = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Google accepts assertions valid for at most an hour.
ASSERTION_LIFETIME_SECONDS: Final = 3600
#: An access token this close to its expiry is replaced before use, not after a 401.
TOKEN_REFRESH_MARGIN_SECONDS: Final = 60
COLLAPSE_KEY: Final = "keybound.operation_pending"
_PROJECT_ID: Final = re.compile(r"[a-z][a-z0-9-]{4,61}[a-z0-9]")
_TOKEN_DROPPED: Final = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_RETRYABLE: Final = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
_FCM_ERROR_TYPE: Final = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE: Final = "type.googleapis.com/google.rpc.BadRequest"


class AndroidPriority(StrEnum):
    HIGH = "HIGH"  # wakes the device from Doze; what a waiting operation needs
    NORMAL = "NORMAL"


@dataclass(frozen=True, kw_only=True)
class ServiceAccount:
    """The fields of a Google service-account key file that this provider uses."""

    project_id: str
    client_email: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    token_uri: str

    @classmethod
    def from_json(cls, text: str | bytes) -> ServiceAccount:
        try:
            data = json.loads(text)
            fields = {
                name: data[name]
                for name in (
                    "project_id",
                    "client_email",
                    "private_key_id",
                    "private_key",
                    "token_uri",
                )
            }
        except (ValueError, KeyError, TypeError):
            raise ConfigurationInvalid("not a service-account key file") from None
        if data.get("type") != "service_account" or not all(
            isinstance(value, str) for value in fields.values()
        ):
            raise ConfigurationInvalid("not a service-account key file")
        try:
            key = serialization.load_pem_private_key(fields.pop("private_key").encode(), None)
        except (ValueError, TypeError):
            raise ConfigurationInvalid("unreadable service-account private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigurationInvalid("service-account key is not RSA")
        return cls(private_key=key, **fields)

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccount:
        return cls.from_json(path.read_bytes())

    def __post_init__(self) -> None:
        if not _PROJECT_ID.fullmatch(self.project_id):
            raise ConfigurationInvalid("not a Firebase project id")
        try:
            url = httpx.URL(self.token_uri)
        except httpx.InvalidURL:
            raise ConfigurationInvalid("token_uri is not a URL") from None
        if url.scheme not in {"https", "http"} or not url.host:
            raise ConfigurationInvalid("token_uri must be http(s)")


@dataclass(frozen=True, kw_only=True)
class FcmConfig:
    service_account: ServiceAccount
    api_base_url: str = DEFAULT_API_BASE_URL
    android_priority: AndroidPriority = AndroidPriority.HIGH
    time_to_live_seconds: int = 300  # an operation's lifetime: later, the wake-up is moot
    timeout_seconds: float = 10.0
    default_retry_seconds: float = DEFAULT_RETRY_SECONDS

    def send_url(self) -> str:
        project = self.service_account.project_id
        return f"{self.api_base_url.rstrip('/')}/v1/projects/{project}/messages:send"


@dataclass(frozen=True)
class _AccessToken:
    value: str = field(repr=False)
    expires_at: float


class _NoAccessToken(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class FcmProvider:
    kind = ProviderKind.FCM

    def __init__(
        self, config: FcmConfig, *, clock: Clock = wall_clock, verify: ssl.SSLContext | bool = True
    ) -> None:
        self._config = config
        self._clock = clock
        # HTTP/1.1: httpx's pooled HTTP/1.1 connections are safe to share between threads
        self._client = httpx.Client(
            verify=verify, timeout=config.timeout_seconds, follow_redirects=False
        )
        account = config.service_account
        self._signing_key = RSAKey.import_key(
            account.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self._lock = threading.Lock()
        self._token: _AccessToken | None = None

    def message(self, push_token: str, hint: PushHint) -> dict[str, Any]:
        config = self._config
        return {
            "message": {
                "token": push_token,
                "data": hint.for_device(),
                "android": {
                    "priority": config.android_priority.value,
                    "ttl": f"{config.time_to_live_seconds}s",
                    "collapse_key": COLLAPSE_KEY,
                },
                "apns": {
                    "headers": {"apns-push-type": "background", "apns-priority": "5"},
                    "payload": {"aps": {"content-available": 1}},
                },
            }
        }

    def send(self, push_token: str, hint: PushHint) -> Outcome:
        if not token_well_formed(self.kind, push_token):
            return Outcome.token_invalid("malformed registration token")
        message = self.message(push_token, hint)
        try:
            token = self._access_token(stale=None)
            response = self._post(token, message)
            if response.status_code == 401:  # revoked or expired early: one new token
                response = self._post(self._access_token(stale=token), message)
        except _NoAccessToken as exc:
            return exc.outcome
        except httpx.TransportError as exc:
            return Outcome.retry(self._config.default_retry_seconds, type(exc).__name__)
        return self._outcome(response)

    def _post(self, token: _AccessToken, message: dict[str, Any]) -> httpx.Response:
        return self._client.post(
            self._config.send_url(),
            json=message,
            headers={"authorization": f"Bearer {token.value}"},
        )

    def _access_token(self, *, stale: _AccessToken | None) -> _AccessToken:
        """The cached token unless it is ``stale`` or about to expire. One fetch at a time,
        and a thread that saw a 401 after another thread refreshed uses the new token."""
        with self._lock:
            current = self._token
            if (
                current is not None
                and current is not stale
                and self._clock() < current.expires_at - TOKEN_REFRESH_MARGIN_SECONDS
            ):
                return current
            self._token = self._fetch_token()
            return self._token

    def _assertion(self, now: int) -> str:
        account = self._config.service_account
        claims = {
            "iss": account.client_email,
            "scope": FCM_SCOPE,
            "aud": account.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": account.private_key_id}
        return jws.serialize_compact(
            header, json.dumps(claims).encode(), self._signing_key, algorithms=["RS256"]
        )

    def _fetch_token(self) -> _AccessToken:
        now = self._clock()
        response = self._client.post(
            self._config.service_account.token_uri,
            data={"grant_type": JWT_BEARER_GRANT, "assertion": self._assertion(int(now))},
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise _NoAccessToken(
                retry_as_asked(
                    response,
                    f"token endpoint HTTP {response.status_code}",
                    now=self._clock(),
                    default=self._config.default_retry_seconds,
                )
            )
        body = json_object(response)
        if response.status_code != 200:  # invalid_grant etc.: the key or the clock is wrong
            raise _NoAccessToken(Outcome.failed(f"token endpoint: {body.get('error')}"))
        value, lifetime = body.get("access_token"), body.get("expires_in")
        if (
            not isinstance(value, str)
            or not value
            or type(lifetime) is not int
            or lifetime <= 0
            or str(body.get("token_type", "")).lower() != "bearer"
        ):
            raise _NoAccessToken(Outcome.failed("token endpoint: unreadable answer"))
        return _AccessToken(value, now + lifetime)

    def _outcome(self, response: httpx.Response) -> Outcome:
        status = response.status_code
        body = json_object(response)
        if status == 200:
            name = body.get("name")
            return Outcome.delivered(name if isinstance(name, str) else None)
        error = _GoogleError.of(body)
        reason = error.fcm_code or error.status or f"HTTP {status}"
        if error.fcm_code in _TOKEN_DROPPED or error.status == "NOT_FOUND":
            return Outcome.token_invalid(reason)
        if "INVALID_ARGUMENT" in {error.status, error.fcm_code}:
            # A field violation names what was wrong; FCM's own INVALID_ARGUMENT without
            # one is its answer to a registration token that is not one
            if "message.token" in error.fields or (
                not error.fields and error.fcm_code == "INVALID_ARGUMENT"
            ):
                return Outcome.token_invalid(reason)
            return Outcome.failed(reason)
        if status == 429 or status >= 500 or error.fcm_code in _RETRYABLE:
            return retry_as_asked(
                response, reason, now=self._clock(), default=self._config.default_retry_seconds
            )
        return Outcome.failed(reason)

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True, kw_only=True)
class _GoogleError:
    """The parts of Google's error JSON that decide the outcome."""

    status: str | None
    fcm_code: str | None
    fields: frozenset[str]

    @classmethod
    def of(cls, body: dict[str, Any]) -> _GoogleError:
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        details = [item for item in error.get("details") or () if isinstance(item, dict)]
        fcm_codes = [
            item.get("errorCode") for item in details if item.get("@type") == _FCM_ERROR_TYPE
        ]
        fields = {
            violation.get("field")
            for item in details
            if item.get("@type") == _BAD_REQUEST_TYPE
            for violation in item.get("fieldViolations") or ()
            if isinstance(violation, dict)
        }
        status = error.get("status")
        return cls(
            status=status if isinstance(status, str) else None,
            fcm_code=next((code for code in fcm_codes if isinstance(code, str)), None),
            fields=frozenset(name for name in fields if isinstance(name, str)),
        )
