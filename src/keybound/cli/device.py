"""``keybound device ...``: make this machine a keybound device from the shell.

The state directory is the SDK's, in the SDK's format (:mod:`keybound.client.config`):
``device-config.json`` (how to reach the server and which key store to use; no secrets -- a
token PIN is read from an environment variable named in the config), the SDK's own state
``device.json`` and its ceremony lock. A device set up here opens with
``keybound.client.open_device(state_dir)``, and one the SDK made works here. Hardware keys
live in the TPM or on the PKCS#11 token; of them the state directory holds only wrapped blobs
and public keys. Commands on one directory take turns (the SDK's lock), so two at once never
trip the device's clone detection.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from keybound.channel import ChannelPin
from keybound.client import (
    PROFILES,
    AuthenticationResult,
    Device,
    SealedTransport,
    Transport,
    load_pin,
    preset,
)
from keybound.client.config import (
    CONFIG_FILE,
    DEFAULT_STATE_DIR,
    DEFAULT_TOKEN_PIN_ENV,
    DeviceConfig,
)
from keybound.client.files import remove_private
from keybound.client.keystores import TPM_TCTI_ENV, KeyStore, detect_keystore
from keybound.client.sealed import parse_pin
from keybound.client.state import StateStore
from keybound.errors import ClientError, ErrorCode, KeyboundError, KeyStoreError

__all__ = ["CONFIG_FILE", "DEFAULT_STATE_DIR", "PIN_ENV", "DeviceConfig", "cmd_device", "register"]

PIN_ENV = "KEYBOUND_DEVICE_PIN"
DEFAULT_PKCS11_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _transport(config: DeviceConfig) -> Transport:
    if config.channel_pin:
        return SealedTransport.from_pin_string(config.channel_pin)
    return Transport(httpx.Client(base_url=config.server_url, timeout=30))


def _device(directory: Path) -> tuple[Device, DeviceConfig]:
    """The configured device, its key store reopened for the keys it has: a store that
    cannot be opened now is reported to the server as an unavailable hardware key."""
    config = DeviceConfig.load(directory)
    if not StateStore(directory).exists():
        raise ClientError(
            f"{directory} has a {CONFIG_FILE} but no device: run `keybound device activate` again",
            code=ErrorCode.CLIENT_NOT_ACTIVATED,
        )
    hardware = config.open_keystore(directory, require_usable=False)
    return Device.load(directory, transport=_transport(config), hardware=hardware), config


def _pin(args: argparse.Namespace) -> str | None:
    if not args.with_pin:
        return None
    from_env = os.environ.get(PIN_ENV)
    if from_env is not None:
        return from_env
    try:
        return getpass.getpass("PIN: ")
    except EOFError:  # no terminal and nothing on stdin
        raise ClientError(
            f"--with-pin needs a PIN: set {PIN_ENV} or type it at the prompt",
            code=ErrorCode.CLIENT_CONFIGURATION,
        ) from None


# -- actions -------------------------------------------------------------------------------


def _activate(args: argparse.Namespace) -> dict[str, Any]:
    """Set a device up from the flags when the directory holds none (or only one that was
    never activated, and a server is given anew: say, after a first try with a wrong pin);
    else (re)activate the stored device with its stored configuration, taking a new channel
    pin of the same application if one is given (E2E key rotation)."""
    directory: Path = args.state_dir
    store = StateStore(directory)
    setup = None
    if not (directory / CONFIG_FILE).exists():  # bad flags, or a key store that does not
        setup = _setup(args)  # work, are refused before anything is written
    with store.lock():  # another command on this directory waits until this one is done
        config = DeviceConfig.find(directory)
        activated = store.exists() and store.load().current is not None
        if activated and config is None:
            raise ClientError(
                f"{directory} holds an activated device without its "
                f"{CONFIG_FILE}: open it once with keybound.client.open_device("
                "state_dir, channel_pin=...), which writes one",
                code=ErrorCode.CLIENT_CONFIGURATION,
            )
        if config is None or (not activated and _server_given(args)):
            config, hardware = setup or _setup(args)
            store.wipe()  # an unfinished set-up (never activated) holds no keys
            device = Device.create(
                directory,
                application_id=config.application_id,
                transport=_transport(config),
                profile=preset(config.profile or "linux"),
                hardware=hardware,
            )
            config.save(directory)
        else:
            if _server_given(args):
                config = _with_new_channel_pin(config, args)
            # a reactivation makes a new hardware key: its store must work
            device = Device.load(
                directory,
                transport=_transport(config),
                hardware=config.open_keystore(directory, require_usable=True),
            )
        result = device.activate(args.code, hint=args.hint, pin=_pin(args))
        config.save(directory)  # a new channel pin is kept once the server accepted it
    return {
        "deviceId": result.device_id,
        "operationId": result.operation_id,
        "hardwareKeyRegistered": result.hardware_key_registered,
        "hwKeyClientStatus": result.hw_key_client_status.value,
        "authMethods": [m.value for m in result.auth_methods],
        "reactivated": result.reactivated,
    }


def _setup(args: argparse.Namespace) -> tuple[DeviceConfig, KeyStore | None]:
    """A new device's configuration from the flags, and its key store, which must work."""
    config = _new_config(args)
    try:
        return config, config.open_keystore(args.state_dir, require_usable=True)
    except KeyStoreError as exc:
        raise KeyStoreError(
            f"--keystore {config.keystore}: {exc.detail} (--keystore auto "
            "falls back to software keys instead)",
            code=exc.code,
        ) from None


