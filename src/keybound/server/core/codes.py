"""Activation codes: drawn at random from the application's alphabet (docs/protocol.md §3.2)."""

from __future__ import annotations

import hashlib
import secrets

from keybound.protocol import ActivationCodeType

_ALPHABETS = {
    ActivationCodeType.NUMERIC: "0123456789",
    ActivationCodeType.ALPHA: "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    ActivationCodeType.ALPHANUMERIC: "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
}


def new_activation_code(kind: ActivationCodeType, length: int) -> str:
    alphabet = _ALPHABETS[kind]
    return "".join(secrets.choice(alphabet) for _ in range(length))


def normalize_activation_code(code: str) -> str:
    return code.strip().upper()


def activation_code_hash(application_id: str, code: str) -> bytes:
    """What the database keeps of a code, to find it by."""
    normalized = normalize_activation_code(code)
    return hashlib.sha256(application_id.encode() + b"\x00" + normalized.encode()).digest()
