"""A local Google OAuth token endpoint and FCM HTTP v1 send endpoint, speaking their wire
formats: the JWT bearer grant (RFC 7523, as Google documents it for service accounts) and
``POST /v1/projects/<project>/messages:send`` with Google's error JSON
(``{"error": {"code", "message", "status", "details": [FcmError | BadRequest]}}``).

The token endpoint verifies the assertion (RS256 with the service account's public key, kid,
iss, aud, scope, iat/exp) and issues access tokens that expire; the send endpoint checks the
bearer token and the message, then answers per configured registration token (an unknown one
is not a valid FCM registration token, as at Google).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from tests.server.notify.servers import Receive, Scope, Send, lifespan, read_body, respond

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
MAX_DATA_BYTES = 4096
_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
_RESERVED_DATA_KEYS = {"from", "notification", "message_type"}
_MESSAGE_FIELDS = {
    "token",
    "topic",
    "condition",
    "data",
    "notification",
    "android",
    "apns",
    "webpush",
    "fcm_options",
    "fcmOptions",
    "name",
}
_ANDROID_FIELDS = {
    "collapse_key",
    "collapseKey",
    "priority",
    "ttl",
    "restricted_package_name",
    "restrictedPackageName",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
    "directBootOk",
}


class Registration(StrEnum):
    VALID = "valid"  # 200
    UNREGISTERED = "unregistered"  # 404 NOT_FOUND / UNREGISTERED
    INVALID = "invalid"  # 400 INVALID_ARGUMENT / INVALID_ARGUMENT (not a token)
    SENDER_ID_MISMATCH = "sender_id_mismatch"  # 403 PERMISSION_DENIED / SENDER_ID_MISMATCH
    QUOTA = "quota"  # 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED
    UNAVAILABLE = "unavailable"  # 503 UNAVAILABLE / UNAVAILABLE
    INTERNAL = "internal"  # 500 INTERNAL / INTERNAL
    BAD_PACKAGE = "bad_package"  # 400 INVALID_ARGUMENT, BadRequest on another field


@dataclass(frozen=True, kw_only=True)
class Answer:
    registration: Registration
    retry_after: str | None = None


_ERRORS: dict[Registration, tuple[int, str, str | None, str]] = {
    Registration.UNREGISTERED: (
        404,
        "NOT_FOUND",
        "UNREGISTERED",
        "Requested entity was not found.",
    ),
    Registration.INVALID: (
        400,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    Registration.SENDER_ID_MISMATCH: (
        403,
        "PERMISSION_DENIED",
        "SENDER_ID_MISMATCH",
        "SenderId mismatch",
    ),
    Registration.QUOTA: (
        429,
        "RESOURCE_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "Quota exceeded for the device.",
    ),
    Registration.UNAVAILABLE: (
        503,
        "UNAVAILABLE",
        "UNAVAILABLE",
        "The service is currently unavailable.",
    ),
    Registration.INTERNAL: (500, "INTERNAL", "INTERNAL", "Internal error encountered."),
}


class GoogleError(Exception):
    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(json.dumps(body))
        self.status, self.body, self.headers = status, body, headers or {}


def google_error(
    code: int,
    status: str,
    message: str,
    *,
    fcm_code: str | None = None,
    violations: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> GoogleError:
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": FCM_ERROR, "errorCode": fcm_code})
    if violations:
        details.append(
            {
                "@type": BAD_REQUEST,
                "fieldViolations": [
                    {"field": name, "description": text} for name, text in violations
                ],
            }
        )
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return GoogleError(code, {"error": error}, headers)


def invalid_argument(field_name: str, text: str) -> GoogleError:
    return google_error(400, "INVALID_ARGUMENT", text, violations=[(field_name, text)])


class FcmReceiver:
    def __init__(
        self,
        *,
        project_id: str,
        client_email: str,
        private_key_id: str,
        public_key: rsa.RSAPublicKey,
        clock: Any,
        access_token_lifetime: int = 3599,
    ) -> None:
        self.project_id, self.client_email = project_id, client_email
        self.private_key_id = private_key_id
        self.access_token_lifetime = access_token_lifetime
        self.accept_access_tokens = True  # False: every token is refused (revoked at once)
        self._key = jwk.JWK.from_pyca(public_key)
        self._clock = clock
        self.base_url = ""  # set once the server listens: the assertion's audience
        self.registrations: dict[str, Answer] = {}
        self.access_tokens: dict[str, float] = {}  # token -> expiry
        self.token_requests: list[dict[str, Any]] = []  # verified assertion claims
        self.token_refusals: list[str] = []
        self.sends: list[tuple[int, dict[str, Any] | None]] = []  # (status, message)

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def revoke_access_tokens(self) -> None:
        """As when Google invalidates tokens before their advertised expiry."""
        self.access_tokens.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        try:
            if scope["method"] != "POST":
                raise google_error(405, "METHOD_NOT_ALLOWED", "method not allowed")
            if scope["path"] == "/token":
                answer = self._token(headers, body)
            else:
                answer = self._send(scope["path"], headers, body)
        except GoogleError as error:
            if scope["path"] != "/token":
                self.sends.append((error.status, _message_or_none(body)))
            await respond(
                send,
                error.status,
                json.dumps(error.body).encode(),
                {"content-type": "application/json; charset=UTF-8", **error.headers},
            )
            return
        await respond(
            send,
            200,
            json.dumps(answer).encode(),
            {"content-type": "application/json; charset=UTF-8"},
        )

    # ----------------------------------------------------------------- OAuth token endpoint

    def _token(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise self._grant_error("invalid_request", "Bad Request")
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        if form.get("grant_type") != JWT_BEARER:
            raise self._grant_error(
                "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}"
            )
        claims = self._assertion(form.get("assertion", ""))
        self.token_requests.append(claims)
        token = "ya29." + secrets.token_urlsafe(32)
        self.access_tokens[token] = self._clock() + self.access_token_lifetime
        return {
            "access_token": token,
            "expires_in": self.access_token_lifetime,
            "token_type": "Bearer",
        }

    def _assertion(self, assertion: str) -> dict[str, Any]:
        try:
            obj = jws.JWS()
            obj.deserialize(assertion)
            header = obj.jose_header
            if header.get("alg") != "RS256" or header.get("kid") != self.private_key_id:
                raise self._grant_error("invalid_grant", "Invalid JWT Signature.")
            obj.verify(self._key, alg="RS256")
            claims = json.loads(obj.payload)
        except (JWException, ValueError):
            raise self._grant_error("invalid_grant", "Invalid JWT Signature.") from None
        now = self._clock()
        if not isinstance(claims, dict) or claims.get("iss") != self.client_email:
            raise self._grant_error("invalid_grant", "Invalid JWT: issuer")
        if claims.get("aud") != self.token_uri:
            raise self._grant_error("invalid_grant", "Invalid JWT: audience")
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            raise self._grant_error("invalid_scope", "Invalid OAuth scope")
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            type(iat) is not int
            or type(exp) is not int
            or iat > now + 60
            or exp <= now
            or exp - iat > 3600
        ):
            raise self._grant_error(
                "invalid_grant",
                "Invalid JWT: Token must be a "
                "short-lived token (60 minutes) and in a reasonable "
                "timeframe.",
            )
        return claims

    def _grant_error(self, error: str, description: str) -> GoogleError:
        self.token_refusals.append(error)
        return GoogleError(400, {"error": error, "error_description": description})

    # ----------------------------------------------------------------- send endpoint

    def _send(self, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        expiry = self.access_tokens.get(token)
        if (
            scheme.lower() != "bearer"
            or expiry is None
            or self._clock() >= expiry
            or not self.accept_access_tokens
        ):
            raise google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected "
                "OAuth 2 access token, login cookie or other valid "
                "authentication credential.",
                headers={"www-authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        match = _SEND_PATH.fullmatch(path)
        if match is None:
            raise google_error(404, "NOT_FOUND", "Requested entity was not found.")
        if match.group(1) != self.project_id:
            raise google_error(
                403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied"
            )
        message = self._message(body)
        answer = self.registrations.get(message["token"], Answer(registration=Registration.INVALID))
        self._registration_answer(answer)
        self.sends.append((200, message))
        return {"name": f"projects/{self.project_id}/messages/0:{secrets.token_hex(8)}"}

    def _message(self, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body)
        except ValueError:
            raise invalid_argument("", "Invalid JSON payload received.") from None
        message = request.get("message") if isinstance(request, dict) else None
        if not isinstance(message, dict) or set(request) - {"message", "validate_only"}:
            raise invalid_argument("message", "Invalid JSON payload received.")
        unknown = set(message) - _MESSAGE_FIELDS
        if unknown:
            raise invalid_argument(f"message.{min(unknown)}", "Unknown name")
        if sum(
            1 for name in ("token", "topic", "condition") if name in message
        ) != 1 or not isinstance(message.get("token"), str):
            raise invalid_argument("message.token", "Exactly one target: a token here")
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in data.items()
        ):
            raise invalid_argument("message.data", "data values must be strings")
        for key in data:
            if key in _RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
                raise invalid_argument("message.data", f"Invalid data key: {key}")
        if (
            sum(len(key.encode()) + len(value.encode()) for key, value in data.items())
            > MAX_DATA_BYTES
        ):
            raise invalid_argument("message", "Message is too big")
        self._android(message.get("android", {}))
        return message

    @staticmethod
    def _android(android: Any) -> None:
        if not isinstance(android, dict) or set(android) - _ANDROID_FIELDS:
            raise invalid_argument("message.android", "Unknown name")
        if android.get("priority", "NORMAL") not in {"NORMAL", "HIGH"}:
            raise invalid_argument("message.android.priority", "Invalid value")
        ttl = android.get("ttl", "0s")
        if not isinstance(ttl, str) or not re.fullmatch(r"\d+(\.\d{1,9})?s", ttl):
            raise invalid_argument("message.android.ttl", "Invalid value")

    @staticmethod
    def _registration_answer(answer: Answer) -> None:
        headers = {"retry-after": answer.retry_after} if answer.retry_after else {}
        if answer.registration is Registration.VALID:
            return
        if answer.registration is Registration.BAD_PACKAGE:
            raise google_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid package name",
                violations=[("message.android.restricted_package_name", "Invalid package name")],
            )
        code, status, fcm_code, text = _ERRORS[answer.registration]
        raise google_error(code, status, text, fcm_code=fcm_code, headers=headers)


def _message_or_none(body: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        return None
    return message if isinstance(message, dict) else None
