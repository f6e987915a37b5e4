"""The sans-IO protocol: commands, sessions and INSTREAM on plain bytes, no sockets."""

from __future__ import annotations

import os
import random
import struct

from clammail.clamd.protocol import (
    COMMAND_BUFFER,
    Close,
    Connection,
    Mode,
    Request,
    Send,
    StreamAbort,
    StreamData,
    StreamStart,
    parse_command,
    reply_line,
)


def feed(*packets: bytes, limit: int = 100) -> tuple[Connection, list]:
    conn = Connection(limit)
    events = []
    for packet in packets:
        events += conn.receive(packet)
    return conn, events


def test_parse_command_follows_clamd_table():
    assert parse_command(b"VERSIONCOMMANDS", False) == ("VERSIONCOMMANDS", None)
    assert parse_command(b"VERSION", True) == ("VERSION", None)
    assert parse_command(b"VERSIONCOMMANDS", True)[0] == "UNKNOWN"  # needs a prefix
    assert parse_command(b"SCAN /x", False) == ("SCAN", b"/x")
    assert parse_command(b"SCAN/x", False) == ("SCAN", b"x")  # one byte skipped, whatever it is
    assert parse_command(b"SCAN", False)[0] == "UNKNOWN"
    assert parse_command(b"PING ", False)[0] == "UNKNOWN"
    assert parse_command(b"DETSTATSCLEAR", True)[0] == "DETSTATSCLEAR"
    assert parse_command(b"INSTREAM", True)[0] == "UNKNOWN"


def test_one_command_per_connection_outside_sessions():
    conn, events = feed(b"nPING\nnPING\n")
    assert [type(e) for e in events] == [Request, Close]
    assert events[0].command == "PING" and events[0].term == b"\n"
    conn, events = feed(b"zSCAN /a\0zPING\0")
    assert isinstance(events[1], Send) and events[1].data == b"Error processing command. ERROR\0"


def test_session_numbers_and_invalid_commands():
    conn, events = feed(b"zIDSESSION\0zPING\0zVERSION\0zCONTSCAN /x\0")
    requests = [e for e in events if isinstance(e, Request)]
    assert [(r.command, r.id) for r in requests] == [("PING", 1), ("VERSION", 2)]
    assert Send(b"3: Command invalid inside IDSESSION. ERROR\0") in events
    assert conn.mode is Mode.DONE


def test_instream_chunks_and_limit():
    body = struct.pack(">I", 3) + b"abc" + struct.pack(">I", 2) + b"de" + struct.pack(">I", 0)
    conn, events = feed(b"nINSTREAM\n" + body[:5], body[5:])
    data = b"".join(e.data for e in events if isinstance(e, StreamData))
    assert data == b"abcde"
    assert isinstance(events[0], StreamStart)
    assert any(isinstance(e, Request) and e.command == "INSTREAM" for e in events)
    conn, events = feed(b"zINSTREAM\0" + struct.pack(">I", 101), limit=100)
    assert isinstance(events[0], StreamStart) and isinstance(events[1], StreamAbort)
    assert Send(b"INSTREAM size limit exceeded. ERROR\0") in events


def test_full_buffer_drops_the_client_silently():
    conn, events = feed(b"n" + b"A" * (COMMAND_BUFFER + 10))
    assert events == [Close()]


def test_fildes_waits_for_its_descriptor():
    conn = Connection(100)
    assert conn.receive(b"nFILDES\n") == []
    assert conn.mode is Mode.WAIT_FD
    r, w = os.pipe()
    os.close(w)
    events = conn.receive(b"x", [r])
    assert events[0].command == "FILDES" and events[0].fd == r
    os.close(r)


def test_descriptor_without_fildes_is_a_protocol_error():
    r, w = os.pipe()
    os.close(w)
    conn = Connection(100)
    events = conn.receive(b"zPING\0", [r])
    assert any(isinstance(e, Request) and e.command == "PING" for e in events)


def test_reply_line():
    assert reply_line(0, b"\0", "PONG") == b"PONG\0"
    assert reply_line(3, b"\n", "PONG") == b"3: PONG\n"


def test_random_input_is_bounded():
    rng = random.Random(7)
    for _ in range(2000):
        conn = Connection(1000)
        for _ in range(rng.randrange(1, 5)):
            packet = bytes(rng.choice(b"nzPINGSCAEDV\0\n /") for _ in range(rng.randrange(0, 40)))
            conn.receive(packet)
            assert len(conn.buffer) <= COMMAND_BUFFER
        conn.eof()
        assert conn.mode is Mode.DONE
