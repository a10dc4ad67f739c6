"""Shared helpers: the copied vectors (tests/vectors/attestation) and their manifest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "attestation"
MANIFEST = VECTORS / "manifest.json"


def manifest_entry(entry_id: str) -> dict[str, Any]:
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    for section in ("android", "apple", "tpm"):
        for entry in manifest[section]:
            if entry["id"] == entry_id:
                return dict(entry)
    raise KeyError(entry_id)


def entries(section: str) -> list[dict[str, Any]]:
    return list(json.loads(MANIFEST.read_text(encoding="utf-8"))[section])


def pem_chain(relative: str) -> tuple[bytes, ...]:
    certificates = x509.load_pem_x509_certificates((VECTORS / relative).read_bytes())
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in certificates)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
