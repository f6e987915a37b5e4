"""Parsing option values the way clamd.conf writes them."""

from __future__ import annotations


def parse_size(text: str) -> int:
    """A SIZE: bytes, or with a k/K (kilobytes) or m/M (megabytes) suffix."""
    value = text.strip()
    factor = 1
    if value[-1:] in ("k", "K"):
        factor, value = 1024, value[:-1]
    elif value[-1:] in ("m", "M"):
        factor, value = 1024 * 1024, value[:-1]
    if not value.isdigit():
        raise ValueError(f"invalid size {text!r}")
    return int(value) * factor


def parse_bool(text: str) -> bool:
    """A BOOL: yes/no, true/false, 1/0 (case-insensitive)."""
    lowered = text.strip().lower()
    if lowered in ("yes", "true", "1"):
        return True
    if lowered in ("no", "false", "0"):
        return False
    raise ValueError(f"invalid boolean {text!r}")
