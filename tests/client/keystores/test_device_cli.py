"""``keybound device ...`` driven as a user would: real subprocesses against a real server
(uvicorn on a fresh SQLite database, plaintext switch OFF: every request goes through the
secure channel) with real secure hardware (a private swtpm, a SoftHSM2 token)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keybound.cli.device import CONFIG_FILE, PIN_ENV
from keybound.client import open_device, open_keystore, preset
from keybound.client.keystores import TPM_TCTI_ENV
from tests.client.keystores.conftest import SoftHsmBed, SwtpmBed
from tests.live import TOKEN_PIN_ENV, Server, device, fails, ok

pytestmark = pytest.mark.server


@pytest.fixture
def server(live_server: Server) -> Server:
    return live_server


def state_files(state_dir: Path) -> list[Path]:
    return [p for p in state_dir.rglob("*") if p.is_file()]


# -- TPM: the whole life of a device -------------------------------------------------------


@pytest.mark.swtpm
def test_tpm_device_lifecycle(tmp_path: Path, server: Server, swtpm: SwtpmBed) -> None:
    app = server.app(hwKeyValidationStrategy="REQUIRED")
    state = tmp_path / "device"
    activated = ok(
        device(
            state,
            "activate",
            app.code(),
            "--keystore",
            "tpm",
            "--tcti",
            swtpm.tcti,
            "--channel-pin-file",
            str(app.pin_file),
        )
    )
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
    op_id = app.rp.start_operation(device_id, preOperationContext=pre, postOperationContext=post)[
        "operationId"
    ]
    pending = ok(device(state, "pending"))["operations"]
    assert [(o["operationId"], o["preOperationContext"]) for o in pending] == [(op_id, pre)]
    declined = device(state, "authenticate", "--operation-id", op_id, stdin="n\n")
    assert "Pay 100 EUR to ACME" in fails(declined, "invalid_state")
    assert app.rp.operation(op_id)["result"] == {"failureCode": "declined"}
    op_id = app.rp.start_operation(device_id, preOperationContext=pre, postOperationContext=post)[
        "operationId"
    ]
    answered = ok(device(state, "authenticate", "--operation-id", op_id, "--yes"))
    assert answered["operationId"] == op_id and answered["postOperationContext"] == post
    operation = app.rp.operation(op_id)
    assert operation["state"] == "COMPLETED"
    assert operation["riskData"]["hwKeyServerResult"] == "VALID"

    # a signature: the data is listed and shown; the TPM key signs its hash (§3.2.5)
    data = {"content": "I agree to contract #4711", "mimeType": "text/plain"}
    op_id = app.rp.start_signature(device_id, data["content"])["operationId"]
    (listed,) = ok(device(state, "pending"))["operations"]
    assert (listed["operationType"], listed["dataToSign"]) == ("SIGNATURE", data)
    fails(device(state, "authenticate", "--operation-id", op_id, "--yes"), "invalid_state")
    signed = device(state, "sign", op_id, stdin="y\n")
    assert "contract #4711" in signed.stderr  # the question showed the data
    assert ok(signed)["signedData"] == data
    operation = app.rp.operation(op_id)
    assert (operation["state"], operation["type"]) == ("COMPLETED", "SIGNATURE")
    assert operation["riskData"]["hwKeyServerResult"] == "VALID"
    assert operation["resultJws"].count(".") == 2

    # deactivate: the server says DEACTIVATED, the local configuration is gone
    assert ok(device(state, "deactivate")) == {"deviceId": device_id, "state": "DEACTIVATED"}
    assert app.rp.device(device_id)["state"] == "DEACTIVATED"
    assert not (state / CONFIG_FILE).exists()
    fails(device(state, "status"), "client_not_activated")
    # the directory can hold a new device again
    code, hint = app.typed()  # typed this time, the hint given apart
    again = ok(
        device(
            state,
            "activate",
            code,
            "--hint",
            hint,
            "--keystore",
            "tpm",
            "--tcti",
            swtpm.tcti,
            "--channel-pin-file",
            str(app.pin_file),
        )
    )
    assert again["deviceId"] != device_id and again["hardwareKeyRegistered"] is True


@pytest.mark.swtpm
def test_device_pin(tmp_path: Path, server: Server, swtpm: SwtpmBed) -> None:
    app = server.app()
    state = tmp_path / "device"
    activated = ok(
        device(
            state,
            "activate",
            app.code(),
            "--keystore",
            "tpm",
            "--tcti",
            swtpm.tcti,
            "--channel-pin-file",
            str(app.pin_file),
            "--with-pin",
            env={PIN_ENV: "2468"},
        )
    )
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


# -- one state directory for the command and the SDK (issue 14) -----------------------------


@pytest.mark.swtpm
def test_a_tpm_device_moves_between_the_command_and_open_device(
    tmp_path: Path, server: Server, swtpm: SwtpmBed
) -> None:
    """The key store's options travel in device-config.json: a TPM named by --tcti is the
    one open_device reopens, and a TPM store open_device was given is the command's."""
    tcti = swtpm.tcti
    app = server.app(hwKeyValidationStrategy="REQUIRED")
    by_command = tmp_path / "command"
    ok(
        device(
            by_command,
            "activate",
            app.code(),
            "--keystore",
            "tpm",
            "--tcti",
            tcti,
            "--channel-pin-file",
            str(app.pin_file),
            unset=(TPM_TCTI_ENV,),
        )
    )
    opened = open_device(by_command)
    try:
        assert opened.hardware is not None and opened.hardware.options() == {"tcti": tcti}
        assert opened.authenticate().hw_key_client_status.value == "OK"
    finally:
        opened._transport.close()  # type: ignore[attr-defined]
    by_sdk = tmp_path / "sdk"
    made = open_device(
        by_sdk,
        channel_pin=app.pin_file,
        profile=preset("linux"),
        hardware=open_keystore("tpm", by_sdk, {"tcti": tcti}),
    )
    try:
        assert made.activate(app.code()).hardware_key_registered
    finally:
        made._transport.close()  # type: ignore[attr-defined]
    status = ok(device(by_sdk, "status", unset=(TPM_TCTI_ENV,)))
    assert (status["keystore"], status["hardwareKey"]) == (f"tpm ({tcti})", True)
    assert ok(device(by_sdk, "authenticate", unset=(TPM_TCTI_ENV,)))["hwKeyClientStatus"] == "OK"


