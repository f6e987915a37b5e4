"""The clamd client's sans-IO core: addresses, framing, reply splitting and parsing.

The same bytes a daemon reads and writes, without sockets: framing is
checked by decoding it back, reply splitting on every cut of a reply.
"""

from __future__ import annotations

import random
import struct

import pytest

from clammail.clamd.client import (
    END_OF_STREAM,
    Address,
    ClamdError,
    ClamdProtocolError,
    InstreamFramer,
    ReplyReader,
    Status,
    encode_command,
    parse_address,
    parse_verdict,
)


def unframe(data: bytes) -> tuple[list[bytes], bool]:
    """The chunks of an INSTREAM body, and whether it ended with the zero chunk."""
    chunks, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        pos += 4
        if size == 0:
            return chunks, pos == len(data)
        chunks.append(data[pos:pos + size])
        pos += size
    return chunks, False


@pytest.mark.parametrize("text, expected", [
    ("unix:/run/clamd.ctl", Address("unix", path="/run/clamd.ctl")),
    ("/run/clamd.ctl", Address("unix", path="/run/clamd.ctl")),
    ("tcp:scanner.example", Address("tcp", host="scanner.example", port=3310)),
    ("tcp:127.0.0.1:3311", Address("tcp", host="127.0.0.1", port=3311)),
    ("127.0.0.1:3311", Address("tcp", host="127.0.0.1", port=3311)),
    ("tcp:[::1]:3310", Address("tcp", host="::1", port=3310)),
    ("tcp:[::1]", Address("tcp", host="::1", port=3310)),
    ("tcp:::1:3312", Address("tcp", host="::1", port=3312)),
])
def test_addresses(text, expected):
    assert parse_address(text) == expected
    assert parse_address(str(expected)) == expected


@pytest.mark.parametrize("text", ["unix:relative/path", "tcp:host:port", "tcp:host:0",
                                  "tcp:host:70000", "tcp:[::1", "", "tcp:"])
def test_bad_addresses(text):
    with pytest.raises(ClamdError):
        parse_address(text)


def test_commands():
    assert encode_command("PING") == b"zPING\0"
    assert encode_command("SCAN", "/tmp/a b") == b"zSCAN /tmp/a b\0"
    with pytest.raises(ValueError):
        encode_command("SCAN", b"/tmp/a\0b")


def test_framing_round_trip_on_random_writes():
    rng = random.Random(7)
    for _ in range(200):
        pieces = [rng.randbytes(rng.choice([0, 1, 7, 100, 5000, 70000])) for _ in range(rng.randint(0, 12))]
        framer = InstreamFramer(chunk_size=4096)
        wire = b"".join(framer.feed(p) for p in pieces) + framer.finish()
        chunks, ended = unframe(wire)
        assert ended
        assert b"".join(chunks) == b"".join(pieces)
        assert all(0 < len(c) <= 4096 for c in chunks)
        # Small writes are gathered: no more chunks than the data needs, plus one.
        assert len(chunks) <= len(b"".join(pieces)) // 4096 + 1


def test_framing_limit_cuts_and_says_so():
    framer = InstreamFramer(limit=10, chunk_size=4)
    wire = framer.feed(b"123456") + framer.feed(b"7890abc") + framer.feed(b"more") + framer.finish()
    chunks, ended = unframe(wire)
    assert ended and b"".join(chunks) == b"1234567890"
    assert framer.truncated and framer.sent == 10
    assert InstreamFramer().finish() == END_OF_STREAM


def test_reply_reader_on_every_cut():
    wire = b"/a: OK\0/b: Eicar-Test-Signature FOUND\0/c: Access denied. ERROR\0"
    for cut in range(len(wire) + 1):
        reader = ReplyReader()
        lines = reader.feed(wire[:cut]) + reader.feed(wire[cut:]) + reader.at_eof()
        assert lines == ["/a: OK", "/b: Eicar-Test-Signature FOUND", "/c: Access denied. ERROR"]


def test_reply_reader_limit_and_missing_nul():
    reader = ReplyReader(max_reply=10)
    with pytest.raises(ClamdProtocolError):
        reader.feed(b"x" * 11)
    reader = ReplyReader()
    assert reader.feed(b"COMMAND READ TIMED OUT") == []
    assert reader.at_eof() == ["COMMAND READ TIMED OUT"]


@pytest.mark.parametrize("line, status, path, detail", [
    ("stream: OK", Status.OK, "stream", ""),
    ("stream: Win.Test.EICAR_HDB-1 FOUND", Status.FOUND, "stream", "Win.Test.EICAR_HDB-1"),
    ("/a: b: c: Eicar FOUND", Status.FOUND, "/a: b: c", "Eicar"),
    ("INSTREAM size limit exceeded. ERROR", Status.ERROR, "", "INSTREAM size limit exceeded."),
    ("/x: Can't open file or directory ERROR", Status.ERROR, "/x",
     "Can't open file or directory"),
])
def test_verdicts(line, status, path, detail):
    verdict = parse_verdict(line)
    assert (verdict.status, verdict.path, verdict.detail) == (status, path, detail)
    assert verdict.line == line


@pytest.mark.parametrize("line", ["PONG", "", "stream: FOUND", "garbage FOUND", "\x00\x01",
                                  "stream: two words FOUND"])
def test_garbage_is_not_a_verdict(line):
    with pytest.raises(ClamdProtocolError):
        parse_verdict(line)
