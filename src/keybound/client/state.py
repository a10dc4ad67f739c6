"""The device's persistent state: one JSON file in a private directory.

``<state_dir>/device.json`` (0600, directory 0700) holds the application id, the device
profile and the device's registrations. It is replaced atomically (temp file, fsync,
``os.replace``, fsync of the directory), so a crash leaves the old or the new state, never a
torn one. Reading, changing and saving it is done under the directory's ceremony lock
(:meth:`StateStore.lock`, :mod:`keybound.client.lock`), so that two users of one directory
never save over each other's keys. Beside it: ``device-config.json``
(:mod:`keybound.client.config`) and ``device.lock``.

The file contains the **software** private keys as unencrypted PEM PKCS#8: software keys are
software, protected here only by file permissions (the protocol expects them to be copyable:
they rotate on every authentication and the server detects clones). Hardware keys are never
in it, only their :class:`~keybound.client.keystores.base.KeyHandle` (store kind, public
key, an opaque reference). Neither a PIN nor a PIN key is ever stored: only the PIN salt.

Why *registrations*, plural, and several software keys in one: the device never drops a key
the server may consider current. A (re)activation or authentication whose outcome is unknown
(network failure after the request was sent) leaves the new material next to the old, and
the next ceremony tries the newest first (see ``keybound.client.device``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keybound.client.files import file_error, remove_private, write_private
from keybound.client.keystores.base import KeyHandle
from keybound.client.keystores.software import SoftwareKey
from keybound.client.lock import state_lock
from keybound.client.pin import SALT_BYTES
from keybound.client.profiles import DeviceProfile
from keybound.errors import ClientError, ErrorCode
from keybound.protocol import AuthMethod, HwKeyClientStatus, Platform, b64u_decode, b64u_encode

STATE_FILE = "device.json"
FORMAT = "keybound-device-state"
VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Registration:
    """One (re)activation's credentials.

    ``confirmed``: the server definitely accepted this registration. ``software_keys``:
    PEM PKCS#8, oldest first; the server's current software key is one of them (exactly one
    unless an earlier outcome was unknown). ``activation_hw_status``: the hardware-key status
    reported at activation (OK, NOT_SUPPORTED or GENERATION_FAILED)."""

    device_id: str
    confirmed: bool
    software_keys: tuple[str, ...]
    hardware_key: KeyHandle | None = None
    activation_hw_status: HwKeyClientStatus = HwKeyClientStatus.NOT_SUPPORTED
    pin_salt: bytes | None = None
    auth_methods: tuple[AuthMethod, ...] = ()

    def __post_init__(self) -> None:
        if not self.software_keys:
            raise ValueError("a registration has at least one software key")


@dataclass(frozen=True, kw_only=True)
class ClientState:
    """Everything the device persists. ``registrations``: oldest first; the newest is the
    one in use. At most the oldest is confirmed."""

    application_id: str
    profile: DeviceProfile
    registrations: tuple[Registration, ...] = field(default=())

    @property
    def current(self) -> Registration | None:
        return self.registrations[-1] if self.registrations else None


class StateStore:
    """Reads and writes ``device.json`` in one state directory."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's ceremony lock (:mod:`keybound.client.lock`): read, change
        and save the state inside one ``with store.lock():`` so that no other thread or
        process of this device reads or writes it in between."""
        with state_lock(self.directory).held():
            yield

    def load(self) -> ClientState:
        """Raises ClientError(CLIENT_CONFIGURATION) when the file is missing or corrupted."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ClientError(
                f"no device state in {self.directory}", code=ErrorCode.CLIENT_CONFIGURATION
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise _corrupted(self.path, type(exc).__name__) from exc
        try:
            return state_from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise _corrupted(self.path, _reason(exc)) from None

    def save(self, state: ClientState) -> None:
        """Atomically replace the state file (0600) in the state directory (0700).
        Raises ClientError(CLIENT_CONFIGURATION) naming the path when the OS refuses."""
        data = json.dumps(state_to_json(state), indent=2, sort_keys=True).encode("utf-8")
        write_private(self.path, data)  # creates the directory 0700
        try:
            os.chmod(self.directory, 0o700)  # one that existed already is made private too
        except OSError as exc:
            raise file_error("restrict", self.directory, exc) from exc

    def wipe(self) -> None:
        """Delete the state file (the directory and other files stay). Raises
        ClientError(CLIENT_CONFIGURATION) naming the path when the OS refuses."""
        remove_private(self.path)


def _corrupted(path: Path, reason: str) -> ClientError:
    return ClientError(
        f"device state file {path} is corrupted ({reason}); reactivate the device",
        code=ErrorCode.CLIENT_CONFIGURATION,
    )