def _server_given(args: argparse.Namespace) -> bool:
    return bool(args.channel_pin or args.channel_pin_file or args.application_id or args.server_url)


def _with_new_channel_pin(config: DeviceConfig, args: argparse.Namespace) -> DeviceConfig:
    pin_string = _read_channel_pin(args)
    pinned = None if pin_string is None else ChannelPin.from_string(pin_string)
    if (
        pinned is None
        or pinned.application_id != config.application_id
        or (args.application_id and args.application_id != config.application_id)
    ):
        raise ClientError(
            f"this device is activated for application {config.application_id!r} at "
            f"{config.server_url}; a reactivation may only bring a new --channel-pin of that "
            "application (deactivate to set the device up anew)",
            code=ErrorCode.CLIENT_CONFIGURATION,
        )
    return replace(config, channel_pin=pin_string, server_url=pinned.server_url)


def _new_config(args: argparse.Namespace) -> DeviceConfig:
    pin_string = _read_channel_pin(args)
    application_id, server_url = args.application_id, args.server_url
    if pin_string:
        parsed = ChannelPin.from_string(pin_string)
        for flag, given, pinned in (
            ("--application-id", application_id, parsed.application_id),
            ("--server-url", server_url, parsed.server_url),
        ):
            if given and given != pinned:
                raise ClientError(
                    f"{flag} {given!r} contradicts the channel pin ({pinned!r})",
                    code=ErrorCode.CLIENT_CONFIGURATION,
                )
        application_id, server_url = parsed.application_id, parsed.server_url
    if not application_id or not server_url:
        raise ClientError(
            "give --channel-pin or --channel-pin-file (or --application-id and "
            "--server-url for a development server without the secure channel)",
            code=ErrorCode.CLIENT_CONFIGURATION,
        )
    preset(args.profile)  # an unknown profile is refused before anything is written
    keystore = _keystore_kind(args)
    if keystore == "auto":  # what this machine has: a TPM 2.0, or software keys only
        found = detect_keystore(args.state_dir)
        keystore, options = (found.kind, dict(found.options)) if found else ("none", {})
        if found is None:
            print(
                "keybound device: --keystore auto found no usable TPM 2.0: this device "
                "uses software keys only (name a store with --keystore tpm --tcti ... or "
                "--keystore pkcs11 to use secure hardware)",
                file=sys.stderr,
            )
    else:
        options = _store_options(args, keystore)
    return DeviceConfig(
        application_id=application_id,
        server_url=server_url,
        channel_pin=pin_string,
        profile=args.profile,
        keystore=keystore,
        keystore_options=options,
        token_pin_env=(args.token_pin_env or DEFAULT_TOKEN_PIN_ENV)
        if keystore == "pkcs11"
        else None,
    )


