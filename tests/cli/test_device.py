"""``keybound device`` and the SDK as a new user meets them (issue 14, defect 8): a key store
asked for by name that cannot be used, options after the action, one state directory for
the command and ``open_device``, and errors that say what was expected and what to do. Real
subprocesses; a real server on 127.0.0.1 where one is needed (tests/live.py)."""

from __future__ import annotations

import ast
import inspect
import json
import re
import socket
import time
from pathlib import Path

import pytest

from keybound import channel
from keybound.cli import build_parser
from keybound.cli.device import CONFIG_FILE
from keybound.client import Device, open_device, open_keystore, preset
from keybound.client.config import DEFAULT_STATE_DIR
from keybound.client.keystores import TPM_TCTI_ENV, tpm
from keybound.client.sealed import SealedTransport
from keybound.errors import ClientError, ErrorCode, KeyStoreError
from tests.live import Server, device, fails, ok

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ("activate", "authenticate", "pending", "status", "deactivate")


def _dead_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _offline_pin(tmp_path: Path, server_url: str = "http://127.0.0.1:9") -> Path:
    """A valid pin file for an application whose server is not running."""
    key = channel.generate_e2e_key(now=int(time.time()))
    path = tmp_path / "bank.pin"
    path.write_text(
        channel.export_pin(key, application_id="bank", server_url=server_url).to_string() + "\n"
    )
    return path


def _close(opened: Device) -> None:
    transport = opened._transport
    assert isinstance(transport, SealedTransport)
    transport.close()


# -- a key store asked for by name must work ----------------------------------------------


def test_keystore_tpm_without_a_usable_tpm_is_an_error(tmp_path: Path) -> None:
    """``--keystore tpm`` used to activate with software keys and exit 0 on a machine without
    a usable TPM. Now it fails, says why and what to do, and writes nothing."""
    pin = _offline_pin(tmp_path)
    state = tmp_path / "device"
    tcti = f"swtpm:host=127.0.0.1,port={_dead_port()}"
    stderr = fails(
        device(
            state,
            "activate",
            "123456",
            "--keystore",
            "tpm",
            "--tcti",
            tcti,
            "--channel-pin-file",
            str(pin),
        ),
        "keystore_unavailable",
    )
    assert f"the TPM 2.0 at {tcti} cannot be used" in stderr
    assert "--keystore auto falls back to software keys" in stderr
    assert not state.exists()
    if not tpm.DEFAULT_DEVICE.exists():  # nothing names a TPM, and the machine has none
        stderr = fails(
            device(
                state,
                "activate",
                "123456",
                "--keystore",
                "tpm",
                "--channel-pin-file",
                str(pin),
                unset=(TPM_TCTI_ENV,),
            ),
            "keystore_unavailable",
        )
        assert "no TPM 2.0 on this machine" in stderr
        assert not state.exists()


def test_open_keystore_tpm_without_a_usable_tpm_is_an_error(tmp_path: Path) -> None:
    tcti = f"swtpm:host=127.0.0.1,port={_dead_port()}"
    with pytest.raises(KeyStoreError) as refused:
        open_keystore("tpm", tmp_path, {"tcti": tcti})
    assert refused.value.code is ErrorCode.KEYSTORE_UNAVAILABLE
    assert tcti in refused.value.detail


def test_keystore_auto_says_when_it_falls_back(tmp_path: Path, live_server: Server) -> None:
    app = live_server.app()
    nowhere = f"swtpm:host=127.0.0.1,port={_dead_port()}"
    done = device(
        tmp_path / "device",
        "activate",
        app.code(),
        "--channel-pin-file",
        str(app.pin_file),
        env={TPM_TCTI_ENV: nowhere},
    )
    assert ok(done)["hwKeyClientStatus"] == "NOT_SUPPORTED"
    assert (
        "--keystore auto found no usable TPM 2.0: this device uses software keys only"
        in done.stderr
    )


# -- options in either place ------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_state_dir_before_or_after_the_action(action: str) -> None:
    extra = ["123456"] if action == "activate" else []
    parser = build_parser()
    after = parser.parse_args(["device", action, *extra, "--state-dir", "/x/after"])
    before = parser.parse_args(["device", "--state-dir", "/x/before", action, *extra])
    both = parser.parse_args(
        ["device", "--state-dir", "/x/before", action, *extra, "--state-dir", "/x/after"]
    )
    default = parser.parse_args(["device", action, *extra])
    assert (after.state_dir, before.state_dir, both.state_dir, default.state_dir) == (
        Path("/x/after"),
        Path("/x/before"),
        Path("/x/after"),
        DEFAULT_STATE_DIR,
    )


def test_status_with_state_dir_after_the_action(tmp_path: Path) -> None:
    state = tmp_path / "device"
    _close(open_device(state, channel_pin=_offline_pin(tmp_path), profile=preset("linux")))
    done = device(tmp_path / "elsewhere", "status", "--state-dir", str(state))
    status = ok(done)
    assert (status["stateDir"], status["applicationId"], status["activated"]) == (
        str(state),
        "bank",
        False,
    )


# -- one state directory, one format ----------------------------------------------------------


