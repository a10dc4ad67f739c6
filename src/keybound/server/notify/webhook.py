"""Webhook provider: the relying party's own push service receives ``device.operation_pending``
and wakes its app however it likes.

Request: ``POST <url>`` with a JSON body in the Standard Webhooks payload shape::

    {"type": "device.operation_pending", "timestamp": "2025-06-02T10:03:00.250000Z",
     "data": {"applicationId": "bank", "deviceId": "...", "pushToken": "<as registered>"}}

plus whatever ``headers_for(body)`` returns for those exact bytes (the server passes its
Standard Webhooks signer). Answers: 2xx delivered; 410 the push token is gone (drop it);
408, 429 and 5xx retry (after Retry-After if given); a redirect is not followed and, like any
other answer, fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from keybound.errors import ConfigurationInvalid
from keybound.server.clock import Clock, wall_clock
from keybound.server.events.ssrf import EndpointAddressRefused
from keybound.server.notify.base import (
    DEFAULT_RETRY_SECONDS,
    EVENT_TYPE,
    Outcome,
    ProviderKind,
    PushHint,
    retry_as_asked,
    token_well_formed,
)

HeadersFor = Callable[[bytes], Mapping[str, str]]
_RETRYABLE = frozenset({408, 425, 429})


@dataclass(frozen=True, kw_only=True)
class WebhookConfig:
    url: str  # the relying party's push service
    timeout_seconds: float = 10.0
    default_retry_seconds: float = DEFAULT_RETRY_SECONDS

    def __post_init__(self) -> None:
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL:
            raise ConfigurationInvalid("push service URL is not a URL") from None
        if url.scheme not in {"https", "http"} or not url.host:
            raise ConfigurationInvalid("push service URL must be http(s)")


def _no_headers(body: bytes) -> Mapping[str, str]:
    return {}


class WebhookProvider:
    """POSTs the hint to the relying party's push service.

    ``client`` lets the server pass its own client, e.g. one whose transport refuses private
    addresses at connect time; it must not follow redirects.
    """

    kind = ProviderKind.WEBHOOK

    def __init__(
        self,
        config: WebhookConfig,
        *,
        headers_for: HeadersFor = _no_headers,
        client: httpx.Client | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        self._config = config
        self._headers_for = headers_for
        self._clock = clock
        self._client = client or httpx.Client(
            timeout=config.timeout_seconds, follow_redirects=False
        )
        if self._client.follow_redirects:
            raise ConfigurationInvalid("the push service client must not follow redirects")

    def body(self, push_token: str, hint: PushHint) -> bytes:
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        payload = {
            "type": EVENT_TYPE,
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": {**hint.for_relying_party(), "pushToken": push_token},
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    def send(self, push_token: str, hint: PushHint) -> Outcome:
        if not token_well_formed(self.kind, push_token):
            return Outcome.token_invalid("malformed push token")
        body = self.body(push_token, hint)
        headers = {"content-type": "application/json", **self._headers_for(body)}
        try:
            response = self._client.post(self._config.url, content=body, headers=headers)
        except httpx.TransportError as exc:  # includes time-outs
            return Outcome.retry(self._config.default_retry_seconds, type(exc).__name__)
        except EndpointAddressRefused:  # resolved, at connect time, to a refused address
            return Outcome.retry(self._config.default_retry_seconds, "policy_refused")
        return self._outcome(response)

    def _outcome(self, response: httpx.Response) -> Outcome:
        status = response.status_code
        if 200 <= status < 300:
            return Outcome.delivered()
        if status == 410:
            return Outcome.token_invalid("410 Gone")
        if status in _RETRYABLE or status >= 500:
            return retry_as_asked(
                response,
                f"HTTP {status}",
                now=self._clock(),
                default=self._config.default_retry_seconds,
            )
        return Outcome.failed(f"HTTP {status}")

    def close(self) -> None:
        self._client.close()
