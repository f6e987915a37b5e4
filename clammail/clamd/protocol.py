"""The clamd protocol without I/O: bytes in, events out; replies as bytes.

`Connection` is one client connection's state machine, written after clamd
1.4.6's receive loop (server-th.c, session.c) so that every quirk a client
can observe is the same: how commands are delimited (`z` NUL, `n` newline,
or bare "one packet, one command"), which commands need an argument, which
are refused in the bare form or inside IDSESSION, INSTREAM chunking and its
size limit, FILDES and its descriptor, and what happens to bytes sent after
the last command.

The server feeds it what it reads (`receive`) and acts on the events it
returns; it formats replies with `reply_line`. Nothing here blocks or
touches a socket, so it can be tested and fuzzed on plain bytes.
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass

# clamd's per-connection command buffer is PATH_MAX + 8 bytes; a client that
# fills it without completing a command is disconnected.
COMMAND_BUFFER = 4096 + 8

NUL, NL = b"\0", b"\n"


@dataclass(frozen=True)
class CommandSpec:
    name: str
    need_arg: bool
    bare_ok: bool  # accepted without the z/n prefix ("old style")
    in_session: bool  # accepted inside IDSESSION


# In clamd's matching order: the first entry whose name is a prefix of the
# command wins, so VERSIONCOMMANDS must come before VERSION and DETSTATSCLEAR
# before DETSTATS. RAWSCAN and STREAM are from the older protocol that the
# clamd documentation describes; clamd 1.4.6 no longer has them.
COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("SCAN", True, True, True),
    CommandSpec("QUIT", False, True, False),
    CommandSpec("RELOAD", False, True, False),
    CommandSpec("PING", False, True, True),
    CommandSpec("CONTSCAN", True, True, False),
    CommandSpec("VERSIONCOMMANDS", False, False, True),
    CommandSpec("VERSION", False, True, True),
    CommandSpec("END", False, False, True),
    CommandSpec("SHUTDOWN", False, True, False),
    CommandSpec("MULTISCAN", True, True, False),
    CommandSpec("FILDES", False, True, True),
    CommandSpec("STATS", False, False, True),
    CommandSpec("IDSESSION", False, False, False),
    CommandSpec("INSTREAM", False, False, True),
    CommandSpec("DETSTATSCLEAR", False, True, False),
    CommandSpec("DETSTATS", False, True, False),
    CommandSpec("ALLMATCHSCAN", True, False, False),
    CommandSpec("RAWSCAN", True, True, False),
    CommandSpec("STREAM", False, True, False),
)

# What VERSIONCOMMANDS lists: clamd 1.4.6's list, so clients that compare it
# see the same daemon (RAWSCAN and STREAM work but are not advertised).
ADVERTISED = (
    "SCAN QUIT RELOAD PING CONTSCAN VERSIONCOMMANDS VERSION END SHUTDOWN MULTISCAN "
    "FILDES STATS IDSESSION INSTREAM DETSTATSCLEAR DETSTATS ALLMATCHSCAN"
)

UNKNOWN = "UNKNOWN"


def parse_command(text: bytes, bare: bool) -> tuple[str, bytes | None]:
    """(command name or UNKNOWN, argument) as clamd's parse_command() decides."""
    for spec in COMMANDS:
        name = spec.name.encode()
        if not text.startswith(name):
            continue
        rest = text[len(name):]
        if spec.need_arg:
            if not rest:
                return UNKNOWN, None
            argument: bytes | None = rest[1:]  # clamd skips one byte, whatever it is
        else:
            if rest:
                return UNKNOWN, None
            argument = None
        if bare and not spec.bare_ok:
            return UNKNOWN, None
        return spec.name, argument
    return UNKNOWN, None


SPECS = {spec.name: spec for spec in COMMANDS}


class Mode(enum.Enum):
    COMMAND = "command"  # reading commands
    STREAM = "stream"  # reading INSTREAM chunks
    WAIT_FD = "wait-fd"  # FILDES waits for the descriptor
    DONE = "done"  # no more commands: replies pending, then close


# -- events -------------------------------------------------------------


@dataclass
class Send:
    """Bytes to send now."""

    data: bytes


@dataclass
class Request:
    """A command for the server to carry out; it replies with `reply_line(request, ...)`."""

    command: str
    argument: bytes | None
    term: bytes
    id: int  # the session's request number, 0 outside a session
    fd: int | None = None  # FILDES: the received descriptor (the server closes it)


