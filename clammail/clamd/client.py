"""The one clamd client of clammail: the milter, the proxy and `clammail dscan` use it.

Works with clammail's daemon and with ClamAV's clamd alike. It has three
layers, so that the wire format exists once:

- a sans-IO core: addresses (`parse_address`), command encoding, INSTREAM
  chunk framing (`InstreamFramer`), reply splitting (`ReplyReader`) and
  parsing (`parse_verdict`); pure functions and small objects over bytes;
- a blocking front end (`Clamd`, `InstreamWriter`) for callers on threads,
  such as pymilter's callbacks;
- an asyncio front end (`AsyncClamd`, `AsyncInstreamWriter`) for the proxy.

Every command uses the z form (NUL-terminated, clamd's recommendation) on a
connection of its own. Anything but a well-formed answer -- refused, timed
out, closed early, a reply that is not clamd's or too long -- raises
`ClamdError`, so callers can answer "try later" instead of guessing a
verdict.
"""

from __future__ import annotations

import asyncio
import enum
import os
import socket
import struct
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass

DEFAULT_PORT = 3310
DEFAULT_TIMEOUT = 120.0
CONNECT_TIMEOUT = 10.0
# INSTREAM chunk size. clamd accepts chunks up to StreamMaxLength; 64 KiB
# keeps a message's pieces few without holding much per connection.
CHUNK_SIZE = 64 * 1024
# Longest reply we read. A scan reply is one line (a path and a signature
# name); CONTSCAN/MULTISCAN of a large tree and STATS are longer.
MAX_REPLY = 4 << 20
END_OF_STREAM = struct.pack(">I", 0)


class ClamdError(Exception):
    """No usable answer from the daemon (connection, timeout, protocol, size limit)."""


class ClamdConnectError(ClamdError):
    """The daemon could not be reached (refused, no such socket, connect timeout)."""


class ClamdTimeout(ClamdError):
    """The daemon did not answer (or take our data) in time."""


class ClamdProtocolError(ClamdError):
    """The daemon answered something that is not a clamd reply, or closed early."""


# -- addresses ---------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """Where a daemon listens: a unix socket path or a TCP host and port."""

    kind: str  # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def parse_address(text: str) -> Address:
    """`unix:/path`, `/path`, `tcp:host[:port]`, `host:port`, `[v6addr]:port` -> Address.

    The `unix:` and `tcp:` forms are clamav-milter's ClamdSocket syntax (the
    port defaults to 3310, and is required after an IPv6 address).
    """
    text = text.strip()
    if text.startswith("unix:") or text.startswith("/"):
        path = text[5:] if text.startswith("unix:") else text
        if not path.startswith("/"):
            raise ClamdError(f"a unix socket must be an absolute path: {text!r}")
        return Address("unix", path=path)
    rest = text[4:] if text.startswith("tcp:") else text
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise ClamdError(f"bad daemon address {text!r}")
        port_text = tail[1:] or str(DEFAULT_PORT)
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    elif rest.count(":") == 0 and text.startswith("tcp:"):
        host, port_text = rest, str(DEFAULT_PORT)
    else:
        # A bare IPv6 address is ambiguous (clamav-milter takes the last
        # colon as the port separator, and so do we).
        host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ClamdError(f"bad daemon address {text!r}")
    return Address("tcp", host=host, port=int(port_text))


# -- the wire format -----------------------------------------------------------


def encode_command(name: str, argument: bytes | str | None = None) -> bytes:
    """`zNAME[ argument]\\0`: one z-command (replies come NUL-terminated)."""
    line = b"z" + name.encode("ascii")
    if argument is not None:
        line += b" " + (os.fsencode(argument) if isinstance(argument, str) else argument)
    if b"\0" in line[1:]:
        raise ValueError("a clamd command cannot contain NUL")
    return line + b"\0"


def frame(data: bytes | memoryview) -> bytes:
    """One INSTREAM chunk: a 4-byte big-endian length, then the bytes."""
    return struct.pack(">I", len(data)) + bytes(data)


class InstreamFramer:
    """Turns writes of any size into INSTREAM chunks of at most CHUNK_SIZE.

    Small writes (a header line at a time, as a milter gets them) are
    gathered into one chunk; `limit` caps the bytes sent (clamav-milter's
    MaxFileSize: what lies beyond is not sent, and `truncated` says so).
    """

    def __init__(self, limit: int | None = None, chunk_size: int = CHUNK_SIZE):
        self.limit = limit
        self.chunk_size = chunk_size
        self.sent = 0  # payload bytes accepted so far (buffered or framed)
        self.truncated = False
        self._buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> bytes:
        """The framed bytes to send now (often b"": kept for the next chunk)."""
        if self.limit is not None:
            room = self.limit - self.sent
            if len(data) > room:
                data = data[:max(room, 0)]
                self.truncated = True
        self.sent += len(data)
        self._buffer += data
        if len(self._buffer) < self.chunk_size:
            return b""
        out = bytearray()
        view = memoryview(self._buffer)
        full = len(self._buffer) - len(self._buffer) % self.chunk_size
        for start in range(0, full, self.chunk_size):
            out += frame(view[start:start + self.chunk_size])
        view.release()
        del self._buffer[:full]
        return bytes(out)

    def finish(self) -> bytes:
        """What is left, then the zero-length chunk that ends the stream."""
        out = frame(self._buffer) if self._buffer else b""
        self._buffer = bytearray()
        return out + END_OF_STREAM


