"""The scan engine: file typing, matching, unpacking, limits. Knows nothing of sockets."""

from __future__ import annotations

from clammail.engine.scanner import Engine, ScanOptions, ScanResult

__all__ = ["Engine", "ScanOptions", "ScanResult"]