def _reason(exc: Exception) -> str:
    # Never echo values: the file holds private keys.
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    if isinstance(exc, _StateFormatError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        return "not valid JSON"
    return "invalid value" if isinstance(exc, ValueError) else type(exc).__name__


class _StateFormatError(ValueError):
    """A structural problem in the state file (message names the field, never a value)."""


# --------------------------------------------------------------------------- JSON mapping


def state_to_json(state: ClientState) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "application_id": state.application_id,
        "profile": _profile_to_json(state.profile),
        "registrations": [_registration_to_json(r) for r in state.registrations],
    }


def state_from_json(data: Any) -> ClientState:
    document = _object(data, "state")
    if document["format"] != FORMAT or document["version"] != VERSION:
        raise _StateFormatError("unknown format or version")
    return ClientState(
        application_id=_string(document["application_id"], "application_id"),
        profile=_profile_from_json(_object(document["profile"], "profile")),
        registrations=tuple(
            _registration_from_json(_object(r, "registration"))
            for r in _list(document["registrations"], "registrations")
        ),
    )


def _profile_to_json(profile: DeviceProfile) -> dict[str, Any]:
    return {
        "platform": profile.platform.value,
        "os_version": profile.os_version,
        "secure_enclave": profile.secure_enclave,
        "hardware_keystore": profile.hardware_keystore,
        "model": profile.model,
    }


def _profile_from_json(data: dict[str, Any]) -> DeviceProfile:
    try:
        return DeviceProfile(
            platform=Platform(data["platform"]),
            os_version=_string(data["os_version"], "os_version"),
            secure_enclave=_optional_bool(data.get("secure_enclave"), "secure_enclave"),
            hardware_keystore=_optional_bool(data.get("hardware_keystore"), "hardware_keystore"),
            model=_optional_string(data.get("model"), "model"),
        )
    except ClientError:
        raise _StateFormatError("invalid profile") from None


def _registration_to_json(registration: Registration) -> dict[str, Any]:
    handle = registration.hardware_key
    return {
        "device_id": registration.device_id,
        "confirmed": registration.confirmed,
        "software_keys": list(registration.software_keys),
        "hardware_key": None if handle is None else _handle_to_json(handle),
        "activation_hw_status": registration.activation_hw_status.value,
        "pin_salt": None if registration.pin_salt is None else b64u_encode(registration.pin_salt),
        "auth_methods": [m.value for m in registration.auth_methods],
    }


def _registration_from_json(data: dict[str, Any]) -> Registration:
    handle = data["hardware_key"]
    salt = _optional_string(data["pin_salt"], "pin_salt")
    keys = tuple(_software_key(k) for k in _list(data["software_keys"], "software_keys"))
    if not keys:
        raise _StateFormatError("registration without software keys")
    pin_salt = None if salt is None else b64u_decode(salt)
    if pin_salt is not None and len(pin_salt) != SALT_BYTES:
        raise _StateFormatError("pin_salt has the wrong size")
    return Registration(
        device_id=_string(data["device_id"], "device_id"),
        confirmed=_bool(data["confirmed"], "confirmed"),
        software_keys=keys,
        hardware_key=None if handle is None else _handle_from_json(_object(handle, "hw key")),
        activation_hw_status=HwKeyClientStatus(data["activation_hw_status"]),
        pin_salt=pin_salt,
        auth_methods=tuple(AuthMethod(m) for m in _list(data["auth_methods"], "auth_methods")),
    )


def _software_key(value: Any) -> str:
    pem = _string(value, "software_keys")
    try:
        SoftwareKey.from_pem(pem)
    except (ValueError, TypeError):
        raise _StateFormatError("unreadable software key") from None
    return pem


def _handle_to_json(handle: KeyHandle) -> dict[str, Any]:
    return {
        "store": handle.store,
        "public_key": b64u_encode(handle.public_key),
        "ref": dict(handle.ref),
    }


def _handle_from_json(data: dict[str, Any]) -> KeyHandle:
    ref = _object(data["ref"], "ref")
    return KeyHandle(
        store=_string(data["store"], "store"),
        public_key=b64u_decode(_string(data["public_key"], "public_key")),
        ref={_string(k, "ref"): _string(v, "ref") for k, v in ref.items()},
    )


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _StateFormatError(f"{name} is not an object")
    return value


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise _StateFormatError(f"{name} is not a list")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _StateFormatError(f"{name} is not a string")
    return value


def _optional_string(value: Any, name: str) -> str | None:
    return None if value is None else _string(value, name)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _StateFormatError(f"{name} is not a boolean")
    return value


def _optional_bool(value: Any, name: str) -> bool | None:
    return None if value is None else _bool(value, name)