class ReplyReader:
    """Splits what the daemon sends into replies at the NUL delimiter of z-commands."""

    def __init__(self, max_reply: int = MAX_REPLY):
        self.max_reply = max_reply
        self._pending = bytearray()
        self.received = 0

    def feed(self, data: bytes) -> list[str]:
        """Complete replies in `data` (and earlier pieces), decoded as file names are."""
        self.received += len(data)
        if self.received > self.max_reply:
            raise ClamdProtocolError(f"reply longer than {self.max_reply} bytes")
        self._pending += data
        if b"\0" not in data:
            return []
        *done, rest = bytes(self._pending).split(b"\0")
        self._pending = bytearray(rest)
        return [os.fsdecode(line) for line in done if line]

    def at_eof(self) -> list[str]:
        """The connection closed: a reply without its NUL still counts (clamd adds none
        after some errors, e.g. "COMMAND READ TIMED OUT")."""
        rest = bytes(self._pending).strip(b"\n")
        self._pending = bytearray()
        return [os.fsdecode(rest)] if rest else []


class Status(enum.Enum):
    OK = "OK"
    FOUND = "FOUND"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Verdict:
    """One reply line of a scan: `path: <name> FOUND`, `path: OK`, `path: <why> ERROR`."""

    path: str
    status: Status
    detail: str = ""  # the signature name, or the error text

    @property
    def infected(self) -> bool:
        return self.status is Status.FOUND

    @property
    def clean(self) -> bool:
        return self.status is Status.OK

    @property
    def text(self) -> str:
        """What follows `path: ` in the reply: `OK`, `<name> FOUND`, `<why> ERROR`."""
        if self.status is Status.OK:
            return "OK"
        return f"{self.detail} {self.status.value}"

    @property
    def line(self) -> str:
        """The reply line as the daemon wrote it."""
        return f"{self.path}: {self.text}" if self.path else self.text


def parse_verdict(line: str) -> Verdict:
    """A scan reply line as a Verdict; ClamdProtocolError for anything else."""
    if line.endswith(" FOUND"):
        path, sep, name = line[: -len(" FOUND")].rpartition(": ")
        if sep and name and " " not in name:
            return Verdict(path, Status.FOUND, name)
    elif line.endswith(": OK"):
        return Verdict(line[: -len(": OK")], Status.OK)
    elif line.endswith(" ERROR"):
        path, sep, why = line[: -len(" ERROR")].partition(": ")
        if not sep:
            return Verdict("", Status.ERROR, path)
        return Verdict(path, Status.ERROR, why)
    raise ClamdProtocolError(f"unexpected reply from the daemon: {line[:200]!r}")


def stream_verdict(lines: list[str], address: Address) -> Verdict:
    """The verdict of an INSTREAM/FILDES exchange: exactly one reply line."""
    if len(lines) != 1:
        raise ClamdProtocolError(f"{address}: expected one reply, got {len(lines)}")
    return parse_verdict(lines[0])


def _early_verdict(data: bytes) -> Verdict | None:
    """The ERROR reply a daemon sent before closing a stream early, if that is what came."""
    line = os.fsdecode(data.split(b"\0")[0]).strip()
    try:
        verdict = parse_verdict(line) if line else None
    except ClamdProtocolError:
        return None
    return verdict if verdict is not None and verdict.status is Status.ERROR else None


