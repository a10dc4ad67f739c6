"""The SDK side of the secure channel: every device request sealed to the pinned server key.

An app ships one pin string (``keybound e2e-key create`` / ``pin`` prints it; docs/channel.md
§8). From it::

    from keybound.client import open_device, preset  # keybound.client.factory

    device = open_device("~/.keybound/device", channel_pin=PIN_STRING, profile=preset("linux"))
    device.activate(LINK)  # the activation link, or the typed "HINT-CODE"

:class:`SealedTransport` overrides :meth:`Transport.exchange`: it seals the JSON request
(HPKE, to the pinned key, bound to the method and path), POSTs it as
``application/keybound-sealed`` and opens the sealed answer into the inner status and body,
which the base class decodes as usual. Failures:

- the server answers the unsealed ``decryption_failed`` problem: it could not open the
  request (pinned key unknown or retired, or the device clock is off). ClientError
  ``decryption_failed``; a definite refusal, nothing changed on the server.
- the answer is not a sealed reply that opens under this request's response key: ClientError
  ``client_transport`` with ``sealed_reply_invalid=True``; the outcome is unknown
  (:func:`~keybound.client.transport.outcome_unknown`), as for a lost answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from keybound.channel import (
    SEALED_MEDIA_TYPE,
    ChannelPin,
    DecryptionFailed,
    InvalidPin,
    seal_request,
)
from keybound.client.transport import (
    JSON,
    PROBLEM_JSON,
    RawResponse,
    Transport,
    problem_document,
)
from keybound.errors import ClientError, ErrorCode, MalformedRequest

_METHOD = "POST"
_HEADERS = {"content-type": SEALED_MEDIA_TYPE, "accept": f"{SEALED_MEDIA_TYPE}, {PROBLEM_JSON}"}
DECRYPTION_FAILED_MESSAGE = (
    "the server could not open the request: the pinned E2E key is unknown or retired, "
    "or the clock is off"
)


class SealedTransport(Transport):
    """A :class:`Transport` that talks to the device API through the secure channel.

    ``client`` defaults to a new ``httpx.Client`` on ``pin.server_url`` (owned by this
    transport: :meth:`close` closes it). Any client with ``base_url`` set and an httpx-style
    ``post`` works, e.g. a Starlette ``TestClient`` in tests. ``clock`` gives Unix seconds for
    the request timestamp (§6).
    """

    def __init__(
        self,
        pin: ChannelPin,
        client: Any = None,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> None:
        self._owned = client is None
        super().__init__(
            client if client is not None else httpx.Client(base_url=pin.server_url, timeout=timeout)
        )
        self.pin = pin
        self._clock = clock

    @classmethod
    def from_pin_string(cls, text: str, client: Any = None, **options: Any) -> SealedTransport:
        """From the pin string an app ships (raises InvalidPin, code client_configuration)."""
        return cls(ChannelPin.from_string(text), client, **options)

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def exchange(self, path: str, body: bytes) -> RawResponse:
        try:
            wire, opener = seal_request(self.pin, _METHOD, path, body, now=int(self._clock()))
        except MalformedRequest as exc:  # a path or body the channel cannot carry
            raise ClientError(
                f"cannot seal a request to {path}: {exc.detail}",
                code=ErrorCode.CLIENT_CONFIGURATION,
            ) from None
        outer = self._send(path, wire, _HEADERS)
        if outer.status == 200 and outer.content_type == SEALED_MEDIA_TYPE:
            try:
                opened = opener.open(outer.body)
            except DecryptionFailed:
                raise _unopenable(path, "the server's sealed reply could not be opened") from None
            inner_type = JSON if opened.status < 400 else PROBLEM_JSON
            return RawResponse(status=opened.status, content_type=inner_type, body=opened.body)
        if 200 <= outer.status < 300:  # a success that is not sealed: not our server, or a MITM
            raise _unopenable(
                path, f"the server answered HTTP {outer.status} without the secure channel"
            )
        if _problem_code(outer) == ErrorCode.DECRYPTION_FAILED.value:
            raise ClientError(
                DECRYPTION_FAILED_MESSAGE,
                code=ErrorCode.DECRYPTION_FAILED,
                status=outer.status,
                server_code=ErrorCode.DECRYPTION_FAILED.value,
                key_id=self.pin.key_id,
            )
        return outer  # an unsealed problem (404, 413, 5xx, ...): decoded by Transport.post


def _unopenable(path: str, detail: str) -> ClientError:
    return ClientError(
        f"{detail} ({path})", code=ErrorCode.CLIENT_TRANSPORT, sealed_reply_invalid=True
    )


def _problem_code(raw: RawResponse) -> str | None:
    document = problem_document(raw) if raw.content_type == PROBLEM_JSON else None
    code = None if document is None else document.get("code")
    return code if isinstance(code, str) else None


#: what a channel pin looks like, for messages about something that is not one
PIN_EXPECTED = (
    "a channel pin is the one-line JSON string that `keybound e2e-key create APP` "
    "or `keybound e2e-key pin KEY_ID --server-url URL` prints: "
    '{"v":1,"applicationId":...,"serverUrl":...,"keyId":...,"suite":...,'
    '"publicKey":...}'
)


def load_pin(source: str | Path) -> ChannelPin:
    """A pin from its string (JSON) or from a file holding it. Raises InvalidPin, or
    ClientError(client_configuration) for a file that cannot be read; both say what a pin
    looks like."""
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return parse_pin(source, "the channel pin string")
    try:
        text = Path(source).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
        raise ClientError(
            f"cannot read the channel pin file {source} ({reason}): give a pin "
            f"string or the path of a file holding one; {PIN_EXPECTED}",
            code=ErrorCode.CLIENT_CONFIGURATION,
        ) from None
    return parse_pin(text, f"{source}")


def parse_pin(text: str, what: str) -> ChannelPin:
    """``text`` as a pin; InvalidPin naming ``what`` it came from and what a pin is."""
    try:
        return ChannelPin.from_string(text.strip())
    except InvalidPin as exc:
        raise InvalidPin(f"{what} is not a channel pin ({exc.detail}); {PIN_EXPECTED}") from None
