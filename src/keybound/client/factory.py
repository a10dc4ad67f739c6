"""Opening a device: the one call an app makes to get its :class:`Device`, loaded from its
state directory or created there, talking through the channel its pin names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keybound.channel import ChannelPin
from keybound.client.device import Device
from keybound.client.keystores import KeyStore
from keybound.client.profiles import DeviceProfile
from keybound.client.sealed import SealedTransport, load_pin
from keybound.client.state import StateStore
from keybound.errors import ClientError, ErrorCode


def open_device(state_dir: Path | str, *, pin: ChannelPin | str | Path,
                profile: DeviceProfile | None = None, hardware: KeyStore | None = None,
                client: Any = None) -> Device:
    """The device in ``state_dir`` talking through the channel pinned by ``pin`` (a
    ChannelPin, a pin string, or a pin file): loaded if it exists, else created for the pin's
    application (``profile`` is then required). Raises CLIENT_CONFIGURATION if the stored
    device belongs to another application than the pin."""
    channel_pin = pin if isinstance(pin, ChannelPin) else load_pin(pin)
    transport = SealedTransport(channel_pin, client)
    try:
        return _load_or_create(Path(state_dir).expanduser(), channel_pin, transport,
                               profile, hardware)
    except BaseException:
        transport.close()  # the HTTP client it opened itself; a caller's ``client`` stays open
        raise


def _load_or_create(directory: Path, pin: ChannelPin, transport: SealedTransport,
                    profile: DeviceProfile | None, hardware: KeyStore | None) -> Device:
    store = StateStore(directory)
    if not store.exists():
        if profile is None:
            raise ClientError("a new device needs a profile",
                              code=ErrorCode.CLIENT_CONFIGURATION)
        return Device.create(directory, application_id=pin.application_id,
                             transport=transport, profile=profile, hardware=hardware)
    # checked before Device.load, which may rewrite the stored profile
    stored = store.load().application_id
    if stored != pin.application_id:
        raise ClientError(f"the device in {directory} belongs to application {stored!r}, the "
                          f"pin to {pin.application_id!r}", code=ErrorCode.CLIENT_CONFIGURATION)
    return Device.load(directory, transport=transport, hardware=hardware, profile=profile)