def _pieces(data: bytes | bytearray | memoryview | Iterable[bytes]) -> Iterable[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (data,)
    return data


# -- the blocking front end ----------------------------------------------------


class Clamd:
    """A blocking client of one daemon; each call uses a connection of its own."""

    def __init__(self, address: Address | str, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.address = parse_address(address) if isinstance(address, str) else address
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)

    def connect(self) -> socket.socket:
        address = self.address
        try:
            if address.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout)
                try:
                    sock.connect(address.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((address.host, address.port),
                                                timeout=self.connect_timeout)
        except TimeoutError:
            raise ClamdConnectError(f"{address}: connect timed out") from None
        except OSError as exc:
            raise ClamdConnectError(f"{address}: {exc.strerror or exc}") from None
        sock.settimeout(self.timeout)
        return sock

    def _exchange(self, sock: socket.socket, reader: ReplyReader | None = None) -> list[str]:
        """Read replies until the daemon closes the connection."""
        reader = reader or ReplyReader()
        lines: list[str] = []
        try:
            while chunk := sock.recv(65536):
                lines += reader.feed(chunk)
        except TimeoutError:
            raise ClamdTimeout(f"{self.address}: no reply in {self.timeout:g} s") from None
        except OSError as exc:
            raise ClamdProtocolError(f"{self.address}: {exc.strerror or exc}") from None
        lines += reader.at_eof()
        if not lines:
            raise ClamdProtocolError(f"{self.address}: closed the connection without a reply")
        return lines

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except TimeoutError:
            raise ClamdTimeout(f"{self.address}: does not take data ({self.timeout:g} s)") from None
        except OSError as exc:
            raise ClamdProtocolError(f"{self.address}: {exc.strerror or exc}") from None

    def command(self, name: str, argument: bytes | str | None = None) -> list[str]:
        """Send one command; every reply line until the daemon closes the connection."""
        with self.connect() as sock:
            self._send(sock, encode_command(name, argument))
            return self._exchange(sock)

    def ping(self) -> bool:
        return self.command("PING") == ["PONG"]

    def version(self) -> str:
        return self.command("VERSION")[0]

    def reload(self) -> str:
        return self.command("RELOAD")[0]

    def stats(self) -> str:
        return self.command("STATS")[0]

    def scan_path(self, path: str, command: str = "SCAN") -> list[Verdict]:
        return [parse_verdict(line) for line in self.command(command, path)]

    def fildes(self, fd: int) -> Verdict:
        """Scan an open file by passing its descriptor (unix socket only)."""
        if self.address.kind != "unix":
            raise ClamdError("FILDES needs a unix socket")
        with self.connect() as sock:
            self._send(sock, encode_command("FILDES"))
            try:
                socket.send_fds(sock, [b"\0"], [fd])
            except OSError as exc:
                raise ClamdProtocolError(f"{self.address}: {exc.strerror or exc}") from None
            return stream_verdict(self._exchange(sock), self.address)

    def instream(self, data: bytes | Iterable[bytes], limit: int | None = None) -> Verdict:
        """Scan bytes (or pieces of them) with INSTREAM: the verdict for `stream`."""
        writer = self.open_instream(limit)
        try:
            for piece in _pieces(data):
                writer.write(piece)
            return writer.finish()
        finally:
            writer.close()

    def open_instream(self, limit: int | None = None) -> InstreamWriter:
        """A stream to write a message into while it arrives; `finish()` gives the verdict."""
        return InstreamWriter(self, self.connect(), limit)


class InstreamWriter:
    """One INSTREAM exchange, written piece by piece (blocking)."""

    def __init__(self, client: Clamd, sock: socket.socket, limit: int | None):
        self.client = client
        self.framer = InstreamFramer(limit)
        self._sock: socket.socket | None = sock
        # A reply that came before the end of the stream (clamd stops reading
        # at StreamMaxLength and says so): the rest is not sent.
        self.early: Verdict | None = None
        try:
            client._send(sock, encode_command("INSTREAM"))
        except ClamdError:
            self.close()
            raise

    @property
    def address(self) -> Address:
        return self.client.address

    def write(self, data: bytes | memoryview) -> None:
        out = self.framer.feed(data)
        if out and self.early is None:
            self._send(out)

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise ClamdError(f"{self.address}: the stream is closed")
        try:
            self.client._send(self._sock, data)
        except ClamdError:
            # clamd answers an INSTREAM that broke StreamMaxLength and closes:
            # that reply says more than the broken pipe.
            self.early = _early_verdict(self._read_early())
            self.close()
            if self.early is None:
                raise

    def _read_early(self) -> bytes:
        try:
            self._sock.settimeout(0.5)
            return self._sock.recv(4096)
        except OSError:
            return b""

    def finish(self) -> Verdict:
        """End the stream and read the verdict."""
        if self.early is None:
            self._send(self.framer.finish())
        if self.early is not None:
            return self.early
        try:
            return stream_verdict(self.client._exchange(self._sock), self.address)
        finally:
            self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> InstreamWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the asyncio front end -----------------------------------------------------


class AsyncClamd:
    """The asyncio twin of `Clamd`: the same commands, awaited."""

    def __init__(self, address: Address | str, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.address = parse_address(address) if isinstance(address, str) else address
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self.address
        try:
            if address.kind == "unix":
                opening = asyncio.open_unix_connection(address.path)
            else:
                opening = asyncio.open_connection(address.host, address.port)
            return await asyncio.wait_for(opening, self.connect_timeout)
        except TimeoutError:
            raise ClamdConnectError(f"{address}: connect timed out") from None
        except OSError as exc:
            raise ClamdConnectError(f"{address}: {exc.strerror or exc}") from None

    async def _exchange(self, reader: asyncio.StreamReader) -> list[str]:
        replies = ReplyReader()
        lines: list[str] = []
        try:
            # One deadline for the whole reply, as clamav-milter's ReadTimeout.
            async with asyncio.timeout(self.timeout):
                while chunk := await reader.read(65536):
                    lines += replies.feed(chunk)
        except TimeoutError:
            raise ClamdTimeout(f"{self.address}: no reply in {self.timeout:g} s") from None
        except OSError as exc:
            raise ClamdProtocolError(f"{self.address}: {exc.strerror or exc}") from None
        lines += replies.at_eof()
        if not lines:
            raise ClamdProtocolError(f"{self.address}: closed the connection without a reply")
        return lines

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except TimeoutError:
            raise ClamdTimeout(f"{self.address}: does not take data ({self.timeout:g} s)") from None
        except OSError as exc:
            raise ClamdProtocolError(f"{self.address}: {exc.strerror or exc}") from None

    async def command(self, name: str, argument: bytes | str | None = None) -> list[str]:
        reader, writer = await self.connect()
        try:
            await self._send(writer, encode_command(name, argument))
            return await self._exchange(reader)
        finally:
            await _close(writer)

    async def ping(self) -> bool:
        return (await self.command("PING")) == ["PONG"]

    async def version(self) -> str:
        return (await self.command("VERSION"))[0]

    async def scan_path(self, path: str, command: str = "SCAN") -> list[Verdict]:
        return [parse_verdict(line) for line in await self.command(command, path)]

    async def fildes(self, fd: int) -> Verdict:
        """Scan an open file by passing its descriptor (unix socket only)."""
        if self.address.kind != "unix":
            raise ClamdError("FILDES needs a unix socket")
        # SCM_RIGHTS needs the socket itself, which asyncio's streams hide.
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            try:
                await asyncio.wait_for(loop.sock_connect(sock, self.address.path),
                                       self.connect_timeout)
            except TimeoutError:
                raise ClamdConnectError(f"{self.address}: connect timed out") from None
            except OSError as exc:
                raise ClamdConnectError(f"{self.address}: {exc.strerror or exc}") from None
            replies = ReplyReader()
            lines: list[str] = []
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, encode_command("FILDES")),
                                       self.timeout)
                socket.send_fds(sock, [b"\0"], [fd])  # one byte: always fits
                while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), self.timeout):
                    lines += replies.feed(chunk)
            except TimeoutError:
                raise ClamdTimeout(f"{self.address}: no reply in {self.timeout:g} s") from None
            except OSError as exc:
                raise ClamdProtocolError(f"{self.address}: {exc.strerror or exc}") from None
            return stream_verdict(lines + replies.at_eof(), self.address)
        finally:
            sock.close()

    async def instream(self, data: bytes | Iterable[bytes] | AsyncIterable[bytes],
                       limit: int | None = None) -> Verdict:
        writer = await self.open_instream(limit)
        try:
            if hasattr(data, "__aiter__"):
                async for piece in data:
                    await writer.write(piece)
            else:
                for piece in _pieces(data):
                    await writer.write(piece)
            return await writer.finish()
        finally:
            await writer.close()

    async def open_instream(self, limit: int | None = None) -> AsyncInstreamWriter:
        reader, writer = await self.connect()
        stream = AsyncInstreamWriter(self, reader, writer, limit)
        try:
            await self._send(writer, encode_command("INSTREAM"))
        except ClamdError:
            await stream.close()
            raise
        return stream


class AsyncInstreamWriter:
    """One INSTREAM exchange, written piece by piece (asyncio)."""

    def __init__(self, client: AsyncClamd, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, limit: int | None):
        self.client = client
        self.framer = InstreamFramer(limit)
        self._reader = reader
        self._writer: asyncio.StreamWriter | None = writer
        self.early: Verdict | None = None  # as InstreamWriter.early

    @property
    def address(self) -> Address:
        return self.client.address

    async def write(self, data: bytes | memoryview) -> None:
        out = self.framer.feed(data)
        if out and self.early is None:
            await self._send(out)

    async def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise ClamdError(f"{self.address}: the stream is closed")
        try:
            await self.client._send(self._writer, data)
        except ClamdError:
            self.early = _early_verdict(await self._read_early())
            await self.close()
            if self.early is None:
                raise

    async def _read_early(self) -> bytes:
        try:
            return await asyncio.wait_for(self._reader.read(4096), 0.5)
        except (TimeoutError, OSError):
            return b""

    async def finish(self) -> Verdict:
        if self.early is None:
            await self._send(self.framer.finish())
        if self.early is not None:
            return self.early
        try:
            return stream_verdict(await self.client._exchange(self._reader), self.address)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