def _keystore_kind(args: argparse.Namespace) -> str:
    """``--keystore``; under ``auto`` a ``--tcti`` names the TPM to use. Options of another
    key store are refused, never silently ignored (a token is never auto-detected)."""
    pkcs11_flags = [
        flag
        for flag, given in (
            ("--pkcs11-module", args.pkcs11_module is not None),
            ("--token-label", args.token_label is not None),
            ("--slot", args.slot is not None),
            ("--token-pin-env", args.token_pin_env is not None),
        )
        if given
    ]
    if pkcs11_flags and args.keystore != "pkcs11":
        why = (
            "a PKCS#11 token is never detected automatically"
            if args.keystore == "auto"
            else f"not --keystore {args.keystore}"
        )
        raise ClientError(
            f"{', '.join(pkcs11_flags)} need(s) --keystore pkcs11: {why}",
            code=ErrorCode.CLIENT_CONFIGURATION,
        )
    if args.tcti and args.keystore not in ("auto", "tpm"):
        raise ClientError(
            f"--tcti needs --keystore tpm (or auto), not --keystore {args.keystore}",
            code=ErrorCode.CLIENT_CONFIGURATION,
        )
    if args.keystore != "auto":
        return str(args.keystore)
    return "tpm" if args.tcti else "auto"


def _read_channel_pin(args: argparse.Namespace) -> str | None:
    """The pin string from --channel-pin or --channel-pin-file, validated and canonical."""
    if args.channel_pin_file:
        return load_pin(Path(args.channel_pin_file)).to_string()
    if args.channel_pin:
        return parse_pin(str(args.channel_pin), "the --channel-pin value").to_string()
    return None


def _store_options(args: argparse.Namespace, keystore: str) -> dict[str, Any]:
    if keystore == "tpm":  # the TPM --tcti names, else $KEYBOUND_TPM_TCTI's, else the default
        tcti = args.tcti or os.environ.get(TPM_TCTI_ENV)
        return {"tcti": tcti} if tcti else {}
    if keystore == "pkcs11":
        options: dict[str, Any] = {"module": args.pkcs11_module or DEFAULT_PKCS11_MODULE}
        if args.token_label:
            options["token_label"] = args.token_label
        if args.slot is not None:
            options["slot"] = args.slot
        if len(options) != 2:
            raise ClientError(
                "--keystore pkcs11 needs exactly one of --token-label or --slot",
                code=ErrorCode.CLIENT_CONFIGURATION,
            )
        return options
    return {}


