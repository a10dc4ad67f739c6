"""``keybound device ...``: make this machine a keybound device from the shell.

The device keeps two files in its state directory: ``device-config.json`` (how to reach the
server and which key store to use; no secrets — a token PIN is read from an environment
variable named in the config) and the SDK's own state. Hardware keys live in the TPM or on
the PKCS#11 token; the state directory holds only wrapped blobs and public keys.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from keybound.client import Device, Transport, open_keystore, preset
from keybound.client.keystores import KeyStore
from keybound.errors import ClientError, ErrorCode

CONFIG_FILE = "device-config.json"
PIN_ENV = "KEYBOUND_DEVICE_PIN"
DEFAULT_STATE_DIR = Path.home() / ".keybound" / "device"


@dataclass(kw_only=True)
class DeviceConfig:
    application_id: str
    server_url: str
    channel_pin: str | None = None
    profile: str = "linux"
    keystore: str = "none"  # none | tpm | pkcs11 | emulated
    keystore_options: dict[str, Any] = field(default_factory=dict)
    token_pin_env: str | None = None  # PKCS#11: the env var holding the token user PIN

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / CONFIG_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> DeviceConfig:
        path = directory / CONFIG_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ClientError(f"no device in {directory}: run `keybound device activate` first",
                              code=ErrorCode.CLIENT_NOT_ACTIVATED) from None
        except (ValueError, TypeError) as exc:
            raise ClientError(f"{path} is not a valid device configuration",
                              code=ErrorCode.CLIENT_CONFIGURATION) from exc


def _keystore(config: DeviceConfig, directory: Path) -> KeyStore | None:
    if config.keystore == "none":
        return None
    options = dict(config.keystore_options)
    if config.keystore == "pkcs11" and config.token_pin_env:
        pin = os.environ.get(config.token_pin_env)
        if pin is None:
            raise ClientError(f"set {config.token_pin_env} to the token's user PIN",
                              code=ErrorCode.CLIENT_CONFIGURATION)
        options["user_pin"] = pin
    return open_keystore(config.keystore, directory, options)


def _transport(config: DeviceConfig) -> Transport:
    if config.channel_pin:
        from keybound.client.channel import SealedTransport  # added with the secure channel

        return SealedTransport.from_pin_string(config.channel_pin)
    return Transport(httpx.Client(base_url=config.server_url, timeout=30))


def _device(directory: Path) -> tuple[Device, DeviceConfig]:
    config = DeviceConfig.load(directory)
    return Device.load(directory, transport=_transport(config),
                       hardware=_keystore(config, directory)), config


def _pin(args: argparse.Namespace) -> str | None:
    if not args.with_pin:
        return None
    from_env = os.environ.get(PIN_ENV)
    return from_env if from_env is not None else getpass.getpass("PIN: ")


# -- actions -------------------------------------------------------------------------------


def _activate(args: argparse.Namespace) -> dict[str, Any]:
    directory: Path = args.state_dir
    if (directory / CONFIG_FILE).exists():
        device, config = _device(directory)  # reactivation of this device
    else:
        pin_string = _read_channel_pin(args)
        application_id, server_url = args.application_id, args.server_url
        if pin_string:
            from keybound.channel import ChannelPin

            parsed = ChannelPin.from_string(pin_string)
            application_id, server_url = parsed.application_id, parsed.server_url
        if not application_id or not server_url:
            raise ClientError("give --channel-pin (or --application-id and --server-url)",
                              code=ErrorCode.CLIENT_CONFIGURATION)
        config = DeviceConfig(
            application_id=application_id, server_url=server_url, channel_pin=pin_string,
            profile=args.profile, keystore=args.keystore,
            keystore_options=_store_options(args), token_pin_env=args.token_pin_env)
        device = Device.create(directory, application_id=application_id,
                               transport=_transport(config), profile=preset(args.profile),
                               hardware=_keystore(config, directory))
        config.save(directory)
    result = device.activate(args.code, pin=_pin(args))
    return {"deviceId": result.device_id, "operationId": result.operation_id,
            "hardwareKeyRegistered": result.hardware_key_registered,
            "hwKeyClientStatus": result.hw_key_client_status.value,
            "authMethods": [m.value for m in result.auth_methods],
            "reactivated": result.reactivated}


def _read_channel_pin(args: argparse.Namespace) -> str | None:
    if args.channel_pin_file:
        return str(Path(args.channel_pin_file).read_text(encoding="utf-8").strip())
    pin: str | None = args.channel_pin
    return pin


def _store_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.keystore == "tpm":
        return {"tcti": args.tcti} if args.tcti else {}
    if args.keystore == "pkcs11":
        options: dict[str, Any] = {"module": args.pkcs11_module}
        if args.token_label:
            options["token_label"] = args.token_label
        return options
    return {}


def _authenticate(args: argparse.Namespace) -> dict[str, Any]:
    device, _ = _device(args.state_dir)

    def approve(context: Any) -> bool:
        if context is None or args.yes:
            return True
        print(f"approve? {context.content!r} [{context.mime_type}] (y/N) ", end="",
              file=sys.stderr, flush=True)
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    result = device.authenticate(operation_id=args.operation_id, pin=_pin(args),
                                 approve=approve)
    post = result.post_operation_context
    return {"operationId": result.operation_id, "authMethod": result.auth_method.value,
            "authLevel": result.auth_level.value,
            "hwKeyClientStatus": result.hw_key_client_status.value,
            **({"postOperationContext": post.to_wire()} if post else {})}


def _pending(args: argparse.Namespace) -> dict[str, Any]:
    device, _ = _device(args.state_dir)
    return {"operations": [
        {"operationId": op.operation_id, "expiresAt": op.expires_at.isoformat(),
         **({"preOperationContext": op.pre_operation_context.to_wire()}
            if op.pre_operation_context else {})}
        for op in device.pending()]}


def _status(args: argparse.Namespace) -> dict[str, Any]:
    device, config = _device(args.state_dir)
    store = device.hardware
    return {"stateDir": str(args.state_dir), "applicationId": config.application_id,
            "serverUrl": config.server_url, "secureChannel": bool(config.channel_pin),
            "activated": device.activated, "deviceId": device.device_id,
            "hardwareKey": device.has_hardware_key,
            "keystore": store.describe() if store else "none",
            "keystoreAvailable": bool(store and store.available()),
            "profile": config.profile}


def _deactivate(args: argparse.Namespace) -> dict[str, Any]:
    device, _ = _device(args.state_dir)
    device_id = device.device_id
    device.deactivate()
    (args.state_dir / CONFIG_FILE).unlink(missing_ok=True)
    return {"deviceId": device_id, "state": "DEACTIVATED"}


ACTIONS = {"activate": _activate, "authenticate": _authenticate, "pending": _pending,
           "status": _status, "deactivate": _deactivate}


def cmd_device(args: argparse.Namespace) -> int:
    try:
        result = ACTIONS[args.device_command](args)
    except ClientError as exc:
        print(f"keybound device: {exc.code.value}: {exc.detail}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def register(sub: Any) -> None:
    """Add ``device`` to the top-level parser's subcommands."""
    device = sub.add_parser("device", help="act as a keybound device (TPM, PKCS#11 or software)")
    device.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"where the device keeps its state (default {DEFAULT_STATE_DIR})")
    actions = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")

    activate = actions.add_parser("activate", help="activate (or reactivate) with a code")
    activate.add_argument("code", help="activation code from the relying party")
    activate.add_argument("--channel-pin", help="the server's E2E key pin string")
    activate.add_argument("--channel-pin-file", help="file holding the pin string")
    activate.add_argument("--application-id", help="application id (without a channel pin)")
    activate.add_argument("--server-url", help="server URL (without a channel pin)")
    activate.add_argument("--keystore", default="none",
                          choices=["none", "tpm", "pkcs11", "emulated"],
                          help="where the hardware key lives (default: none = software only)")
    activate.add_argument("--tcti", help="TPM TCTI, e.g. device:/dev/tpmrm0 or "
                          "swtpm:host=127.0.0.1,port=2321 (default /dev/tpmrm0)")
    activate.add_argument("--pkcs11-module", default="/usr/lib/softhsm/libsofthsm2.so",
                          help="PKCS#11 module path")
    activate.add_argument("--token-label", help="PKCS#11 token label")
    activate.add_argument("--token-pin-env", default="KEYBOUND_TOKEN_PIN",
                          help="environment variable holding the token user PIN")
    activate.add_argument("--profile", default="linux",
                          help="device profile preset (linux, android-14, ios-17, ...)")
    activate.add_argument("--with-pin", action="store_true",
                          help=f"set up DEVICE:PIN (PIN from ${PIN_ENV} or a prompt)")

    auth = actions.add_parser("authenticate", help="authenticate (device- or backend-initiated)")
    auth.add_argument("--operation-id", help="answer this backend-initiated operation")
    auth.add_argument("--with-pin", action="store_true",
                      help=f"use DEVICE:PIN (PIN from ${PIN_ENV} or a prompt)")
    auth.add_argument("--yes", action="store_true", help="approve without asking")

    actions.add_parser("pending", help="list backend-initiated operations waiting for us")
    actions.add_parser("status", help="show this device's state and key store")
    actions.add_parser("deactivate", help="deactivate at the server and wipe local keys")
    device.set_defaults(func=cmd_device)
