"""The proxy's quarantine: a directory of held messages, each with a JSON sidecar.

    <id>.eml   the message as it arrived
    <id>.json  envelope (sender, recipients), verdict, signature, time, client

Both are written to temporary names, fsync-ed, renamed into place, and the
directory fsync-ed, before the proxy answers 250: a message the sender was
told is taken is on disk. A full disk raises OSError, and the proxy answers
4xx instead, so the sender keeps the message.

Release re-sends a message to the next hop with its original envelope; the
sidecar is renamed to `<id>.releasing` first, so two releases cannot both
send it, and the entry is deleted once the next hop has accepted it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

_ID_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyzT-")


class QuarantineError(Exception):
    """No such entry, or an entry that is being released."""


@dataclass(frozen=True)
class Entry:
    id: str
    meta: dict
    message_path: Path

    @property
    def sender(self) -> str:
        return self.meta["envelope"]["mail_from"]

    @property
    def recipients(self) -> list[str]:
        return self.meta["envelope"]["rcpt_tos"]


def _fsync_write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Quarantine:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _check_id(self, entry_id: str) -> str:
        if not entry_id or not set(entry_id) <= _ID_CHARS:
            raise QuarantineError(f"no quarantine entry {entry_id!r}")
        return entry_id

    def store(self, message: bytes, meta: dict) -> str:
        """Keep a message durably; its id. OSError when it cannot be kept."""
        self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        entry_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(6)
        eml = self.directory / f"{entry_id}.eml"
        side = self.directory / f"{entry_id}.json"
        tmp_eml = self.directory / f".{entry_id}.eml.tmp"
        tmp_side = self.directory / f".{entry_id}.json.tmp"
        record = {**meta, "id": entry_id, "size": len(message)}
        try:
            _fsync_write(tmp_eml, message)
            _fsync_write(tmp_side, json.dumps(record, indent=1, sort_keys=True).encode())
            os.rename(tmp_eml, eml)
            os.rename(tmp_side, side)  # the sidecar last: an entry exists once both do
            _fsync_dir(self.directory)
        except OSError:
            for leftover in (tmp_eml, tmp_side, eml, side):
                try:
                    leftover.unlink()
                except OSError:
                    pass
            raise
        return entry_id

    def list(self) -> list[Entry]:
        entries = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                try:
                    entries.append(self.get(name[:-5]))
                except QuarantineError:
                    continue
        return entries

    def get(self, entry_id: str) -> Entry:
        self._check_id(entry_id)
        side = self.directory / f"{entry_id}.json"
        try:
            meta = json.loads(side.read_text())
        except FileNotFoundError:
            if (self.directory / f"{entry_id}.releasing").exists():
                raise QuarantineError(f"{entry_id} is being released") from None
            raise QuarantineError(f"no quarantine entry {entry_id!r}") from None
        except (OSError, ValueError) as exc:
            raise QuarantineError(f"{entry_id}: unreadable sidecar: {exc}") from None
        return Entry(entry_id, meta, self.directory / f"{entry_id}.eml")

    def delete(self, entry_id: str) -> None:
        self._check_id(entry_id)
        found = False
        for suffix in (".json", ".releasing", ".eml"):
            try:
                (self.directory / f"{entry_id}{suffix}").unlink()
                found = True
            except FileNotFoundError:
                continue
        if not found:
            raise QuarantineError(f"no quarantine entry {entry_id!r}")
        _fsync_dir(self.directory)

    def claim(self, entry_id: str) -> Entry:
        """Take an entry for release (its sidecar renamed): no second release can start."""
        entry = self.get(entry_id)
        try:
            os.rename(self.directory / f"{entry_id}.json",
                      self.directory / f"{entry_id}.releasing")
        except FileNotFoundError:
            raise QuarantineError(f"{entry_id} is being released") from None
        return entry

    def unclaim(self, entry_id: str) -> None:
        """The release failed: the entry is back in the quarantine."""
        os.rename(self.directory / f"{entry_id}.releasing", self.directory / f"{entry_id}.json")
