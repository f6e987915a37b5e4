"""The async clamd client the milter, the proxy and `clammail dscan` use.

Works with clammail's daemon and with ClamAV's clamd alike. An address is
`unix:/path`, a bare absolute path, `tcp:host:port`, `host:port` or
`[v6addr]:port`. Every call opens a connection, sends one z-command and
reads the reply up to its NUL; errors (refused, timed out, a reply that is
not clamd's) raise `ClamdError`, so callers can answer "try later" instead
of guessing a verdict.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass

DEFAULT_TIMEOUT = 120.0
CHUNK = 256 * 1024
MAX_REPLY = 1 << 20


class ClamdError(Exception):
    """No usable answer from the daemon (connection, timeout, protocol, size limit)."""


@dataclass(frozen=True)
class Verdict:
    """One reply line of a scan: `path: <virus> FOUND`, `path: OK`, `path: <why> ERROR`."""

    path: str
    status: str  # "FOUND", "OK" or "ERROR"
    detail: str = ""  # the signature name, or the error text

    @property
    def infected(self) -> bool:
        return self.status == "FOUND"


def parse_verdict(line: str) -> Verdict:
    if line.endswith(" FOUND"):
        path, _, name = line[: -len(" FOUND")].rpartition(": ")
        return Verdict(path, "FOUND", name)
    if line.endswith(": OK"):
        return Verdict(line[: -len(": OK")], "OK")
    if line.endswith(" ERROR"):
        path, sep, why = line[: -len(" ERROR")].partition(": ")
        if not sep:
            return Verdict("", "ERROR", path)
        return Verdict(path, "ERROR", why)
    raise ClamdError(f"unexpected reply from the daemon: {line!r}")


def parse_address(address: str) -> tuple[str, object]:
    """("unix", path) or ("tcp", (host, port))."""
    if address.startswith("unix:"):
        return "unix", address[5:]
    if address.startswith("/"):
        return "unix", address
    if address.startswith("tcp:"):
        address = address[4:]
    host, _, port = address.rpartition(":")
    if not host:
        host, port = address, "3310"
    host = host.strip("[]")
    try:
        return "tcp", (host, int(port))
    except ValueError:
        raise ClamdError(f"bad daemon address {address!r}") from None


class ClamdClient:
    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT):
        self.address = address
        self.kind, self.where = parse_address(address)
        self.timeout = timeout

    async def _open(self):
        try:
            if self.kind == "unix":
                return await asyncio.wait_for(asyncio.open_unix_connection(self.where), self.timeout)
            host, port = self.where
            return await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
        except (TimeoutError, OSError) as exc:
            raise ClamdError(f"cannot connect to {self.address}: {exc}") from None

    async def _command(self, command: bytes, body: AsyncIterable[bytes] | None = None) -> list[str]:
        reader, writer = await self._open()
        try:
            writer.write(b"z" + command + b"\0")
            if body is not None:
                async for piece in body:
                    writer.write(piece)
                    await asyncio.wait_for(writer.drain(), self.timeout)
            await asyncio.wait_for(writer.drain(), self.timeout)
            data = await asyncio.wait_for(_read_all(reader), self.timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            raise ClamdError(f"{self.address}: {exc or type(exc).__name__}") from None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        lines = [os.fsdecode(p) for p in data.split(b"\0") if p]
        if not lines:
            raise ClamdError(f"{self.address}: the daemon closed the connection without a reply")
        return lines

    async def ping(self) -> bool:
        return (await self._command(b"PING")) == ["PONG"]

    async def version(self) -> str:
        return (await self._command(b"VERSION"))[0]

    async def reload(self) -> str:
        return (await self._command(b"RELOAD"))[0]

    async def stats(self) -> str:
        return (await self._command(b"STATS"))[0]

    async def scan_path(self, path: str, command: str = "SCAN") -> list[Verdict]:
        lines = await self._command(command.encode() + b" " + os.fsencode(path))
        return [parse_verdict(line) for line in lines]

    async def instream(self, data: bytes | Iterable[bytes] | AsyncIterable[bytes]) -> Verdict:
        """Scan bytes (or pieces of them) with INSTREAM: the verdict for `stream`."""
        lines = await self._command(b"INSTREAM", _chunks(data))
        verdict = parse_verdict(lines[0])
        if verdict.status == "ERROR" and "size limit exceeded" in verdict.detail:
            raise ClamdError(f"{self.address}: INSTREAM size limit exceeded")
        return verdict

    async def fildes(self, fd: int) -> Verdict:
        """Scan an open file by passing its descriptor (unix socket only)."""
        if self.kind != "unix":
            raise ClamdError("FILDES needs a unix socket")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, self.where), self.timeout)
            await loop.sock_sendall(sock, b"zFILDES\0")
            await asyncio.sleep(0)
            socket.send_fds(sock, [b"\0"], [fd])
            data = bytearray()
            while len(data) < MAX_REPLY:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), self.timeout)
                if not chunk:
                    break
                data.extend(chunk)
                if data.endswith(b"\0"):
                    break
        except (TimeoutError, OSError) as exc:
            raise ClamdError(f"{self.address}: {exc or type(exc).__name__}") from None
        finally:
            sock.close()
        lines = [os.fsdecode(p) for p in bytes(data).split(b"\0") if p]
        if not lines:
            raise ClamdError(f"{self.address}: no reply to FILDES")
        return parse_verdict(lines[0])


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while len(data) < MAX_REPLY:
        chunk = await reader.read(65536)
        if not chunk:
            break
        data.extend(chunk)
    return bytes(data)


async def _chunks(data) -> AsyncIterable[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        pieces = [bytes(data)]
    else:
        pieces = data
    if hasattr(pieces, "__aiter__"):
        async for piece in pieces:
            for i in range(0, len(piece), CHUNK):
                part = piece[i:i + CHUNK]
                yield struct.pack(">I", len(part)) + part
    else:
        for piece in pieces:
            for i in range(0, len(piece), CHUNK):
                part = piece[i:i + CHUNK]
                yield struct.pack(">I", len(part)) + part
    yield struct.pack(">I", 0)