# -- PKCS#11 ----------------------------------------------------------------------------------


@pytest.mark.softhsm
def test_pkcs11_device(tmp_path: Path, server: Server, softhsm: SoftHsmBed) -> None:
    app = server.app(hwKeyValidationStrategy="REQUIRED")
    state = tmp_path / "device"
    token = softhsm.main
    env = {**token.env, TOKEN_PIN_ENV: token.user_pin}
    activated = ok(
        device(
            state,
            "activate",
            app.code(),
            "--keystore",
            "pkcs11",
            "--pkcs11-module",
            softhsm.module,
            "--token-label",
            token.label,
            "--token-pin-env",
            TOKEN_PIN_ENV,
            "--channel-pin-file",
            str(app.pin_file),
            env=env,
        )
    )
    assert activated["hardwareKeyRegistered"] is True
    status = ok(device(state, "status", env=env))
    assert status["hardwareKey"] is True and status["keystoreAvailable"] is True
    assert status["secureChannel"] is True and token.label in status["keystore"]
    auth = ok(device(state, "authenticate", env=env))
    assert app.risk(auth["operationId"]) == {
        "hwKeyClientStatus": "OK",
        "hwKeyServerResult": "VALID",
    }
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
    wrong = fails(
        device(
            state,
            "activate",
            app.code(),
            "--channel-pin-file",
            str(server.pin_file(inactive.key_id)),
        ),
        "decryption_failed",
    )
    assert "pinned E2E key is unknown or retired" in wrong
    # setting up again with the right pin replaces the unfinished set-up
    activated = ok(device(state, "activate", app.code(), "--channel-pin-file", str(app.pin_file)))
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
    issued = app.rp.call("POST", f"/rp/v1/devices/{activated['deviceId']}/reactivation", expect=201)
    typed = f"{issued['activationHint']}-{issued['activationCode']}"  # as the user types it
    reactivated = ok(device(state, "activate", typed, "--channel-pin-file", str(rotated)))
    assert reactivated["reactivated"] is True
    assert reactivated["deviceId"] == activated["deviceId"]
    assert ok(device(state, "authenticate"))["authMethod"] == "DEVICE"
    missing = fails(
        device(
            tmp_path / "other",
            "activate",
            app.code(),
            "--channel-pin-file",
            str(tmp_path / "nope.pin"),
        ),
        "client_configuration",
    )
    assert "nope.pin" in missing


