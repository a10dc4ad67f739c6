"""What a user activates with, as the SDK reads it (docs/protocol.md §3.2.5): the activation
link (scanned from a QR code or opened on the phone), its bare token, or the typed fallback --
the code with its hint, as ``HINT-CODE`` or the code and a separate hint."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from keybound.errors import ClientError, ErrorCode
from keybound.protocol import b64u_decode, read_activation_link

_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_TYPED: Final = re.compile(r"([A-Za-z0-9]{4,16})[\s-]+([A-Za-z0-9]{4,64})")


@dataclass(frozen=True, kw_only=True)
class Activation:
    """Either the link's token, or a typed code with its hint."""

    token: bytes | None = None
    code: str | None = None
    hint: str | None = None


def read_activation(
    text: str, *, hint: str | None = None, application_id: str | None = None
) -> Activation:
    """``text`` as the user gave it: a link (any URL with a ``token`` parameter), a bare
    token (43 base64url characters), ``HINT-CODE`` (or ``HINT CODE``), or a code when ``hint``
    is given. A link naming another application than ``application_id`` is refused."""
    text = text.strip()
    if hint is not None:
        return Activation(code=text, hint=hint.strip())
    if "://" in text or text.startswith("keybound:"):
        try:
            linked_app, token = read_activation_link(text)
        except ValueError as exc:
            raise ClientError(
                f"not an activation link: {exc}", code=ErrorCode.MALFORMED_REQUEST
            ) from None
        if linked_app is not None and application_id is not None and linked_app != application_id:
            raise ClientError(
                f"this activation link is for application {linked_app!r}; this "
                f"device belongs to {application_id!r}",
                code=ErrorCode.CLIENT_CONFIGURATION,
            )
        return Activation(token=token)
    if _TOKEN.fullmatch(text):
        try:
            return Activation(token=b64u_decode(text))
        except ValueError:
            pass  # not base64url after all: perhaps a typed code
    typed = _TYPED.fullmatch(text)
    if typed is not None:
        return Activation(hint=typed.group(1), code=typed.group(2))
    raise ClientError(
        "give the activation link (or its token), or the typed code with its "
        "hint as HINT-CODE (e.g. 7KQ2MX-483920)",
        code=ErrorCode.MALFORMED_REQUEST,
    )
