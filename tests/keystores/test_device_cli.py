"""``keybound device ...`` driven as a user would: real subprocesses against a real server
(uvicorn on a fresh SQLite database, plaintext switch OFF: every request goes through the
secure channel) with real secure hardware (a private swtpm, a SoftHSM2 token)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from tests.helpers import RelyingParty
from tests.keystores.conftest import SoftHsmBed, SwtpmBed

from keybound.cli.device import CONFIG_FILE, PIN_ENV
from keybound.client.keystores import TPM_TCTI_ENV
from keybound.server.core.appconfig import AppConfig
from keybound.server.services import Keybound
from keybound.server.web.runner import BackgroundServer

pytestmark = pytest.mark.server

TOKEN_PIN_ENV = "KB_TEST_TOKEN_PIN"


@dataclass
class App:
    """An application on the running server: its relying party and its pin file."""

    kb: Keybound
    rp: RelyingParty
    key_id: str
    pin_file: Path

    def code(self) -> str:
        return str(self.rp.activation_code()["activationCode"])

    def risk(self, operation_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.rp.operation(operation_id)["riskData"])


@dataclass
class Server:
    kb: Keybound
    url: str
    directory: Path
    clients: list[httpx.Client]

    def app(self, name: str = "bank", **settings: object) -> App:
        self.kb.admin.create_application(name, AppConfig().updated(settings))
        token = self.kb.admin.create_api_key(name).token
        key = self.kb.admin.create_e2e_key(name)
        return App(kb=self.kb, rp=self.rp(name, token), key_id=key.key_id,
                   pin_file=self.pin_file(key.key_id))

    def rp(self, name: str, token: str) -> RelyingParty:
        client = httpx.Client(base_url=self.url, timeout=30)
        self.clients.append(client)
        return RelyingParty(cast(Any, client), name, token)

    def pin_file(self, key_id: str) -> Path:
        """The pin string an app ships, exported for this server's URL, in a file."""
        path = self.directory / f"{key_id}.pin"
        path.write_text(self.kb.admin.e2e_pin(key_id, server_url=self.url).to_string() + "\n",
                        encoding="utf-8")
        return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    kb = Keybound.open(f"sqlite:///{tmp_path / 'keybound.db'}")
    clients: list[httpx.Client] = []
    try:
        with BackgroundServer(kb) as running:  # allow_plaintext off
            yield Server(kb=kb, url=running.url, directory=tmp_path, clients=clients)
    finally:
        for client in clients:
            client.close()
        kb.close()


