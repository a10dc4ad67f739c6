"""keybound: open device authentication with hardware-protected keys."""

__version__ = "0.1.0"
