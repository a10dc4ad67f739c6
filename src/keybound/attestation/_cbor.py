"""Bounded CBOR decoding (cbor2) for attestation objects.

Definite lengths only, no duplicate map keys, a small nesting limit, a size limit, and only
plain data items (integers, byte and text strings, booleans, null, arrays, maps): a tag, a
float or a shared reference is refused rather than interpreted (WebAuthn §6.5.1 and Apple's
App Attest objects use none of them).
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from keybound.attestation.base import Reason, fail

#: Nesting limit (attestation objects nest four deep).
MAX_DEPTH = 16

_ERRORS = (
    cbor2.CBORError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    UnicodeError,
    EOFError,
)


def decode(data: object, *, what: str, max_bytes: int) -> Any:
    """Decode one CBOR item that must span all of ``data``."""
    value, used = decode_prefix(data, what=what, max_bytes=max_bytes)
    if used != len(data):  # type: ignore[arg-type]  # decode_prefix checked it is bytes
        raise fail(Reason.MALFORMED, f"{what}: trailing bytes after the CBOR item")
    return value


def decode_prefix(data: object, *, what: str, max_bytes: int) -> tuple[Any, int]:
    """Decode the CBOR item at the start of ``data``; return it and its length."""
    if not isinstance(data, bytes | bytearray):
        raise fail(Reason.MALFORMED, f"{what} must be bytes")
    if len(data) > max_bytes:
        raise fail(Reason.MALFORMED, f"{what} is larger than {max_bytes} bytes")
    stream = io.BytesIO(bytes(data))
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            read_size=1,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            tag_hook=_refuse_tag,
        )
        value = decoder.decode()
    except _ERRORS as exc:
        raise fail(Reason.MALFORMED, f"{what} is not valid CBOR: {type(exc).__name__}") from exc
    _check_plain(value, what, 0)
    return value, stream.tell()


def _refuse_tag(_decoder: object, tag: object) -> object:
    raise ValueError("CBOR tags are not accepted")


def _check_plain(value: object, what: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise fail(Reason.MALFORMED, f"{what}: nested too deeply")
    if value is None or isinstance(value, bool | int | bytes | str):
        return
    if isinstance(value, list):
        for item in value:
            _check_plain(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, what, depth + 1)
            _check_plain(item, what, depth + 1)
        return
    raise fail(Reason.MALFORMED, f"{what}: CBOR item of type {type(value).__name__}")
