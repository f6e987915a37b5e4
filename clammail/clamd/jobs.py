"""What the server and the scan workers hand each other, and how a verdict is written.

A job goes from the server to a worker (the descriptor of ScanDescriptor
travels beside it); the worker answers with `Outcome`s for the objects it
scanned and `pathscan.Reply`s for paths it did not scan (excluded, not a
regular file, ...), and ends every job with `Finished`. All of them are
small frozen dataclasses, pickled over the worker's channel.

`verdict_lines` is the one place where an outcome becomes clamd's
"<name>: <virus> FOUND" / "<name>: <reason> ERROR" / "<name>: OK" text, for
the replies and for the log.
"""

from __future__ import annotations

from dataclasses import dataclass

from clammail.clamd.pathscan import Reply

# -- jobs ------------------------------------------------------------------


@dataclass(frozen=True)
class ScanDescriptor:
    """Scan the descriptor sent with the job (FILDES, INSTREAM, STREAM)."""

    name: str


@dataclass(frozen=True)
class ScanFiles:
    """Scan files by path, one Outcome each (MULTISCAN hands them out in batches)."""

    paths: tuple[str, ...]
    allmatch: bool = False


@dataclass(frozen=True)
class WalkPath:
    """Walk a path and scan what it holds, as clamd does for SCAN, CONTSCAN,
    ALLMATCHSCAN and RAWSCAN."""

    path: str
    command: str

    @property
    def allmatch(self) -> bool:
        return self.command == "ALLMATCHSCAN"

    @property
    def raw(self) -> bool:
        return self.command == "RAWSCAN"


Job = ScanDescriptor | ScanFiles | WalkPath


# -- replies -----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What scanning one object gave."""

    name: str  # the path scanned, or the descriptor's name
    found: tuple[str, ...] = ()  # virus names, in the order found
    error: str | None = None  # libclamav's reason (cl_strerror), without " ERROR"
    md5: str = ""  # of a detected object, for ExtendedDetectionInfo
    size: int = 0

    @property
    def clean(self) -> bool:
        return not self.found and self.error is None


@dataclass(frozen=True)
class Finished:
    """The last message of every job; for a walk, whether clamd's closing
    "<path>: OK" is due."""

    closing_ok: bool = False
    top: str = ""


WorkerReply = Outcome | Reply | Finished


def verdict_lines(name: str, outcome: Outcome, extended: bool = False) -> list[str]:
    """clamd's lines for `outcome`: one per detection, else one ERROR or OK line.

    `extended` adds ExtendedDetectionInfo's "(md5:size)" after the name, as
    clamd does in its log and in STREAM's reply.
    """
    if outcome.found:
        if extended and outcome.size:
            return [f"{name}: {virus}({outcome.md5}:{outcome.size}) FOUND" for virus in outcome.found]
        return [f"{name}: {virus} FOUND" for virus in outcome.found]
    if outcome.error is not None:
        return [f"{name}: {outcome.error} ERROR"]
    return [f"{name}: OK"]
