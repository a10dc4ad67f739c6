"""Fixtures of the channel tests."""

from __future__ import annotations

import pytest

from keybound import channel
from keybound.channel import (
    ChannelSuite,
    E2EKey,
    ResponseOpener,
)
from tests.channel.support import BODY, METHOD, NOW, PATH, SUITES, key_for, open_with, pin_for


@pytest.fixture(params=SUITES, ids=str)
def suite(request: pytest.FixtureRequest) -> ChannelSuite:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def key(suite: ChannelSuite) -> E2EKey:
    return key_for(suite)


@pytest.fixture
def sealed(key: E2EKey) -> tuple[bytes, ResponseOpener]:
    return channel.seal_request(pin_for(key), METHOD, PATH, BODY, now=NOW)


@pytest.fixture
def response(key: E2EKey, sealed: tuple[bytes, ResponseOpener]) -> tuple[bytes, ResponseOpener]:
    wire, opener = sealed
    return channel.seal_response(open_with(key, wire), 200, b'{"ok":true}'), opener
