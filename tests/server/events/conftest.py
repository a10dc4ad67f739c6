"""Fixtures for the webhook tests: a signing secret pair and a running receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keybound.server.events.signing import (
    AsymmetricSecret,
    SymmetricSecret,
    generate_ed25519_secret,
    generate_symmetric_secret,
)
from tests.server.events.receiver import Receiver


@pytest.fixture(scope="session")
def hmac_secret() -> SymmetricSecret:
    return generate_symmetric_secret()


@pytest.fixture(scope="session")
def ed25519_secret() -> AsymmetricSecret:
    return generate_ed25519_secret()


@pytest.fixture
def receiver(hmac_secret: SymmetricSecret, ed25519_secret: AsymmetricSecret) -> Iterator[Receiver]:
    """Accepts a v1 signature by ``hmac_secret`` or a v1a one by ``ed25519_secret``."""
    running = Receiver(
        secrets=(hmac_secret.serialize(),), public_keys=(ed25519_secret.public_key().serialize(),)
    ).start()
    try:
        yield running
    finally:
        running.stop()