def device(state_dir: Path, *args: str, env: dict[str, str] | None = None,
           stdin: str = "", unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``keybound device --state-dir STATE_DIR ARGS...`` in a fresh process, detached from any
    terminal (so a PIN prompt reads stdin) and without an inherited device PIN (nor the
    variables in ``unset``)."""
    base = {k: v for k, v in os.environ.items() if k not in (PIN_ENV, TOKEN_PIN_ENV, *unset)}
    return subprocess.run(
        [sys.executable, "-m", "keybound.cli", "device", "--state-dir", str(state_dir), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
        env={**base, **(env or {})}, start_new_session=True)


def ok(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    return cast(dict[str, Any], json.loads(done.stdout))


def fails(done: subprocess.CompletedProcess[str], code: str) -> str:
    """Exit 2 with ``code`` on stderr, nothing on stdout, and no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"keybound device: {code}: " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    return done.stderr


def state_files(state_dir: Path) -> list[Path]:
    return [p for p in state_dir.rglob("*") if p.is_file()]


# -- TPM: the whole life of a device -------------------------------------------------------

@pytest.mark.swtpm
def test_tpm_device_lifecycle(tmp_path: Path, server: Server, swtpm: SwtpmBed) -> None:
    app = server.app(hwKeyValidationStrategy="REQUIRED")
    state = tmp_path / "device"
    activated = ok(device(state, "activate", app.code(), "--keystore", "tpm",
                          "--tcti", swtpm.tcti, "--channel-pin-file", str(app.pin_file)))
    assert activated["hardwareKeyRegistered"] is True
    assert activated["hwKeyClientStatus"] == "OK"
    assert activated["reactivated"] is False
    device_id = activated["deviceId"]
    assert app.rp.device(device_id)["hardwareKey"] is True

    status = ok(device(state, "status"))
    assert status["activated"] is True and status["deviceId"] == device_id
    assert status["hardwareKey"] is True and status["keystoreAvailable"] is True
    assert status["secureChannel"] is True
    assert status["keystore"] == f"tpm ({swtpm.tcti})"
    assert status["applicationId"] == "bank" and status["serverUrl"] == server.url

    # device-initiated
    auth = ok(device(state, "authenticate"))
    assert (auth["authMethod"], auth["hwKeyClientStatus"]) == ("DEVICE", "OK")
    operation = app.rp.operation(auth["operationId"])
    assert operation["state"] == "COMPLETED"
    assert operation["riskData"] == {"hwKeyClientStatus": "OK", "hwKeyServerResult": "VALID"}

    # backend-initiated: listed with its pre-operation context, declined, then approved
    pre = {"content": "Pay 100 EUR to ACME", "mimeType": "text/plain"}
    post = {"content": "receipt-4711", "mimeType": "text/plain"}
    op_id = app.rp.start_operation(device_id, preOperationContext=pre,
                                   postOperationContext=post)["operationId"]
    pending = ok(device(state, "pending"))["operations"]
    assert [(o["operationId"], o["preOperationContext"]) for o in pending] == [(op_id, pre)]
    declined = device(state, "authenticate", "--operation-id", op_id, stdin="n\n")
    assert "Pay 100 EUR to ACME" in fails(declined, "invalid_state")
    assert app.rp.operation(op_id)["result"] == {"failureCode": "declined"}
    op_id = app.rp.start_operation(device_id, preOperationContext=pre,
                                   postOperationContext=post)["operationId"]
    answered = ok(device(state, "authenticate", "--operation-id", op_id, "--yes"))
    assert answered["operationId"] == op_id and answered["postOperationContext"] == post
    operation = app.rp.operation(op_id)
    assert operation["state"] == "COMPLETED"
    assert operation["riskData"]["hwKeyServerResult"] == "VALID"

    # deactivate: the server says DEACTIVATED, the local configuration is gone
    assert ok(device(state, "deactivate")) == {"deviceId": device_id, "state": "DEACTIVATED"}
    assert app.rp.device(device_id)["state"] == "DEACTIVATED"
    assert not (state / CONFIG_FILE).exists()
    fails(device(state, "status"), "client_not_activated")
    # the directory can hold a new device again
    again = ok(device(state, "activate", app.code(), "--keystore", "tpm",
                      "--tcti", swtpm.tcti, "--channel-pin-file", str(app.pin_file)))
    assert again["deviceId"] != device_id and again["hardwareKeyRegistered"] is True


@pytest.mark.swtpm
def test_device_pin(tmp_path: Path, server: Server, swtpm: SwtpmBed) -> None:
    app = server.app()
    state = tmp_path / "device"
    activated = ok(device(state, "activate", app.code(), "--keystore", "tpm", "--tcti",
                          swtpm.tcti, "--channel-pin-file", str(app.pin_file), "--with-pin",
                          env={PIN_ENV: "2468"}))
    assert "DEVICE:PIN" in activated["authMethods"]
    right = ok(device(state, "authenticate", "--with-pin", env={PIN_ENV: "2468"}))
    assert (right["authMethod"], right["authLevel"]) == ("DEVICE:PIN", "TWO_FACTOR")
    assert app.risk(right["operationId"])["hwKeyServerResult"] == "VALID"
    fails(device(state, "authenticate", "--with-pin", env={PIN_ENV: "1357"}), "pin_invalid")
    # without the variable the PIN is prompted for (read from stdin without a terminal)
    prompted = ok(device(state, "authenticate", "--with-pin", stdin="2468\n"))
    assert prompted["authMethod"] == "DEVICE:PIN"
    fails(device(state, "authenticate", "--with-pin"), "client_configuration")  # no PIN at all
    assert not any("2468" in p.read_text(errors="replace") for p in state_files(state))


# -- PKCS#11 ----------------------------------------------------------------------------------

@pytest.mark.softhsm
def test_pkcs11_device(tmp_path: Path, server: Server, softhsm: SoftHsmBed) -> None:
    app = server.app(hwKeyValidationStrategy="REQUIRED")
    state = tmp_path / "device"
    token = softhsm.main
    env = {**token.env, TOKEN_PIN_ENV: token.user_pin}
    activated = ok(device(state, "activate", app.code(), "--keystore", "pkcs11",
                          "--pkcs11-module", softhsm.module, "--token-label", token.label,
                          "--token-pin-env", TOKEN_PIN_ENV,
                          "--channel-pin-file", str(app.pin_file), env=env))
    assert activated["hardwareKeyRegistered"] is True
    status = ok(device(state, "status", env=env))
    assert status["hardwareKey"] is True and status["keystoreAvailable"] is True
    assert status["secureChannel"] is True and token.label in status["keystore"]
    auth = ok(device(state, "authenticate", env=env))
    assert app.risk(auth["operationId"]) == {"hwKeyClientStatus": "OK",
                                             "hwKeyServerResult": "VALID"}
    # the token PIN is read from the environment on every run and never written down
    files = state_files(state)
    assert files and (state / CONFIG_FILE) in files
    assert not any(token.user_pin in p.read_text(errors="replace") for p in files)
    assert json.loads((state / CONFIG_FILE).read_text())["token_pin_env"] == TOKEN_PIN_ENV
    assert TOKEN_PIN_ENV in fails(device(state, "status", env=token.env), "client_configuration")
    assert ok(device(state, "deactivate", env=env))["state"] == "DEACTIVATED"
    assert app.rp.device(activated["deviceId"])["state"] == "DEACTIVATED"
    assert not (state / CONFIG_FILE).exists()


# -- clear errors -----------------------------------------------------------------------------

def test_not_activated(tmp_path: Path) -> None:
    for action in ("status", "authenticate", "pending", "deactivate"):
        stderr = fails(device(tmp_path / "empty", action), "client_not_activated")
        assert "keybound device activate" in stderr


def test_wrong_and_retired_channel_pin(tmp_path: Path, server: Server) -> None:
    app = server.app()
    state = tmp_path / "device"
    # a pin for a key the server does not use (INACTIVE: shipped before activation)
    inactive = app.kb.admin.create_e2e_key("bank", active=False)
    wrong = fails(device(state, "activate", app.code(), "--channel-pin-file",
                         str(server.pin_file(inactive.key_id))), "decryption_failed")
    assert "pinned E2E key is unknown or retired" in wrong
    # setting up again with the right pin replaces the unfinished set-up
    activated = ok(device(state, "activate", app.code(), "--channel-pin-file",
                          str(app.pin_file)))
    assert activated["hwKeyClientStatus"] == "NOT_SUPPORTED"
    assert ok(device(state, "status"))["secureChannel"] is True
    # the key is retired: the device's requests can no longer be opened
    app.kb.admin.retire_e2e_key(app.key_id)
    fails(device(state, "authenticate"), "decryption_failed")
    # rotation: the relying party reactivates the device, which takes the new key's pin
    rotated = server.pin_file(app.kb.admin.create_e2e_key("bank").key_id)
    other_app = server.app("shop")
    refused = device(state, "activate", app.code(), "--channel-pin-file", str(other_app.pin_file))
    assert "'bank'" in fails(refused, "client_configuration")
    code = app.rp.call("POST", f"/rp/v1/devices/{activated['deviceId']}/reactivation",
                       expect=201)["activationCode"]
    reactivated = ok(device(state, "activate", code, "--channel-pin-file", str(rotated)))
    assert reactivated["reactivated"] is True
    assert reactivated["deviceId"] == activated["deviceId"]
    assert ok(device(state, "authenticate"))["authMethod"] == "DEVICE"
    missing = fails(device(tmp_path / "other", "activate", app.code(), "--channel-pin-file",
                           str(tmp_path / "nope.pin")), "client_configuration")
    assert "nope.pin" in missing


# -- detection: a TPM is found without being named; without one, software keys -------------

@pytest.mark.swtpm
def test_keystore_auto_detection(tmp_path: Path, server: Server, swtpm: SwtpmBed) -> None:
    app = server.app(hwKeyValidationStrategy="RISK_PARAMS")
    found = ok(device(tmp_path / "with-tpm", "activate", app.code(),
                      "--channel-pin-file", str(app.pin_file),
                      env={TPM_TCTI_ENV: swtpm.tcti}))
    assert found["hardwareKeyRegistered"] is True
    assert ok(device(tmp_path / "with-tpm", "status"))["keystore"] == f"tpm ({swtpm.tcti})"
    # with nothing named (not even inherited), /dev/tpmrm0 decides; without one the device
    # uses software keys, quietly
    without = device(tmp_path / "without", "activate", app.code(),
                     "--channel-pin-file", str(app.pin_file), unset=(TPM_TCTI_ENV,))
    none = ok(without)
    has_tpm = Path("/dev/tpmrm0").exists()
    assert none["hardwareKeyRegistered"] is has_tpm
    assert none["hwKeyClientStatus"] == ("OK" if has_tpm else "NOT_SUPPORTED")
    assert TPM_TCTI_ENV not in without.stderr
    # a TCTI that leads nowhere is ignored with a warning, not fatal
    nowhere = "swtpm:host=127.0.0.1,port=9"
    gone_run = device(tmp_path / "gone", "activate", app.code(), "--channel-pin-file",
                      str(app.pin_file), env={TPM_TCTI_ENV: nowhere})
    assert ok(gone_run)["hwKeyClientStatus"] == "NOT_SUPPORTED"
    assert f"ignoring {TPM_TCTI_ENV}" in gone_run.stderr


@pytest.mark.swtpm
def test_keystore_auto_takes_tcti_and_refuses_pkcs11_flags(tmp_path: Path, server: Server,
                                                           swtpm: SwtpmBed) -> None:
    """Under the default ``--keystore auto`` a ``--tcti`` is the TPM to use (it beats the
    environment), and PKCS#11 flags are refused rather than silently ignored."""
    app = server.app(hwKeyValidationStrategy="RISK_PARAMS")
    state = tmp_path / "tcti"
    found = ok(device(state, "activate", app.code(), "--channel-pin-file", str(app.pin_file),
                      "--tcti", swtpm.tcti,
                      env={TPM_TCTI_ENV: "swtpm:host=127.0.0.1,port=9"}))
    assert found["hardwareKeyRegistered"] is True
    assert found["hwKeyClientStatus"] == "OK"
    config = json.loads((state / CONFIG_FILE).read_text())
    assert (config["keystore"], config["keystore_options"]) == ("tpm", {"tcti": swtpm.tcti})
    assert ok(device(state, "authenticate"))["hwKeyClientStatus"] == "OK"
    for flags in (["--token-label", "t"], ["--slot", "0"], ["--pkcs11-module", "/x.so"],
                  ["--token-pin-env", "X"]):
        target = tmp_path / f"pkcs11{flags[0]}"
        stderr = fails(device(target, "activate", app.code(), "--channel-pin-file",
                              str(app.pin_file), *flags), "client_configuration")
        assert flags[0] in stderr and "--keystore pkcs11" in stderr
        assert not target.exists()


def test_options_of_another_key_store_are_refused(tmp_path: Path, server: Server) -> None:
    """PKCS#11 flags with any key store but pkcs11, and --tcti with one that is not a TPM,
    are refused before anything is written, rather than silently ignored."""
    app = server.app()
    cases = [(keystore, ["--token-label", "t"], "--keystore pkcs11")
             for keystore in ("none", "emulated", "tpm")]
    cases += [(keystore, ["--tcti", "swtpm:host=127.0.0.1,port=9"], "--keystore tpm")
              for keystore in ("none", "emulated", "pkcs11")]
    for keystore, flags, needed in cases:
        target = tmp_path / f"{keystore}{flags[0]}"
        stderr = fails(device(target, "activate", app.code(), "--channel-pin-file",
                              str(app.pin_file), "--keystore", keystore, *flags),
                       "client_configuration")
        assert flags[0] in stderr and needed in stderr and f"not --keystore {keystore}" in stderr
        assert not target.exists()


@pytest.mark.swtpm
def test_keystore_tpm_takes_the_tpm_the_environment_names(tmp_path: Path, server: Server,
                                                         swtpm: SwtpmBed) -> None:
    """``--keystore tpm`` without ``--tcti`` uses the TPM ``$KEYBOUND_TPM_TCTI`` names, as
    ``--keystore auto`` does, and stores it; a ``--tcti`` beats the environment."""
    app = server.app(hwKeyValidationStrategy="REQUIRED")
    state = tmp_path / "env"
    activated = ok(device(state, "activate", app.code(), "--keystore", "tpm",
                          "--channel-pin-file", str(app.pin_file),
                          env={TPM_TCTI_ENV: swtpm.tcti}))
    assert activated["hardwareKeyRegistered"] is True
    config = json.loads((state / CONFIG_FILE).read_text())
    assert config["keystore_options"] == {"tcti": swtpm.tcti}
    assert ok(device(state, "authenticate"))["hwKeyClientStatus"] == "OK"
    flagged = tmp_path / "flag"
    ok(device(flagged, "activate", app.code(), "--keystore", "tpm", "--tcti", swtpm.tcti,
              "--channel-pin-file", str(app.pin_file),
              env={TPM_TCTI_ENV: "swtpm:host=127.0.0.1,port=9"}))
    assert json.loads((flagged / CONFIG_FILE).read_text())["keystore_options"] == {
        "tcti": swtpm.tcti}


def test_unusable_state_directory_is_a_clear_error(tmp_path: Path, server: Server) -> None:
    """OSErrors from the device's files (a file as the state directory, a directory where
    the config should be) are client_configuration errors naming the path, no traceback."""
    app = server.app()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    stderr = fails(device(a_file / "device", "activate", app.code(), "--keystore", "none",
                          "--channel-pin-file", str(app.pin_file)), "client_configuration")
    assert str(a_file / "device") in stderr
    stderr = fails(device(a_file, "status"), "client_configuration")
    assert str(a_file / CONFIG_FILE) in stderr
    state = tmp_path / "device"
    (state / CONFIG_FILE).mkdir(parents=True)
    for action in ("status", "deactivate"):
        assert str(state / CONFIG_FILE) in fails(device(state, action), "client_configuration")


def test_push_token(tmp_path: Path, server: Server) -> None:
    from sqlalchemy import select

    from keybound.storage import tables as t

    app = server.app()
    state = tmp_path / "device"
    activated = ok(device(state, "activate", app.code(), "--channel-pin-file",
                          str(app.pin_file), "--keystore", "none"))
    assert ok(device(state, "push-token", "fcm", "tok:" + "x" * 30))["pushProvider"] == "fcm"
    with app.kb.db.read() as conn:
        stored = conn.execute(select(t.push_tokens.c.token).where(
            t.push_tokens.c.device_id == activated["deviceId"])).scalar()
    assert stored == "tok:" + "x" * 30
    fails(device(state, "push-token", "apns", "not-hex"), "malformed_request")
    fails(device(state, "push-token"), "client_configuration")
    assert ok(device(state, "push-token", "--remove"))["pushProvider"] is None