@dataclass
class StreamStart:
    """INSTREAM began: collect the chunks that follow."""

    id: int
    term: bytes


@dataclass
class StreamData:
    """Stream bytes to spool; may be a view of the bytes the server read (write it out now)."""

    data: bytes | bytearray | memoryview


@dataclass
class StreamAbort:
    """The stream ended without its final chunk: drop what was collected."""


@dataclass
class SessionGarbage:
    """A session's last command (END, a FILDES without descriptor) had bytes
    after it. clamd answers "Error processing command." and drops the
    session's pending replies if scans are still in flight; if none are, it
    has closed the connection already and says nothing."""

    id: int
    term: bytes


@dataclass
class Close:
    """No more input is read; close once every pending reply is sent.

    `abort`: a session ended in an error; clamd then ends the session's scans
    still in flight without their replies (thrmgr_group_terminate).
    """

    abort: bool = False


Event = Send | Request | StreamStart | StreamData | StreamAbort | SessionGarbage | Close


def reply_line(id: int, term: bytes, text: str | bytes) -> bytes:
    """One reply: `<id>: ` inside a session, then the text and the command's delimiter."""
    body = text if isinstance(text, bytes) else os.fsencode(text)
    if id:
        return b"%d: " % id + body + term
    return body + term


class Connection:
    """The state of one client connection, as clamd keeps it in its fd_buf."""

    def __init__(self, stream_max_length: int, allow_fd: bool = True):
        self.mode = Mode.COMMAND
        self.buffer = bytearray()
        self.in_session = False
        self.next_id = 0
        self.quota = 0
        self.stream_max_length = stream_max_length
        self.chunk_left = 0
        self.stream_id = 0
        self.stream_term = NL
        self.allow_fd = allow_fd
        self.pending_fd: int | None = None
        self.fildes: tuple[bytes, int] | None = None  # (term, id) while waiting for the fd
        # The delimiter of the last command read (clamd's buf->term, zeroed
        # at the start): connection-level errors are terminated with it.
        self.term = NUL

    # -- input ----------------------------------------------------------

    def receive(self, data: bytes, fds: list[int] | None = None) -> list[Event]:
        """Feed what one read returned (and the descriptors that came with it)."""
        events: list[Event] = []
        if self.mode is Mode.DONE:
            for fd in fds or ():
                os.close(fd)
            return events
        for fd in fds or ():
            # clamd keeps only the last descriptor of a read.
            if self.pending_fd is not None:
                os.close(self.pending_fd)
            self.pending_fd = fd
        view = memoryview(data)
        first = True
        while first or view:
            # clamd reads commands into a buffer of COMMAND_BUFFER bytes: what
            # does not fit is read (as a new packet) once the buffer drained.
            if self.mode is Mode.COMMAND or self.mode is Mode.WAIT_FD:
                room = max(0, COMMAND_BUFFER - len(self.buffer))
            else:
                room = len(view)
            part, view = view[:room], view[room:]
            self._receive_packet(part, events)
            first = False
            if self.mode is Mode.DONE:
                break
            if self.mode is Mode.COMMAND and len(self.buffer) >= COMMAND_BUFFER:
                # The buffer is full without a complete command: clamd drops
                # the client without a word.
                self._finish(events)
                break
        return events

    def _receive_packet(self, data: memoryview, events: list[Event]) -> None:
        if self.mode is Mode.STREAM and self.chunk_left and not self.buffer:
            # The bulk of a stream: pass the chunk's bytes on as a view of
            # what was read, without copying them through the buffer.
            take = min(self.chunk_left, len(data))
            events.append(StreamData(data[:take]))
            self.chunk_left -= take
            data = data[take:]
        self.buffer.extend(data)
        if self.mode is Mode.WAIT_FD:
            term, id = self.fildes
            self.fildes = None
            self.mode = Mode.COMMAND
            self.term = term
            self.next_id += 1
            del self.buffer[:1]  # the dummy byte that carried the descriptor
            self._dispatch_fildes(term, id, events)
            if self.mode is Mode.DONE:
                return
            # clamd parsed FILDES again from the start of its buffer: what
            # follows is not at the start of a packet.
            events.extend(self._process(fresh_packet=False))
            return
        events.extend(self._process(fresh_packet=True))

    def eof(self) -> list[Event]:
        """The client closed its side (or the read failed)."""
        events: list[Event] = []
        if self.mode is Mode.STREAM:
            events.append(StreamAbort())
        if self.mode is not Mode.DONE:
            self._finish(events)
        return events

    def timeout(self) -> list[Event]:
        """No data within the read timeout."""
        events: list[Event] = [Send(b"COMMAND READ TIMED OUT\n")] if self.mode is not Mode.DONE else []
        return events + self.eof()

    # -- the loop -------------------------------------------------------

    def _process(self, fresh_packet: bool) -> list[Event]:
        events: list[Event] = []
        while self.mode in (Mode.COMMAND, Mode.STREAM) and self.buffer:
            if self.mode is Mode.STREAM:
                if not self._stream(events):
                    break
                continue
            command = self._next_command(fresh_packet)
            fresh_packet = False
            if command is None:
                break
            text, term, bare, span = command
            self._command(text, term, bare, span, events)
        if self.pending_fd is not None:
            # A descriptor no FILDES took (also one that came with the FILDES
            # command itself instead of with the byte after it).
            if self.mode is Mode.DONE:
                os.close(self.pending_fd)
                self.pending_fd = None
            else:
                # Only a command that changed the mode is followed by clamd's
                # generic error line; an incomplete one is not.
                self._protocol_error(events, processing_error=self.mode is not Mode.COMMAND)
        return events

    def _protocol_error(self, events: list[Event], processing_error: bool = True) -> None:
        """clamd's answer to an unclaimed descriptor; the connection ends."""
        os.close(self.pending_fd)
        self.pending_fd = None
        id = self.next_id if self.in_session else 0
        events.append(Send(reply_line(id, self.term, "PROTOCOL ERROR: ancillary data sent without FILDES. ERROR")))
        if processing_error:
            events.append(Send(reply_line(id, self.term, "Error processing command. ERROR")))
        self.fildes = None
        self._finish(events, abort=self.in_session)

    def _next_command(self, fresh_packet: bool) -> tuple[bytes, bytes, bool, int] | None:
        """The next complete command: (text, delimiter, bare, bytes after it).

        The last value is what clamd's FILDES test looks at: how many bytes
        followed the command's first byte after the prefix in the buffer.
        """
        first = self.buffer[:1]
        if first in (b"z", b"n"):
            term = NUL if first == b"z" else NL
            end = self.buffer.find(term)
            if end < 0:
                return None
            span = len(self.buffer) - 1
            # clamd writes a NUL over the delimiter and reads the command as a
            # C string: up to the first NUL, with trailing CR/LF overwritten
            # by NULs (cli_chomp). It steps over the text and one byte more;
            # whatever follows (after an embedded NUL, the stripped CR/LF as
            # NULs) stays in its buffer.
            line = bytearray(self.buffer[1:end]) + NUL
            del self.buffer[: end + 1]
            length = line.index(NUL)
            text = bytes(line[:length])
            if term == NL:
                text = text.rstrip(b"\r\n")
            line[len(text):length] = NUL * (length - len(text))
            self.buffer[:0] = line[len(text) + 1:]
            return text, term, False, span
        if not fresh_packet:
            # clamd reads a bare command only at the start of a packet.
            return None
        span = len(self.buffer)
        end = self.buffer.find(NL)
        if end < 0:
            text = bytes(self.buffer)
            self.buffer.clear()
        else:
            text = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
        text = text.split(NUL, 1)[0].rstrip(b"\r\n")
        return text, NL, True, span

    def _command(self, text: bytes, term: bytes, bare: bool, span: int,
                 events: list[Event]) -> None:
        id = self.next_id if self.in_session else 0
        if self.in_session and bare:
            # Answered with the session's delimiter (the last command's).
            events.append(Send(reply_line(id, self.term, "Only nCMDS\\n and zCMDS\\0 are accepted inside IDSESSION. ERROR")))
            if self.pending_fd is not None:
                # clamd's check for an unclaimed descriptor comes first and
                # replaces the generic line (the command loop stopped in
                # command mode).
                self._protocol_error(events, processing_error=False)
                return
            events.append(Send(reply_line(id, self.term, "Error processing command. ERROR")))
            self._finish(events, abort=True)
            return
        name, argument = parse_command(text, bare)
        self.next_id += 1
        if name != "FILDES" or span > len(b"FILDES\n"):
            self.term = term  # a FILDES still waiting for its descriptor does not set it
        if self.in_session and (name == UNKNOWN or not SPECS[name].in_session):
            events.append(Send(reply_line(id, term, "Command invalid inside IDSESSION. ERROR")))
            self.in_session = False
            self._finish(events, abort=True)
            return
        if name == UNKNOWN:
            events.append(Send(reply_line(id, term, "UNKNOWN COMMAND")))
            self._finish(events)
        elif name == "IDSESSION":
            self.in_session = True
        elif name == "END":
            if not self.in_session:
                events.append(Send(reply_line(0, term, "UNKNOWN COMMAND")))
            elif self.buffer:
                events.append(SessionGarbage(id, term))
            self._finish(events)
        elif name == "INSTREAM":
            self.mode = Mode.STREAM
            self.quota = self.stream_max_length
            self.chunk_left = 0
            self.stream_id, self.stream_term = id, term
            events.append(StreamStart(id, term))
        elif name == "FILDES":
            if span <= len(b"FILDES\n"):
                # Nothing after the command yet: the descriptor comes with
                # the next packet (and its dummy byte).
                self.mode = Mode.WAIT_FD
                self.fildes = (term, id)
                self.next_id -= 1  # clamd reads the command again then, under the same number
                return
            # clamd steps over one more byte: the dummy byte that carries the
            # descriptor (or whatever is there).
            del self.buffer[:1]
            self._dispatch_fildes(term, id, events)
        elif name in ("PING", "VERSION", "VERSIONCOMMANDS"):
            events.append(Request(name, argument, term, id))
            if not self.in_session:
                self._finish(events)
        elif name in ("SHUTDOWN", "QUIT", "RELOAD", "DETSTATS", "DETSTATSCLEAR", "STREAM"):
            events.append(Request("SHUTDOWN" if name == "QUIT" else name, argument, term, id))
            self._finish(events)
        else:  # SCAN CONTSCAN MULTISCAN ALLMATCHSCAN RAWSCAN STATS: run in clamd's thread pool
            events.append(Request(name, argument, term, id))
            if not self.in_session:
                self._last_command(events, term)

    def _dispatch_fildes(self, term: bytes, id: int, events: list[Event]) -> None:
        fd, self.pending_fd = self.pending_fd, None
        if fd is None or not self.allow_fd:
            if fd is not None:
                os.close(fd)
            events.append(Send(reply_line(id, term, "No file descriptor received. ERROR")))
            if self.in_session and self.buffer:
                events.append(SessionGarbage(id, term))
            self._finish(events)
            return
        events.append(Request("FILDES", None, term, id, fd))
        if not self.in_session:
            self._last_command(events, term)

    def _last_command(self, events: list[Event], term: bytes) -> None:
        """Outside a session one scan command is all: anything more is an error.

        clamd looks for a descriptor no command took first; either error
        gets one "Error processing command." (the scan still runs).
        """
        if self.pending_fd is not None:
            self._protocol_error(events)
            return
        if self.buffer:
            events.append(Send(reply_line(0, term, "Error processing command. ERROR")))
            self.buffer.clear()
        self._finish(events)

    def _stream(self, events: list[Event]) -> bool:
        """Consume INSTREAM chunks; False when more input is needed."""
        if self.chunk_left == 0:
            if len(self.buffer) < 4:
                return False
            (size,) = struct.unpack(">I", self.buffer[:4])
            del self.buffer[:4]
            if size == 0:
                events.append(Request("INSTREAM", None, self.stream_term, self.stream_id))
                if self.in_session:
                    self.mode = Mode.COMMAND
                else:
                    self.buffer.clear()  # clamd ignores what follows the last chunk
                    self._finish(events)
                return True
            if size > self.quota:
                events.append(StreamAbort())
                events.append(Send(reply_line(self.stream_id, self.stream_term, "INSTREAM size limit exceeded. ERROR")))
                self._finish(events)
                return False
            self.quota -= size
            self.chunk_left = size
        take = min(self.chunk_left, len(self.buffer))
        if take:
            events.append(StreamData(self.buffer[:take]))
            del self.buffer[:take]
            self.chunk_left -= take
        return self.chunk_left == 0 and bool(self.buffer)

    def _finish(self, events: list[Event], abort: bool = False) -> None:
        self.mode = Mode.DONE
        self.buffer.clear()
        if self.pending_fd is not None:
            os.close(self.pending_fd)
            self.pending_fd = None
        events.append(Close(abort))
