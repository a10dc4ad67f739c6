"""The device-notification interface: a provider sends a :class:`PushHint` to one push token
and answers with an :class:`Outcome`, which tells the caller to keep, drop or retry.

What a notification says: only "something is pending, poll". The device then calls
pending operations (docs/protocol.md §3.1.5) for each of its registrations in the
application and learns the rest over the secure channel. A notification carries no
operation id, no pre-operation context and no device id: those would pass through Google's
or Apple's service, and an application id with a device id is enough to list the device's
pending operations with their pre-operation contexts (docs/protocol.md §10).

A provider never raises for a remote failure (network, refusal, bad answer): that is an
outcome. It raises only for a bug or a configuration it cannot use at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import httpx

from keybound.errors import MalformedRequest
from keybound.server.events.schedule import parse_retry_after

#: The event a device notification announces (also the webhook payload's ``type``).
EVENT_TYPE: Final = "device.operation_pending"
#: A retry delay when the provider asked for one without saying when.
DEFAULT_RETRY_SECONDS: Final = 60.0
#: Retry-After values above this are capped: a pending operation expires long before.
MAX_RETRY_AFTER_SECONDS: Final = 3600.0


class ProviderKind(StrEnum):
    WEBHOOK = "webhook"  # the relying party's own push service
    FCM = "fcm"  # Firebase Cloud Messaging, HTTP v1
    APNS = "apns"  # Apple Push Notification service, token-based


#: What a push token of each provider may look like. A token comes from the device, so it is
#: checked before it reaches a URL path (APNs) or a request body.
_TOKEN_SHAPES: Final = {
    ProviderKind.APNS: re.compile(r"(?:[0-9a-fA-F]{2}){16,100}"),  # hex, length varies
    ProviderKind.FCM: re.compile(r"[A-Za-z0-9_:\-]{16,4096}"),
    ProviderKind.WEBHOOK: re.compile(r"[\x21-\x7e]{1,4096}"),  # opaque to keybound
}


def token_well_formed(provider: ProviderKind, token: str) -> bool:
    return _TOKEN_SHAPES[provider].fullmatch(token) is not None


@dataclass(frozen=True, kw_only=True)
class PushTarget:
    """Where a device's notifications go: what the SDK registers and the server stores."""

    provider: ProviderKind
    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not token_well_formed(self.provider, self.token):
            raise MalformedRequest(f"not a {self.provider.value} push token")


@dataclass(frozen=True, kw_only=True)
class PushHint:
    """The facts a notification is made from; each provider forwards only what it may."""

    application_id: str
    device_id: str

    def for_device(self) -> dict[str, str]:
        """What travels through FCM or APNs to the app."""
        return {"type": EVENT_TYPE, "applicationId": self.application_id}

    def for_relying_party(self) -> dict[str, str]:
        """What the relying party's own push service gets: it knows its devices anyway."""
        return {"applicationId": self.application_id, "deviceId": self.device_id}


class OutcomeKind(StrEnum):
    DELIVERED = "DELIVERED"  # the provider accepted it (not: the device received it)
    TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105 (a state)  drop the push token for good
    RETRY = "RETRY"  # try again after ``retry_after`` seconds
    FAILED = "FAILED"  # not sent, and sending again will not help (configuration, payload)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    kind: OutcomeKind
    #: RETRY: seconds to wait (the provider's Retry-After, else the configured default)
    retry_after: float | None = None
    #: the provider's name for what happened (``Unregistered``, ``QUOTA_EXCEEDED``, ...)
    reason: str = ""
    #: DELIVERED: the provider's id for the message (apns-id, FCM message name)
    message_id: str | None = None
    #: TOKEN_INVALID from APNs: since when (epoch seconds) the token has been invalid; a
    #: token the device registered after that moment is a new one and must be kept
    invalid_since: float | None = None

    @classmethod
    def delivered(cls, message_id: str | None = None) -> Outcome:
        return cls(kind=OutcomeKind.DELIVERED, message_id=message_id)

    @classmethod
    def token_invalid(cls, reason: str, *, invalid_since: float | None = None) -> Outcome:
        return cls(kind=OutcomeKind.TOKEN_INVALID, reason=reason, invalid_since=invalid_since)

    @classmethod
    def retry(cls, after: float, reason: str) -> Outcome:
        return cls(kind=OutcomeKind.RETRY, retry_after=after, reason=reason)

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(kind=OutcomeKind.FAILED, reason=reason)


class NotificationProvider(Protocol):
    """One way of reaching devices. Implementations are thread-safe."""

    @property
    def kind(self) -> ProviderKind: ...

    def send(self, push_token: str, hint: PushHint) -> Outcome: ...

    def close(self) -> None: ...


def retry_delay(value: str | None, *, now: float, default: float) -> float:
    """Seconds to wait from an HTTP ``Retry-After`` (the webhook outbox's reading of it);
    ``default`` when absent or unreadable; capped at MAX_RETRY_AFTER_SECONDS."""
    delay = parse_retry_after(value, now=now)
    return min(max(default if delay is None else delay, 0.0), MAX_RETRY_AFTER_SECONDS)


def retry_as_asked(response: httpx.Response, reason: str, *, now: float, default: float) -> Outcome:
    """RETRY after the response's ``Retry-After`` (see :func:`retry_delay`)."""
    delay = retry_delay(response.headers.get("retry-after"), now=now, default=default)
    return Outcome.retry(delay, reason)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object; empty when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


__all__ = [
    "DEFAULT_RETRY_SECONDS",
    "EVENT_TYPE",
    "MAX_RETRY_AFTER_SECONDS",
    "NotificationProvider",
    "Outcome",
    "OutcomeKind",
    "ProviderKind",
    "PushHint",
    "PushTarget",
    "json_object",
    "retry_as_asked",
    "retry_delay",
    "token_well_formed",
]