# -- detection: a TPM is found without being named; without one, software keys -------------


@pytest.mark.swtpm
def test_keystore_auto_detection(tmp_path: Path, server: Server, swtpm: SwtpmBed) -> None:
    app = server.app(hwKeyValidationStrategy="RISK_PARAMS")
    found = ok(
        device(
            tmp_path / "with-tpm",
            "activate",
            app.code(),
            "--channel-pin-file",
            str(app.pin_file),
            env={TPM_TCTI_ENV: swtpm.tcti},
        )
    )
    assert found["hardwareKeyRegistered"] is True
    assert ok(device(tmp_path / "with-tpm", "status"))["keystore"] == f"tpm ({swtpm.tcti})"
    # with nothing named (not even inherited), /dev/tpmrm0 decides; without one the device
    # uses software keys, quietly
    without = device(
        tmp_path / "without",
        "activate",
        app.code(),
        "--channel-pin-file",
        str(app.pin_file),
        unset=(TPM_TCTI_ENV,),
    )
    none = ok(without)
    has_tpm = Path("/dev/tpmrm0").exists()
    assert none["hardwareKeyRegistered"] is has_tpm
    assert none["hwKeyClientStatus"] == ("OK" if has_tpm else "NOT_SUPPORTED")
    assert TPM_TCTI_ENV not in without.stderr
    # a TCTI that leads nowhere is ignored with a warning, not fatal
    nowhere = "swtpm:host=127.0.0.1,port=9"
    gone_run = device(
        tmp_path / "gone",
        "activate",
        app.code(),
        "--channel-pin-file",
        str(app.pin_file),
        env={TPM_TCTI_ENV: nowhere},
    )
    assert ok(gone_run)["hwKeyClientStatus"] == "NOT_SUPPORTED"
    assert f"ignoring {TPM_TCTI_ENV}" in gone_run.stderr


@pytest.mark.swtpm
def test_keystore_auto_takes_tcti_and_refuses_pkcs11_flags(
    tmp_path: Path, server: Server, swtpm: SwtpmBed
) -> None:
    """Under the default ``--keystore auto`` a ``--tcti`` is the TPM to use (it beats the
    environment), and PKCS#11 flags are refused rather than silently ignored."""
    app = server.app(hwKeyValidationStrategy="RISK_PARAMS")
    state = tmp_path / "tcti"
    found = ok(
        device(
            state,
            "activate",
            app.code(),
            "--channel-pin-file",
            str(app.pin_file),
            "--tcti",
            swtpm.tcti,
            env={TPM_TCTI_ENV: "swtpm:host=127.0.0.1,port=9"},
        )
    )
    assert found["hardwareKeyRegistered"] is True
    assert found["hwKeyClientStatus"] == "OK"
    config = json.loads((state / CONFIG_FILE).read_text())
    assert (config["keystore"], config["keystore_options"]) == ("tpm", {"tcti": swtpm.tcti})
    assert ok(device(state, "authenticate"))["hwKeyClientStatus"] == "OK"
    for flags in (
        ["--token-label", "t"],
        ["--slot", "0"],
        ["--pkcs11-module", "/x.so"],
        ["--token-pin-env", "X"],
    ):
        target = tmp_path / f"pkcs11{flags[0]}"
        stderr = fails(
            device(target, "activate", app.code(), "--channel-pin-file", str(app.pin_file), *flags),
            "client_configuration",
        )
        assert flags[0] in stderr and "--keystore pkcs11" in stderr
        assert not target.exists()