def test_open_device_uses_a_device_the_command_activated(
    tmp_path: Path, live_server: Server
) -> None:
    app = live_server.app()
    state = tmp_path / "device"
    device_id = ok(
        device(
            state,
            "activate",
            app.code(),
            "--keystore",
            "none",
            "--channel-pin-file",
            str(app.pin_file),
        )
    )["deviceId"]
    assert ok(device(state, "authenticate"))["authMethod"] == "DEVICE"
    opened = open_device(state)  # no pin, no profile: device-config.json has what it needs
    try:
        assert opened.device_id == device_id
        result = opened.authenticate()
    finally:
        _close(opened)
    assert app.rp.operation(result.operation_id)["state"] == "COMPLETED"
    assert ok(device(state, "authenticate"))["authMethod"] == "DEVICE"  # and back again


def test_the_command_uses_a_device_open_device_made(tmp_path: Path, live_server: Server) -> None:
    app = live_server.app()
    state = tmp_path / "device"
    opened = open_device(state, channel_pin=app.pin_file, profile=preset("android-14"))
    try:
        device_id = opened.activate(app.code(), pin="2468").device_id
    finally:
        _close(opened)
    config = json.loads((state / CONFIG_FILE).read_text())
    assert (config["application_id"], config["keystore"], config["profile"]) == (
        "bank",
        "none",
        "android-14",
    )
    status = ok(device(state, "status"))
    assert (status["deviceId"], status["activated"], status["secureChannel"]) == (
        device_id,
        True,
        True,
    )
    with_pin = ok(device(state, "authenticate", "--with-pin", stdin="2468\n"))
    assert with_pin["authMethod"] == "DEVICE:PIN"
    assert ok(device(state, "deactivate"))["state"] == "DEACTIVATED"
    assert app.rp.device(device_id)["state"] == "DEACTIVATED"


def test_a_new_channel_pin_given_to_open_device_is_the_commands_too(
    tmp_path: Path, live_server: Server
) -> None:
    """E2E key rotation: the app ships the new key's pin and opens the device with it; once
    the old key is retired, ``keybound device`` must talk through the new one too."""
    app = live_server.app()
    state = tmp_path / "device"
    ok(
        device(
            state,
            "activate",
            app.code(),
            "--keystore",
            "none",
            "--channel-pin-file",
            str(app.pin_file),
        )
    )
    rotated = live_server.pin_file(app.kb.admin.create_e2e_key("bank").key_id)
    opened = open_device(state, channel_pin=rotated)
    try:
        opened.authenticate()
    finally:
        _close(opened)
    app.kb.admin.retire_e2e_key(app.key_id)
    assert ok(device(state, "authenticate"))["authMethod"] == "DEVICE"


def test_open_device_without_a_pin_anywhere_says_what_it_needs(tmp_path: Path) -> None:
    with pytest.raises(ClientError) as info:
        open_device(tmp_path / "empty", profile=preset("linux"))
    assert info.value.code is ErrorCode.CLIENT_CONFIGURATION
    assert "open_device needs channel_pin" in info.value.detail
    assert "keybound e2e-key" in info.value.detail


def test_the_readme_snippet_calls_the_sdk_as_it_is() -> None:
    """The README's Python snippet is what a new user copies: every keyword it passes exists,
    and ``pin=`` means one thing (the user's PIN), the channel pin being ``channel_pin=``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert snippets
    functions = {
        "open_device": open_device,
        "open_keystore": open_keystore,
        "preset": preset,
        "activate": Device.activate,
        "authenticate": Device.authenticate,
    }
    called = set()
    for snippet in snippets:
        for node in ast.walk(ast.parse(snippet)):
            if not isinstance(node, ast.Call):
                continue
            name = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            if name not in functions:
                continue
            called.add(name)
            parameters = inspect.signature(functions[name]).parameters
            for keyword in node.keywords:
                assert keyword.arg in parameters, (name, keyword.arg)
            if name == "open_device":
                assert "channel_pin" in {k.arg for k in node.keywords}
    assert {"open_device", "activate", "authenticate"} <= called


# -- errors that say what was expected and what to do -------------------------------------


def test_a_server_that_is_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_dead_port()}"
    stderr = fails(
        device(
            tmp_path / "device",
            "activate",
            "7KQ2MX-483920",
            "--keystore",
            "none",
            "--channel-pin-file",
            str(_offline_pin(tmp_path, url)),
        ),
        "client_transport",
    )
    assert f"cannot reach the keybound server at {url}" in stderr
    assert "check that it is running and that this is its address" in stderr


@pytest.mark.parametrize("content", ["hello\n", '{"v": 1}\n', ""])
def test_a_pin_file_that_is_not_a_pin(tmp_path: Path, content: str) -> None:
    not_a_pin = tmp_path / "bank.pin"
    not_a_pin.write_text(content)
    stderr = fails(
        device(
            tmp_path / "device",
            "activate",
            "7KQ2MX-483920",
            "--keystore",
            "none",
            "--channel-pin-file",
            str(not_a_pin),
        ),
        "client_configuration",
    )
    assert f"{not_a_pin} is not a channel pin" in stderr
    assert "`keybound e2e-key create APP`" in stderr and '{"v":1,"applicationId"' in stderr
    assert not (tmp_path / "device").exists()
    stderr = fails(
        device(tmp_path / "device", "activate", "123456", "--channel-pin", "bank.pin"),
        "client_configuration",
    )
    assert "the --channel-pin value is not a channel pin" in stderr
