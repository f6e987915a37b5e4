"""The scan engine: file typing, matching, unpacking, limits. Knows nothing of sockets."""

from __future__ import annotations

__all__ = ["Engine", "ScanOptions", "ScanResult"]


def __getattr__(name: str):
    # Imported on first use: the unpackers import engine submodules (file
    # types) and the scanner imports the unpackers, so an eager import here
    # would make `import clammail.unpack.x` circular.
    if name in __all__:
        from clammail.engine import scanner

        return getattr(scanner, name)
    raise AttributeError(name)
