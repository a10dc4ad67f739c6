"""Small helpers shared by the server's service modules."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime

from keybound.protocol import ActivationCodeType, OperationContext

CHALLENGE_BYTES = 32

_ALPHABETS = {
    ActivationCodeType.NUMERIC: "0123456789",
    ActivationCodeType.ALPHA: "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    ActivationCodeType.ALPHANUMERIC: "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
}


def new_id() -> str:
    return str(uuid.uuid4())


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def new_activation_code(kind: ActivationCodeType, length: int) -> str:
    alphabet = _ALPHABETS[kind]
    return "".join(secrets.choice(alphabet) for _ in range(length))


def normalize_activation_code(code: str) -> str:
    return code.strip().upper()


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dump_context(context: OperationContext | None) -> str | None:
    return None if context is None else json.dumps(context.to_wire())


def load_context(raw: str | None) -> OperationContext | None:
    return None if raw is None else OperationContext.model_validate(json.loads(raw))
