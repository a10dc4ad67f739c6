"""Opening a device: the one call an app makes to get its :class:`Device`, loaded from its
state directory or created there, talking through the channel its pin names.

The directory is the one ``keybound device`` uses too, in the same format
(:mod:`keybound.client.config`): each reads what the other wrote."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from keybound.channel import ChannelPin
from keybound.client.config import DEFAULT_STATE_DIR, DeviceConfig, keystore_config
from keybound.client.device import Device
from keybound.client.keystores import KeyStore
from keybound.client.profiles import PROFILES, DeviceProfile
from keybound.client.sealed import SealedTransport, load_pin
from keybound.client.state import StateStore
from keybound.errors import ClientError, ErrorCode


def open_device(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    channel_pin: ChannelPin | str | Path | None = None,
    profile: DeviceProfile | None = None,
    hardware: KeyStore | None = None,
    client: Any = None,
) -> Device:
    """The device in ``state_dir`` (default ``~/.keybound/device``, as ``keybound device``),
    talking through the secure channel pinned by ``channel_pin``: the server's E2E key pin
    (a ChannelPin, a pin string, or a pin file, from ``keybound e2e-key``), not the user's
    PIN, which ``activate`` and ``authenticate`` take as ``pin``.

    Loaded if the directory holds a device, else created for the pin's application
    (``profile`` is then required). ``channel_pin`` may be left out when the directory's
    ``device-config.json`` has one, and ``hardware`` when it names the key store (both are
    written there on creation, by this function or by ``keybound device activate``; a
    ``channel_pin`` of the same application that differs from the stored one replaces it).

    Raises CLIENT_CONFIGURATION if the stored device belongs to another application than the
    pin, or when no pin is given or configured.
    """
    directory = Path(state_dir).expanduser()
    store = StateStore(directory)
    with store.lock():  # two openers of a new directory: one creates, the other loads
        config = DeviceConfig.find(directory)
        pin = _channel_pin(channel_pin, config, directory)
        if config is not None and config.application_id != pin.application_id:
            raise _other_application(directory, config.application_id, pin)
        if hardware is None and config is not None:
            hardware = config.reopen_keystore(directory)
        transport = SealedTransport(pin, client)
        try:
            device = _load_or_create(store, pin, transport, profile, hardware)
            if config is None:  # what `keybound device` needs to use this device too
                DeviceConfig(
                    application_id=pin.application_id,
                    server_url=pin.server_url,
                    channel_pin=pin.to_string(),
                    profile=_preset_name(device.profile),
                    **keystore_config(device.hardware),
                ).save(directory)
            elif config.channel_pin != pin.to_string():  # the app ships a new pin (rotation)
                replace(config, channel_pin=pin.to_string(), server_url=pin.server_url).save(
                    directory
                )
        except BaseException:
            transport.close()  # the HTTP client it opened itself; a caller's ``client`` stays open
            raise
    return device


def _channel_pin(
    given: ChannelPin | str | Path | None, config: DeviceConfig | None, directory: Path
) -> ChannelPin:
    if given is not None:
        return given if isinstance(given, ChannelPin) else load_pin(given)
    if config is not None and config.channel_pin:
        return ChannelPin.from_string(config.channel_pin)
    why = (
        "its device talks to a development server without the secure channel"
        if config is not None
        else "it holds no device-config.json with one"
    )
    raise ClientError(
        f"open_device needs channel_pin (the pin string or file from `keybound "
        f"e2e-key`) for {directory}: {why}",
        code=ErrorCode.CLIENT_CONFIGURATION,
    )


def _load_or_create(
    store: StateStore,
    pin: ChannelPin,
    transport: SealedTransport,
    profile: DeviceProfile | None,
    hardware: KeyStore | None,
) -> Device:
    if not store.exists():
        if profile is None:
            raise ClientError("a new device needs a profile", code=ErrorCode.CLIENT_CONFIGURATION)
        return Device.create(
            store.directory,
            application_id=pin.application_id,
            transport=transport,
            profile=profile,
            hardware=hardware,
        )
    # checked before Device.load, which may rewrite the stored profile
    stored = store.load().application_id
    if stored != pin.application_id:
        raise _other_application(store.directory, stored, pin)
    return Device.load(store.directory, transport=transport, hardware=hardware, profile=profile)


def _other_application(directory: Path, stored: str, pin: ChannelPin) -> ClientError:
    return ClientError(
        f"the device in {directory} belongs to application {stored!r}, the "
        f"pin to {pin.application_id!r}",
        code=ErrorCode.CLIENT_CONFIGURATION,
    )


def _preset_name(profile: DeviceProfile) -> str | None:
    return next((name for name, preset in PROFILES.items() if preset == profile), None)
