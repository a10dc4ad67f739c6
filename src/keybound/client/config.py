"""How a state directory's device reaches its server and where its hardware key lives.

One state directory, one format, whoever made it: ``open_device`` and ``keybound device``
both keep there

- ``device.json``: the SDK's state, keys included (:mod:`keybound.client.state`);
- ``device-config.json``: this module's :class:`DeviceConfig`, no secrets: the application,
  the server, the channel pin (public: the server's E2E public key), the profile preset, the
  key store and the options that reopen it (a PKCS#11 token's user PIN is read from the
  environment variable the configuration names, on every run);
- ``device.lock``: the ceremony lock (:mod:`keybound.client.lock`).

So a device set up with ``keybound device activate`` opens with ``open_device(state_dir)``
and one made by ``open_device`` answers ``keybound device status``, ``authenticate``, ...
Both default to :data:`DEFAULT_STATE_DIR`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from keybound.client.files import file_error, write_private
from keybound.client.keystores import KeyStore, open_keystore
from keybound.errors import ClientError, ErrorCode, KeyboundError

log = logging.getLogger(__name__)

CONFIG_FILE = "device-config.json"
#: where ``keybound device`` and ``open_device`` keep a device unless told otherwise
DEFAULT_STATE_DIR = Path("~/.keybound/device")
#: the variable that holds a PKCS#11 token's user PIN unless the configuration names another
DEFAULT_TOKEN_PIN_ENV = "KEYBOUND_TOKEN_PIN"  # noqa: S105 - a variable name, not a PIN


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    """``device-config.json``. ``channel_pin`` None: a development server without the
    secure channel (``keybound device activate --server-url``); ``keystore`` "none": no
    secure hardware; ``profile``: a preset name, None when the SDK caller gave a profile of
    its own (``device.json`` holds the profile itself)."""

    application_id: str
    server_url: str
    channel_pin: str | None = None
    profile: str | None = "linux"
    keystore: str = "none"  # none | tpm | pkcs11 | emulated | software
    keystore_options: Mapping[str, Any] = field(default_factory=dict)
    token_pin_env: str | None = None  # PKCS#11: the env var holding the token user PIN

    def save(self, directory: Path) -> None:
        """Raises ClientError(CLIENT_CONFIGURATION) naming the file when it cannot be written."""
        document = {**asdict(self), "keystore_options": dict(self.keystore_options)}
        write_private(
            directory / CONFIG_FILE, (json.dumps(document, indent=2) + "\n").encode("utf-8")
        )

    @classmethod
    def load(cls, directory: Path) -> DeviceConfig:
        """Raises ClientError: CLIENT_NOT_ACTIVATED when the directory has none,
        CLIENT_CONFIGURATION (naming the file) when it cannot be read or is not one."""
        path = directory / CONFIG_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(document, dict):
                raise TypeError("not an object")
            return cls(**document)
        except FileNotFoundError:
            raise ClientError(
                f"no device in {directory}: run `keybound device activate` first",
                code=ErrorCode.CLIENT_NOT_ACTIVATED,
            ) from None
        except OSError as exc:  # a directory in its place, a file as the state dir, ...
            raise file_error("read", path, exc) from exc
        except (ValueError, TypeError) as exc:
            raise ClientError(
                f"{path} is not a valid device configuration", code=ErrorCode.CLIENT_CONFIGURATION
            ) from exc

    @classmethod
    def find(cls, directory: Path) -> DeviceConfig | None:
        """The configuration in ``directory``, or None when it has none."""
        return cls.load(directory) if (directory / CONFIG_FILE).exists() else None

    def open_keystore(self, directory: Path, *, require_usable: bool) -> KeyStore | None:
        """The configured key store (None for "none"). ``require_usable``: as for
        :func:`~keybound.client.keystores.open_keystore` (True when a key is to be made)."""
        if self.keystore == "none":
            return None
        options = dict(self.keystore_options)
        if self.keystore == "pkcs11" and self.token_pin_env:
            pin = os.environ.get(self.token_pin_env)
            if pin is None:
                raise ClientError(
                    f"set {self.token_pin_env} to the token's user PIN",
                    code=ErrorCode.CLIENT_CONFIGURATION,
                )
            options["user_pin"] = pin
        return open_keystore(self.keystore, directory, options, require_usable=require_usable)

    def reopen_keystore(self, directory: Path) -> KeyStore | None:
        """The configured store for keys that exist already; None (logged) when it cannot be
        opened: the device then reports its hardware key as unavailable."""
        try:
            return self.open_keystore(directory, require_usable=False)
        except KeyboundError as exc:
            log.warning("cannot open the configured key store %r: %s", self.keystore, exc.detail)
            return None


def keystore_config(store: KeyStore | None) -> dict[str, Any]:
    """The ``keystore``, ``keystore_options`` and ``token_pin_env`` that reopen ``store``."""
    if store is None:
        return {"keystore": "none", "keystore_options": {}, "token_pin_env": None}
    return {
        "keystore": store.kind,
        "keystore_options": dict(store.options()),
        "token_pin_env": DEFAULT_TOKEN_PIN_ENV if store.kind == "pkcs11" else None,
    }
