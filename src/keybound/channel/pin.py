"""The channel pin: what an app ships to reach its server's E2E key (docs/channel.md §8)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final
from urllib.parse import urlsplit

from keybound.channel.errors import InvalidPin
from keybound.channel.framing import (
    _APPLICATION_ID_RE,
    _KEY_ID_RE,
    _LOCAL_HOSTS,
    _PIN_PROBE,
    CHANNEL_VERSION,
)
from keybound.channel.keys import E2EKey
from keybound.channel.suites import _SUITES, ChannelSuite, _HpkePublic
from keybound.protocol import b64u_decode, b64u_encode


@dataclass(frozen=True, kw_only=True)
class ChannelPin:
    """What an app developer ships: where to talk, and which server E2E key to seal to."""

    application_id: str
    server_url: str
    key_id: str
    suite: ChannelSuite
    public_key: bytes

    def __post_init__(self) -> None:
        _check_pin_fields(self)
        try:  # load once (cached) and seal a probe: refuses e.g. low-order X25519 points
            _SUITES[self.suite].hpke_suite.encrypt(b"", self._hpke_public, info=_PIN_PROBE)
        except ValueError:
            raise InvalidPin("pin public key is not a valid key for its suite") from None

    @cached_property
    def _hpke_public(self) -> _HpkePublic:
        kem = _SUITES[self.suite].kem
        if len(self.public_key) != kem.public_size:
            raise ValueError("public key has the wrong length")
        return kem.load_public(self.public_key)

    def to_string(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, base64url public key (§8)."""
        return json.dumps(
            {
                "v": CHANNEL_VERSION,
                "applicationId": self.application_id,
                "serverUrl": self.server_url,
                "keyId": self.key_id,
                "suite": str(self.suite),
                "publicKey": b64u_encode(self.public_key),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_string(cls, text: str) -> ChannelPin:
        """Parse and validate a pin string, or raise InvalidPin."""
        data = _parse_pin_json(text)
        try:
            return cls(
                application_id=data["applicationId"],
                server_url=data["serverUrl"],
                key_id=data["keyId"],
                suite=ChannelSuite(data["suite"]),
                public_key=b64u_decode(data["publicKey"]),
            )
        except ValueError:
            raise InvalidPin("pin has an unknown suite or a malformed public key") from None


_PIN_FIELDS: Final = frozenset({"v", "applicationId", "serverUrl", "keyId", "suite", "publicKey"})


def _parse_pin_json(text: str) -> dict[str, str]:
    try:
        data: Any = json.loads(text)
    except (ValueError, TypeError):
        raise InvalidPin("pin is not JSON") from None
    if not isinstance(data, dict) or set(data) != _PIN_FIELDS:
        raise InvalidPin(f"pin must be a JSON object with exactly {sorted(_PIN_FIELDS)}")
    if data["v"] != CHANNEL_VERSION or isinstance(data["v"], bool):
        raise InvalidPin(f"unsupported pin version; expected {CHANNEL_VERSION}")
    if not all(isinstance(data[k], str) for k in _PIN_FIELDS - {"v"}):
        raise InvalidPin("pin fields other than 'v' must be strings")
    return {k: data[k] for k in _PIN_FIELDS - {"v"}}


def _check_pin_fields(pin: ChannelPin) -> None:
    if not isinstance(pin.application_id, str) or not _APPLICATION_ID_RE.fullmatch(
        pin.application_id
    ):
        raise InvalidPin("application id must match [a-z0-9][a-z0-9._-]{0,63}")
    if not isinstance(pin.key_id, str) or not _KEY_ID_RE.fullmatch(pin.key_id):
        raise InvalidPin("key id must be 1-64 base64url characters")
    if not isinstance(pin.public_key, bytes):
        raise InvalidPin("public key must be bytes")
    if pin.suite not in _SUITES:
        raise InvalidPin(f"suite must be one of {[s.value for s in ChannelSuite]}")
    _check_server_url(pin.server_url)


def _check_server_url(url: str) -> None:
    if not isinstance(url, str) or not url.isascii() or not url.isprintable():
        raise InvalidPin("server URL must be printable ASCII")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        raise InvalidPin("server URL is malformed") from None
    local = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
    if parts.scheme != "https" and not local:
        raise InvalidPin("server URL must be https (http only for localhost)")
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidPin("server URL must have a host and no credentials, query or fragment")


def export_pin(key: E2EKey, *, application_id: str, server_url: str) -> ChannelPin:
    """The public pin for ``key``, to ship in an app built for ``application_id``."""
    return ChannelPin(
        application_id=application_id,
        server_url=server_url,
        key_id=key.key_id,
        suite=key.suite,
        public_key=key.public_key,
    )