def test_options_of_another_key_store_are_refused(tmp_path: Path, server: Server) -> None:
    """PKCS#11 flags with any key store but pkcs11, and --tcti with one that is not a TPM,
    are refused before anything is written, rather than silently ignored."""
    app = server.app()
    cases = [
        (keystore, ["--token-label", "t"], "--keystore pkcs11")
        for keystore in ("none", "emulated", "tpm")
    ]
    cases += [
        (keystore, ["--tcti", "swtpm:host=127.0.0.1,port=9"], "--keystore tpm")
        for keystore in ("none", "emulated", "pkcs11")
    ]
    for keystore, flags, needed in cases:
        target = tmp_path / f"{keystore}{flags[0]}"
        stderr = fails(
            device(
                target,
                "activate",
                app.code(),
                "--channel-pin-file",
                str(app.pin_file),
                "--keystore",
                keystore,
                *flags,
            ),
            "client_configuration",
        )
        assert flags[0] in stderr and needed in stderr and f"not --keystore {keystore}" in stderr
        assert not target.exists()


@pytest.mark.swtpm
def test_keystore_tpm_takes_the_tpm_the_environment_names(
    tmp_path: Path, server: Server, swtpm: SwtpmBed
) -> None:
    """``--keystore tpm`` without ``--tcti`` uses the TPM ``$KEYBOUND_TPM_TCTI`` names, as
    ``--keystore auto`` does, and stores it; a ``--tcti`` beats the environment."""
    app = server.app(hwKeyValidationStrategy="REQUIRED")
    state = tmp_path / "env"
    activated = ok(
        device(
            state,
            "activate",
            app.code(),
            "--keystore",
            "tpm",
            "--channel-pin-file",
            str(app.pin_file),
            env={TPM_TCTI_ENV: swtpm.tcti},
        )
    )
    assert activated["hardwareKeyRegistered"] is True
    config = json.loads((state / CONFIG_FILE).read_text())
    assert config["keystore_options"] == {"tcti": swtpm.tcti}
    assert ok(device(state, "authenticate"))["hwKeyClientStatus"] == "OK"
    flagged = tmp_path / "flag"
    ok(
        device(
            flagged,
            "activate",
            app.code(),
            "--keystore",
            "tpm",
            "--tcti",
            swtpm.tcti,
            "--channel-pin-file",
            str(app.pin_file),
            env={TPM_TCTI_ENV: "swtpm:host=127.0.0.1,port=9"},
        )
    )
    assert json.loads((flagged / CONFIG_FILE).read_text())["keystore_options"] == {
        "tcti": swtpm.tcti
    }


def test_unusable_state_directory_is_a_clear_error(tmp_path: Path, server: Server) -> None:
    """OSErrors from the device's files (a file as the state directory, a directory where
    the config should be) are client_configuration errors naming the path, no traceback."""
    app = server.app()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    stderr = fails(
        device(
            a_file / "device",
            "activate",
            app.code(),
            "--keystore",
            "none",
            "--channel-pin-file",
            str(app.pin_file),
        ),
        "client_configuration",
    )
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
    activated = ok(
        device(
            state,
            "activate",
            app.code(),
            "--channel-pin-file",
            str(app.pin_file),
            "--keystore",
            "none",
        )
    )
    assert ok(device(state, "push-token", "fcm", "tok:" + "x" * 30))["pushProvider"] == "fcm"
    with app.kb.db.read() as conn:
        stored = conn.execute(
            select(t.push_tokens.c.token).where(t.push_tokens.c.device_id == activated["deviceId"])
        ).scalar()
    assert stored == "tok:" + "x" * 30
    fails(device(state, "push-token", "apns", "not-hex"), "malformed_request")
    fails(device(state, "push-token"), "client_configuration")
    assert ok(device(state, "push-token", "--remove"))["pushProvider"] is None
