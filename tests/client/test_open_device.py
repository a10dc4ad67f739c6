"""``open_device`` refusing a pin for another application leaves the stored device as it was
(profile included) and leaves no HTTP client open."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import httpx
import pytest

from keybound import channel
from keybound.client import open_device, preset
from keybound.client.state import StateStore
from keybound.errors import ClientError, ErrorCode


def _pin(application_id: str) -> channel.ChannelPin:
    key = channel.generate_e2e_key(now=int(time.time()))
    return channel.export_pin(key, application_id=application_id, server_url="http://127.0.0.1:9")


def _open_clients() -> list[httpx.Client]:
    return [o for o in gc.get_objects() if isinstance(o, httpx.Client) and not o.is_closed]


def test_pin_for_another_application_changes_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    device = open_device(state_dir, channel_pin=_pin("bank"), profile=preset("linux"))
    device._transport.close()
    before = (state_dir / "device.json").read_bytes()
    open_before = {id(c) for c in _open_clients()}
    with pytest.raises(ClientError) as info:
        open_device(state_dir, channel_pin=_pin("shop"), profile=preset("android-14"))
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
    assert "'bank'" in info.value.detail and "'shop'" in info.value.detail
    # the refusal came before anything was written: the stored profile is still linux
    assert (state_dir / "device.json").read_bytes() == before
    assert StateStore(state_dir).load().profile == preset("linux")
    # and no client was left open (the traceback in ``info`` would keep one alive)
    assert [c for c in _open_clients() if id(c) not in open_before] == []
    reopened = open_device(state_dir, channel_pin=_pin("bank"))
    assert reopened.profile == preset("linux")
    reopened._transport.close()