def _approver(args: argparse.Namespace, question: str) -> Any:
    def approve(context: Any) -> bool:
        if context is None or args.yes:
            return True
        print(
            f"{question} {context.content!r} [{context.mime_type}] (y/N) ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return approve


def _authenticate(args: argparse.Namespace) -> dict[str, Any]:
    device, _ = _device(args.state_dir)
    result = device.authenticate(
        operation_id=args.operation_id, pin=_pin(args), approve=_approver(args, "approve?")
    )
    post = result.post_operation_context
    return {**_answered(result), **({"postOperationContext": post.to_wire()} if post else {})}


def _sign(args: argparse.Namespace) -> dict[str, Any]:
    device, _ = _device(args.state_dir)
    result = device.sign(args.operation_id, pin=_pin(args), approve=_approver(args, "sign this?"))
    signed = result.signed_data
    return {**_answered(result), **({"signedData": signed.to_wire()} if signed else {})}


def _answered(result: AuthenticationResult) -> dict[str, Any]:
    return {
        "operationId": result.operation_id,
        "authMethod": result.auth_method.value,
        "authLevel": result.auth_level.value,
        "hwKeyClientStatus": result.hw_key_client_status.value,
    }


def _pending(args: argparse.Namespace) -> dict[str, Any]:
    device, _ = _device(args.state_dir)
    return {
        "operations": [
            {
                "operationId": op.operation_id,
                "operationType": op.operation_type.value,
                "expiresAt": op.expires_at.isoformat(),
                **(
                    {"preOperationContext": op.pre_operation_context.to_wire()}
                    if op.pre_operation_context
                    else {}
                ),
                **({"dataToSign": op.data_to_sign.to_wire()} if op.data_to_sign else {}),
                **(
                    {"requiredAuthMethod": op.required_auth_method.value}
                    if op.required_auth_method
                    else {}
                ),
            }
            for op in device.pending()
        ]
    }


def _status(args: argparse.Namespace) -> dict[str, Any]:
    device, config = _device(args.state_dir)
    store = device.hardware
    return {
        "stateDir": str(args.state_dir),
        "applicationId": config.application_id,
        "serverUrl": config.server_url,
        "secureChannel": bool(config.channel_pin),
        "activated": device.activated,
        "deviceId": device.device_id,
        "hardwareKey": device.has_hardware_key,
        "keystore": store.describe() if store else "none",
        "keystoreAvailable": bool(store and store.available()),
        "profile": config.profile or _profile_name(device),
    }


def _profile_name(device: Device) -> str:
    profile = device.profile
    return next(
        (name for name, known in PROFILES.items() if known == profile),
        f"{profile.platform.value} {profile.os_version}",
    )


def _deactivate(args: argparse.Namespace) -> dict[str, Any]:
    store = StateStore(args.state_dir)
    with store.lock():
        device, _ = _device(args.state_dir)
        device_id = device.device_id
        device.deactivate()  # keys deleted (hardware too); then the local files go
        remove_private(args.state_dir / CONFIG_FILE)
        store.wipe()
    return {"deviceId": device_id, "state": "DEACTIVATED"}


def _push_token(args: argparse.Namespace) -> dict[str, Any]:
    from pydantic import ValidationError

    from keybound.protocol import PushProvider, PushToken

    device, _ = _device(args.state_dir)
    token = None
    if not args.remove:
        if args.provider is None or args.token is None:
            raise ClientError(
                "give PROVIDER and TOKEN, or --remove", code=ErrorCode.CLIENT_CONFIGURATION
            )
        try:
            token = PushToken(provider=PushProvider(args.provider), token=args.token)
        except (ValidationError, ValueError):
            raise ClientError(
                "not a push token (printable ASCII, at most 4096 characters)",
                code=ErrorCode.CLIENT_CONFIGURATION,
            ) from None
    device.update_push_token(token)
    return {"deviceId": device.device_id, "pushProvider": token.provider.value if token else None}


ACTIONS = {
    "activate": _activate,
    "authenticate": _authenticate,
    "sign": _sign,
    "pending": _pending,
    "status": _status,
    "deactivate": _deactivate,
    "push-token": _push_token,
}


def cmd_device(args: argparse.Namespace) -> int:
    args.state_dir = Path(args.state_dir).expanduser()
    try:
        result = ACTIONS[args.device_command](args)
    except KeyboundError as exc:
        print(f"keybound device: {exc.code.value}: {exc.detail}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def register(sub: Any) -> None:
    """Add ``device`` to the top-level parser's subcommands."""
    device = sub.add_parser("device", help="act as a keybound device (TPM, PKCS#11 or software)")
    _with_device_options(device, default=DEFAULT_STATE_DIR)
    actions = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")

    activate = _with_device_options(
        actions.add_parser(
            "activate",
            help="activate (or reactivate) with an activation link or typed code",
            description="Set this device up from the flags and activate it; on a device that is "
            "already activated, reactivate it (reactivation code) with its stored configuration, "
            "taking a new --channel-pin(-file) of the same application if given. A device that "
            "was never activated is set up anew when a channel pin or server is given again.",
        )
    )
    activate.add_argument(
        "code",
        metavar="ACTIVATION",
        help="from the relying party: the activation link (or its token), "
        "or the typed code with its hint as HINT-CODE (e.g. 7KQ2MX-483920)",
    )
    activate.add_argument(
        "--hint", help="the activation hint, when ACTIVATION is the typed code alone"
    )
    pin = activate.add_mutually_exclusive_group()
    pin.add_argument(
        "--channel-pin",
        help="the server's E2E key pin string "
        "(`keybound e2e-key pin`): application, server URL and key",
    )
    pin.add_argument("--channel-pin-file", help="file holding the pin string")
    activate.add_argument(
        "--application-id",
        help="application id (development servers "
        "without the secure channel only, with --server-url)",
    )
    activate.add_argument(
        "--server-url",
        help="server URL (development servers started with "
        "--allow-plaintext only, with --application-id)",
    )
    activate.add_argument(
        "--keystore",
        default="auto",
        choices=["auto", "none", "tpm", "pkcs11", "emulated"],
        help="where the hardware key lives (default auto: the TPM at --tcti "
        f"if given, else the one ${TPM_TCTI_ENV} names (when set) or "
        "/dev/tpmrm0 if usable, else none = software keys only; a PKCS#11 "
        "token must be named with --keystore pkcs11; emulated: an emulated secure "
        "element for tests and demos, NOT secure hardware)",
    )
    activate.add_argument(
        "--tcti",
        help="TPM TCTI, e.g. device:/dev/tpmrm0 or "
        f"swtpm:host=127.0.0.1,port=2321 (default: ${TPM_TCTI_ENV} when "
        "set, else device:/dev/tpmrm0); --keystore tpm or auto only; with "
        "--keystore auto it selects the TPM",
    )
    activate.add_argument(
        "--pkcs11-module",
        help=f"PKCS#11 module path (--keystore pkcs11 only; default {DEFAULT_PKCS11_MODULE})",
    )
    activate.add_argument(
        "--token-label", help="PKCS#11 token label (or --slot; --keystore pkcs11 only)"
    )
    activate.add_argument(
        "--slot", type=int, help="PKCS#11 slot id (or --token-label; --keystore pkcs11 only)"
    )
    activate.add_argument(
        "--token-pin-env",
        help="environment variable holding the token user PIN, read on "
        "every run and never stored (--keystore pkcs11 only; default "
        f"{DEFAULT_TOKEN_PIN_ENV})",
    )
    activate.add_argument(
        "--profile", default="linux", help="device profile preset (linux, android-14, ios-17, ...)"
    )
    activate.add_argument(
        "--with-pin",
        action="store_true",
        help=f"set up DEVICE:PIN (PIN from ${PIN_ENV} or a prompt)",
    )

    auth = _with_device_options(
        actions.add_parser("authenticate", help="authenticate (device- or backend-initiated)")
    )
    auth.add_argument("--operation-id", help="answer this backend-initiated operation")
    auth.add_argument(
        "--with-pin", action="store_true", help=f"use DEVICE:PIN (PIN from ${PIN_ENV} or a prompt)"
    )
    auth.add_argument("--yes", action="store_true", help="approve without asking")

    sign = _with_device_options(
        actions.add_parser(
            "sign", help="answer a signature operation: show its data, and sign it if approved"
        )
    )
    sign.add_argument("operation_id", help="the signature operation (see `pending`)")
    sign.add_argument(
        "--with-pin", action="store_true", help=f"use DEVICE:PIN (PIN from ${PIN_ENV} or a prompt)"
    )
    sign.add_argument("--yes", action="store_true", help="sign without asking")

    _with_device_options(
        actions.add_parser("pending", help="list backend-initiated operations waiting for us")
    )
    _with_device_options(
        actions.add_parser("status", help="show this device's state and key store")
    )
    _with_device_options(
        actions.add_parser(
            "deactivate", help="deactivate at the server, delete the keys and the local state"
        )
    )
    push = _with_device_options(
        actions.add_parser(
            "push-token",
            help="register the push token the server wakes this device through "
            "(docs/notifications.md), or --remove it",
        )
    )
    push.add_argument(
        "provider",
        nargs="?",
        choices=["fcm", "apns", "webhook"],
        help="who delivers the wake-up: FCM, APNs, or the relying party's own push service",
    )
    push.add_argument(
        "token",
        nargs="?",
        help="the FCM registration token, the APNs device token (hex), or the relying "
        "party's push-service token (docs/protocol.md §3.1.8)",
    )
    push.add_argument("--remove", action="store_true", help="remove the registered token")
    device.set_defaults(func=cmd_device)


def _with_device_options(
    parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS
) -> argparse.ArgumentParser:
    """``--state-dir`` before the action (``keybound device --state-dir X status``) or after
    it (``keybound device status --state-dir X``): SUPPRESS after it, so a value given before
    is not overwritten by the action's default."""
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default,
        help=f"where the device keeps its state (default {DEFAULT_STATE_DIR}, "
        "as the SDK's open_device); before or after the action",
    )
    return parser
