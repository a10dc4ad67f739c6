"""The device state directory: round trip, permissions, atomic replacement, corruption."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keybound.client import Device, Transport, preset
from keybound.client.files import write_private
from keybound.client.keystores import KeyHandle
from keybound.client.keystores.software import SoftwareKey
from keybound.client.state import STATE_FILE, ClientState, Registration, StateStore
from keybound.errors import ClientError, ErrorCode
from keybound.protocol import AuthMethod, HwKeyClientStatus

DEVICE_ID = "0b6f3c7e-8a51-4d5e-9f0a-1c2d3e4f5a6b"


@pytest.fixture
def transport() -> Iterator[Transport]:
    with httpx.Client(base_url="http://127.0.0.1:9") as client:
        yield Transport(client)


def full_state() -> ClientState:
    old = Registration(
        device_id=DEVICE_ID,
        confirmed=True,
        software_keys=(SoftwareKey.generate().to_pem(), SoftwareKey.generate().to_pem()),
        hardware_key=KeyHandle(store="emulated", public_key=b"\x30spki", ref={"key_id": "ab"}),
        activation_hw_status=HwKeyClientStatus.OK,
        pin_salt=bytes(32),
        auth_methods=(AuthMethod.DEVICE, AuthMethod.DEVICE_PIN),
    )
    new = Registration(
        device_id=DEVICE_ID,
        confirmed=False,
        software_keys=(SoftwareKey.generate().to_pem(),),
        activation_hw_status=HwKeyClientStatus.GENERATION_FAILED,
    )
    return ClientState(application_id="app", profile=preset("ios-17"), registrations=(old, new))


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "device")
    state = full_state()
    store.save(state)
    assert store.load() == state
    assert store.load().current == state.registrations[-1]


def test_permissions(tmp_path: Path) -> None:
    directory = tmp_path / "device"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    store = StateStore(directory)
    store.save(full_state())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(ClientState(application_id="app", profile=preset("linux")))
    inode = store.path.stat().st_ino
    state = full_state()
    store.save(state)
    assert store.load() == state
    assert store.path.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_wipe(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(full_state())
    store.wipe()
    assert not store.exists()


def test_missing_state_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ClientError) as info:
        StateStore(tmp_path).load()
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION


def _corrupt(document: dict[str, object], how: str) -> str:
    registration = document["registrations"][0]  # type: ignore[index]
    if how == "not-json":
        return "{not json"
    if how == "truncated":
        return json.dumps(document)[:-40]
    if how == "not-object":
        return "[]"
    if how == "wrong-format":
        document["format"] = "something-else"
    elif how == "future-version":
        document["version"] = 99
    elif how == "missing-field":
        del document["application_id"]
    elif how == "bad-pem":
        registration["software_keys"] = ["-----BEGIN PRIVATE KEY-----\nAAAA\n-----END"]
    elif how == "no-keys":
        registration["software_keys"] = []
    elif how == "bad-salt":
        registration["pin_salt"] = "AAAA"
    elif how == "bad-status":
        registration["activation_hw_status"] = "MAYBE"
    elif how == "bad-type":
        registration["confirmed"] = "yes"
    elif how == "bad-profile":
        document["profile"] = {"platform": "PALM", "os_version": "1"}
    elif how == "bad-b64":
        registration["hardware_key"]["public_key"] = "not base64!"
    return json.dumps(document)


@pytest.mark.parametrize(
    "how",
    [
        "not-json",
        "truncated",
        "not-object",
        "wrong-format",
        "future-version",
        "missing-field",
        "bad-pem",
        "no-keys",
        "bad-salt",
        "bad-status",
        "bad-type",
        "bad-profile",
        "bad-b64",
    ],
)
def test_corrupted_state_is_a_clear_configuration_error(tmp_path: Path, how: str) -> None:
    store = StateStore(tmp_path)
    state = full_state()
    store.save(state)
    store.path.write_text(_corrupt(json.loads(store.path.read_text()), how))
    with pytest.raises(ClientError) as info:
        store.load()
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
    assert "corrupted" in info.value.detail
    assert "PRIVATE KEY" not in str(info.value)


def test_state_file_holds_no_pin_or_pin_key(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(full_state())
    registration = json.loads(store.path.read_text())["registrations"][0]
    assert set(registration) == {
        "device_id",
        "confirmed",
        "software_keys",
        "hardware_key",
        "activation_hw_status",
        "pin_salt",
        "auth_methods",
    }


# ---------------------------------------------------------------------- Device and its state


def test_device_create_then_load(tmp_path: Path, transport: Transport) -> None:
    device = Device.create(
        tmp_path / "d", application_id="app", transport=transport, profile=preset("android-14")
    )
    assert not device.activated and device.device_id is None and not device.has_hardware_key
    loaded = Device.load(tmp_path / "d", transport=transport)
    assert loaded.application_id == "app"
    assert loaded.profile == preset("android-14")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700


def test_device_load_replaces_the_profile(tmp_path: Path, transport: Transport) -> None:
    Device.create(tmp_path, application_id="app", transport=transport, profile=preset("ios-9"))
    Device.load(tmp_path, transport=transport, profile=preset("ios-17"))
    assert Device.load(tmp_path, transport=transport).profile == preset("ios-17")


def test_device_create_refuses_an_existing_device(tmp_path: Path, transport: Transport) -> None:
    Device.create(tmp_path, application_id="app", transport=transport, profile=preset("linux"))
    with pytest.raises(ClientError) as info:
        Device.create(tmp_path, application_id="app", transport=transport, profile=preset("linux"))
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION


def test_device_create_refuses_a_bad_application_id(tmp_path: Path, transport: Transport) -> None:
    with pytest.raises(ClientError) as info:
        Device.create(
            tmp_path, application_id="Bad App", transport=transport, profile=preset("linux")
        )
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION


def test_device_load_of_a_corrupted_state(tmp_path: Path, transport: Transport) -> None:
    Device.create(tmp_path, application_id="app", transport=transport, profile=preset("linux"))
    (tmp_path / STATE_FILE).write_bytes(b"\x00\xff garbage")
    with pytest.raises(ClientError) as info:
        Device.load(tmp_path, transport=transport)
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION


def test_unactivated_device_refuses_ceremonies(tmp_path: Path, transport: Transport) -> None:
    device = Device.create(
        tmp_path, application_id="app", transport=transport, profile=preset("linux")
    )
    for call in (device.authenticate, device.pending, device.deactivate):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.code is ErrorCode.CLIENT_NOT_ACTIVATED


def test_os_refusals_are_configuration_errors_naming_the_path(tmp_path: Path) -> None:
    """NotADirectoryError / IsADirectoryError from the file layer become
    ClientError(CLIENT_CONFIGURATION) with the path, never a bare OSError."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(ClientError) as info:
        StateStore(a_file / "device").save(full_state())
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
    assert str(a_file / "device" / STATE_FILE) in info.value.detail
    with pytest.raises(ClientError) as info:
        write_private(a_file / "x.json", b"{}")
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
    assert str(a_file / "x.json") in info.value.detail
    directory = tmp_path / "device"
    (directory / STATE_FILE).mkdir(parents=True)  # a directory where the file should be
    store = StateStore(directory)
    for action in (lambda: store.save(full_state()), store.wipe):
        with pytest.raises(ClientError) as info:
            action()
        assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
        assert str(store.path) in info.value.detail
    assert sorted(p.name for p in directory.iterdir()) == [STATE_FILE]  # no temp file left
