"""What a (re)activation can be started with (docs/protocol.md §3.2.5): the activation
link's long secret (the token), or the typed fallback -- a short code bound to its activation
by a hint, with a budget of attempts after which the short code is burnt (the token is not).

Pure rules: drawing the values, normalising what a user typed, the attempt budget, and the
judgement of one attempt. Storage keeps only keyed hashes of the token and the code
(server.secrets, Purpose.ACTIVATION_TOKEN / ACTIVATION_CODE)."""

from __future__ import annotations

import hmac
import secrets
from enum import StrEnum
from typing import Final

from keybound.protocol import ActivationCodeType

_ALPHABETS = {
    ActivationCodeType.NUMERIC: "0123456789",
    ActivationCodeType.ALPHA: "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    ActivationCodeType.ALPHANUMERIC: "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
}

#: the activation link's secret: 256 bits, far beyond any number of guesses
TOKEN_BYTES: Final = 32
#: Crockford's base32: no I, L, O, U, so a hint read aloud or off paper is typed right
HINT_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
HINT_LENGTH: Final = 6
#: typed attempts a code allows at most; fewer for small code spaces (code_attempts)
MAX_CODE_ATTEMPTS: Final = 5
#: the bound every typed code keeps under any configuration: attempts / code space (§10)
GUESS_BOUND: Final = 10_000
_HINT_READS: Final = str.maketrans({"O": "0", "I": "1", "L": "1"})


class Attempt(StrEnum):
    """The judgement of one typed attempt (§3.1.1)."""

    MATCH = "match"
    WRONG = "wrong"  # counted; attempts remain
    BURNT = "burnt"  # counted, and it was the last: the short code is burnt


def new_activation_code(kind: ActivationCodeType, length: int) -> str:
    alphabet = _ALPHABETS[kind]
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_activation_hint() -> str:
    return "".join(secrets.choice(HINT_ALPHABET) for _ in range(HINT_LENGTH))


def new_activation_token() -> bytes:
    return secrets.token_bytes(TOKEN_BYTES)


def normalize_activation_code(code: str) -> str:
    return code.strip().upper()


def normalize_activation_hint(hint: str) -> str:
    """Upper case, and the letters Crockford's base32 reads as digits (O -> 0, I/L -> 1)."""
    return hint.strip().upper().translate(_HINT_READS)


def code_space(kind: ActivationCodeType, length: int) -> int:
    space: int = len(_ALPHABETS[kind]) ** length
    return space


def code_attempts(kind: ActivationCodeType, length: int) -> int:
    """The attempt budget of a typed code: at most MAX_CODE_ATTEMPTS, and never more than
    keeps attempts / code space <= 1 / GUESS_BOUND (one attempt for 4 digits)."""
    return max(1, min(MAX_CODE_ATTEMPTS, code_space(kind, length) // GUESS_BOUND))


def judge_attempt(given_hash: bytes, *, expected_hash: bytes, attempts_left: int) -> Attempt:
    """One typed attempt, already counted (``attempts_left`` is what remains after it):
    compared in constant time."""
    if hmac.compare_digest(given_hash, expected_hash):
        return Attempt.MATCH
    return Attempt.BURNT if attempts_left <= 0 else Attempt.WRONG
