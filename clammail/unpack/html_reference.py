"""The reference HTML normalizer: libclamav's htmlnorm.c state machine, one byte at a time.

This is the straightforward transcription that clammail.unpack.html's fast
normalizer must agree with byte for byte (tests/test_html_fast.py runs both
on generated, mutated and real files; tests/test_html.py checks it against
clamscan). It is slow (a Python step per input byte) and is kept for that
comparison and as the readable statement of the rules: when ClamAV's
behaviour needs changing, change it here first, then the fast path.
"""

from __future__ import annotations

import html.entities
import re
from collections.abc import Iterator

# libclamav reads the file in chunks of at most this many bytes (less one for
# the terminating NUL) and cuts each chunk after its last whitespace.
_CHUNK = 8192
# Longest tag name, attribute name, attribute value and entity name it keeps.
_STR_MAX = 1024

_SPACE = frozenset(b" \t\n\v\f\r")
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

# States of the normalizer (names as in htmlnorm.c, for reading both side by side).
(NORM, EIGHTBIT, COMMENT, CHAR_REF, ENTITY_DECODE, SKIP_WS, TRIM_WS, TAG, TAG_ARG,
 TAG_ARG_VAL, TAG_ARG_EQUAL, PROCESS_TAG, CHAR_REF_DECODE, RFC2397_TYPE, RFC2397_INIT,
 RFC2397_DATA, RFC2397_FINISH, RFC2397_ESC, ESCAPE_CHAR, BAD) = range(20)

_NOT_QUOTED, _SINGLE, _DOUBLE = 0, 1, 2

# Multi-byte sequences libclamav writes as a '.' (ideographic and full-width stops).
_DOTS = (0xE38082, 0xEFBC8E, 0xEFB992)


class Normalized:
    """The outputs of one normalization."""

    def __init__(self) -> None:
        self.nocomment = bytearray()
        self.notags = bytearray()
        self.data_uris: list[tuple[bytes, bytearray]] = []


def _chunks(data: bytes) -> Iterator[bytes]:
    """The chunks libclamav's reader hands the state machine: NULs dropped, cut after a space."""
    offset, end = 0, len(data)
    while offset < end:
        want = _CHUNK - 1
        window = data[offset: offset + want]
        consumed = len(window)
        if 0 in window:
            # Copy byte by byte, skipping NULs, until the chunk is full.
            out = bytearray()
            pos = offset
            while pos < end and len(out) < want:
                byte = data[pos]
                pos += 1
                if byte:
                    out.append(byte)
            consumed = pos - offset
            chunk = bytes(out)
        else:
            chunk = window
        next_offset = offset + consumed
        if next_offset < end and data[next_offset] not in _SPACE:
            cut = _rewind_to_space(chunk)
            if cut < len(chunk):
                # Give back what follows the last space (NUL-free chunks only map 1:1).
                next_offset -= len(chunk) - cut
                chunk = chunk[:cut]
        offset = next_offset
        if not chunk:
            break
        yield chunk


def _rewind_to_space(chunk: bytes) -> int:
    length = len(chunk)
    while length > 1 and chunk[length - 1] not in _SPACE:
        length -= 1
    return len(chunk) if length == 1 else length


def _lower(byte: int) -> int:
    return byte + 32 if 65 <= byte <= 90 else byte


def _entity_bytes(name: bytes) -> bytes | None:
    """An entity's replacement as libclamav writes it, None for an unknown name."""
    try:
        code = html.entities.name2codepoint[name.decode("ascii")]
    except (KeyError, UnicodeDecodeError):
        return None
    return _codepoint_bytes(code)


def _codepoint_bytes(code: int) -> bytes:
    code &= 0xFFFF
    if not code:
        return b""
    if code < 0xFF:
        return bytes([code])
    if code in (0x3002, 0xFF0E, 0xFE52):
        return b"."
    return b"&#x%04x;" % code


_PLAIN_TEXT = re.compile(rb"[^<&\s\x00-\x1f\x80-\xff]+")


def normalize(data: bytes, check=lambda: None) -> Normalized:
    """Run libclamav's HTML state machine over `data`."""
    out = Normalized()
    o2 = out.nocomment
    text = out.notags
    state, next_state = NORM, BAD
    in_script = False
    text_space_written = False
    binary = False
    tag = bytearray()
    tag_arg = bytearray()
    tag_val = bytearray()
    tag_args: list[tuple[bytes, bytes | None]] = []
    entity = bytearray()
    quoted = _NOT_QUOTED
    escape = False
    value = 0
    hexadecimal = False
    esc_length = 0
    mbchar = mbchar2 = 0
    data_uri: bytearray | None = None

    def add_arg(val: bytes | None) -> None:
        if val is not None:
            # A C string: it ends at the first NUL (a decoded &#0;).
            val = val.split(b"\0", 1)[0]
            if val[:1] == b'"':
                val = val[1:-1]
        tag_args.append((bytes(tag_arg), val))

    def arg_value(name: bytes) -> bytes | None:
        for key, val in tag_args:
            if key == name:
                return val
        return None

    def rewind_o2() -> None:
        if o2:
            del o2[-1]

    def keep(buffer: bytearray, byte: int) -> None:
        if len(buffer) < _STR_MAX:
            buffer.append(byte)

    for line in _chunks(data):
        check()
        buf = bytearray(line)
        n = len(buf)
        i = 0
        while i < n and buf[i] in _SPACE:
            i += 1
        while i < n:
            c = buf[i]
            if not binary and c == 0x0A:
                buf[i] = 0x20
                continue
            if not binary and c == 0x0D:
                i += 1
                continue
            if state == SKIP_WS:
                if c in _SPACE:
                    i += 1
                else:
                    state, next_state = next_state, BAD
            elif state == TRIM_WS:
                if c in _SPACE:
                    i += 1
                else:
                    if not in_script:
                        o2.append(0x20)
                    state, next_state = next_state, BAD
            elif state == NORM:
                if c == 0x3C:  # <
                    o2.append(0x3C)
                    if not in_script and not text_space_written:
                        text.append(0x20)
                        text_space_written = True
                    i += 1
                    state, next_state = SKIP_WS, TAG
                    tag.clear()
                elif c in _SPACE:
                    if not text_space_written and not in_script:
                        text.append(0x20)
                        text_space_written = True
                    state, next_state = TRIM_WS, NORM
                elif c == 0x26:  # &
                    if not text_space_written and not in_script:
                        text.append(0x20)
                        text_space_written = True
                    state, next_state = CHAR_REF, NORM
                    i += 1
                elif c >= 0x80:
                    state, next_state = EIGHTBIT, NORM
                    mbchar = c
                    i += 1
                elif not in_script and c >= 0x20:
                    # Fast path: a run of plain text characters.
                    m = _PLAIN_TEXT.match(buf, i)
                    run = bytes(buf[i: m.end()]).lower()
                    o2 += run
                    text += run
                    text_space_written = False
                    i = m.end()
                else:
                    low = _lower(c)
                    if in_script and low == 0x27:
                        low = 0x22
                    o2.append(low)
                    if not in_script:
                        # Control characters count as whitespace in the text view.
                        if not text_space_written:
                            text.append(0x20)
                            text_space_written = True
                    i += 1
            elif state == EIGHTBIT:
                if c < 0x80 or mbchar >= 0x10000:
                    if mbchar in _DOTS or (mbchar == 0xA1 and c in (0x43, 0x44, 0x4F)):
                        o2.append(0x2E)
                        text.append(0x2E)
                        if mbchar == 0xA1:
                            i += 1
                            mbchar = 0
                            continue
                    else:
                        c0, c1, c2 = mbchar >> 16 & 0xFF, mbchar >> 8 & 0xFF, mbchar & 0xFF
                        if c0:
                            o2.append(c0)
                            text.append(c0)
                        if c0 or c1:
                            o2.append(c1)
                            text.append(c1)
                        o2.append(c2)
                        # libclamav writes the middle byte again here, not the last one.
                        text.append(c1)
                    mbchar = 0
                    state, next_state = next_state, NORM
                else:
                    mbchar = (mbchar << 8 | c) & 0xFFFFFFFF
                    i += 1
            elif state == TAG:
                if not tag and c == 0x21:  # <! starts a comment
                    if in_script:
                        o2.append(0x21)
                    else:
                        rewind_o2()
                    state, next_state = COMMENT, BAD
                    i += 1
                elif c == 0x3E:
                    o2.append(0x3E)
                    i += 1
                    state, next_state = SKIP_WS, PROCESS_TAG
                elif c not in _SPACE:
                    low = _lower(c)
                    o2.append(low)
                    if in_script and not tag and c != 0x2F:
                        state = NORM
                    keep(tag, low)
                    i += 1
                else:
                    state = SKIP_WS
                    tag_arg.clear()
                    next_state = PROCESS_TAG if in_script else TAG_ARG
            elif state == TAG_ARG:
                if c == 0x3D:  # =
                    o2.append(0x3D)
                    i += 1
                    state, next_state = SKIP_WS, TAG_ARG_VAL
                    escape, quoted = False, _NOT_QUOTED
                    tag_val.clear()
                elif c in _SPACE:
                    i += 1
                    state, next_state = SKIP_WS, TAG_ARG_EQUAL
                elif c == 0x3E:
                    o2.append(0x3E)
                    if tag_arg:
                        add_arg(None)
                    i += 1
                    state, next_state = PROCESS_TAG, BAD
                else:
                    if not tag_arg:
                        o2.append(0x20)
                    low = _lower(c)
                    o2.append(low)
                    keep(tag_arg, low)
                    i += 1
            elif state == TAG_ARG_EQUAL:
                if c == 0x3D:
                    o2.append(0x3D)
                    i += 1
                    state, next_state = SKIP_WS, TAG_ARG_VAL
                    escape, quoted = False, _NOT_QUOTED
                    tag_val.clear()
                else:
                    if tag_arg:
                        add_arg(None)
                    tag_arg.clear()
                    state, next_state = TAG_ARG, BAD
            elif state == TAG_ARG_VAL:
                if tag_val == b"data:" or tag_val == b'"data:':
                    # RFC 2397 inline data: the value becomes a file of its own.
                    rewind_o2()
                    if quoted != _NOT_QUOTED:
                        o2.append(0x22)
                    tag_val.clear()
                    state, next_state = RFC2397_TYPE, TAG_ARG
                    escape = c == 0x5C
                    continue
                if c == 0x26:
                    state, next_state = CHAR_REF, TAG_ARG_VAL
                    i += 1
                elif c in (0x27, 0x22):
                    mine = _SINGLE if c == 0x27 else _DOUBLE
                    o2.append(0x22)
                    keep(tag_val, 0x22)
                    i += 1
                    if not tag_val[:-1] and len(tag_val) == 1:
                        quoted = mine
                    elif not escape and quoted == mine:
                        add_arg(bytes(tag_val))
                        state, next_state = SKIP_WS, TAG_ARG
                        tag_arg.clear()
                elif c in _SPACE or c == 0x3E:
                    if quoted == _NOT_QUOTED:
                        add_arg(bytes(tag_val))
                        state, next_state = SKIP_WS, TAG_ARG
                        tag_arg.clear()
                    else:
                        o2.append(c)
                        keep(tag_val, 0x20 if c in _SPACE else 0x3E)
                        state, next_state = SKIP_WS, TAG_ARG_VAL
                        escape, quoted = False, _NOT_QUOTED
                        i += 1
                else:
                    if mbchar2 and (c < 0x80 or mbchar2 >= 0x10000):
                        if mbchar2 in _DOTS or (mbchar2 == 0xA1 and c in (0x43, 0x44, 0x4F)):
                            o2.append(0x2E)
                            keep(tag_val, 0x2E)
                            if mbchar2 == 0xA1:
                                i += 1
                                mbchar2 = 0
                                continue
                        else:
                            c0, c1, c2 = mbchar2 >> 16 & 0xFF, mbchar2 >> 8 & 0xFF, mbchar2 & 0xFF
                            if c0:
                                o2.append(c0)
                            if c0 or c1:
                                o2.append(c1)
                            o2.append(c2)
                            if c0:
                                keep(tag_val, c0)
                            if c0 or c1:
                                keep(tag_val, c1)
                            keep(tag_val, c2)
                        mbchar2 = 0
                    if c >= 0x80:
                        mbchar2 = (mbchar2 << 8 | c) & 0xFFFFFFFF
                    else:
                        o2.append(_lower(c))
                        keep(tag_val, c)
                    i += 1
                escape = i < n and buf[i] == 0x5C
            elif state == COMMENT:
                if in_script and c not in _SPACE:
                    low = _lower(c)
                    o2.append(0x22 if low == 0x27 else low)
                if c == 0x3E:
                    state, next_state = SKIP_WS, NORM
                i += 1
            elif state == PROCESS_TAG:
                state, next_state = SKIP_WS, NORM
                name = bytes(tag)
                if name.startswith(b"/"):
                    if name == b"/script":
                        in_script = False
                elif name == b"script":
                    in_script = True
                elif name == b"a":
                    href = arg_value(b"href")
                    if href:
                        text += href + b" "
                        text_space_written = True
                elif name == b"img":
                    src = arg_value(b"src")
                    if src:
                        text += src + b" "
                        text_space_written = True
                tag_args.clear()
            elif state == CHAR_REF:
                if c == 0x23:  # #
                    value, hexadecimal = 0, False
                    state = CHAR_REF_DECODE
                    i += 1
                else:
                    state = ENTITY_DECODE
            elif state == ENTITY_DECODE:
                if c == 0x3B:  # ;
                    replacement = _entity_bytes(bytes(entity))
                    if replacement is None:
                        replacement = b"&" + bytes(entity).lower() + b";"
                    o2 += replacement
                    if next_state == TAG_ARG_VAL:
                        for byte in replacement:
                            keep(tag_val, byte)
                    entity.clear()
                    state, next_state = next_state, BAD
                    i += 1
                elif (c in _ALNUM or c in b"_:-") and len(entity) < _STR_MAX:
                    entity.append(c)
                    i += 1
                else:
                    dumped = b"&" + bytes(entity).lower()
                    o2 += dumped
                    if next_state == TAG_ARG_VAL:
                        for byte in dumped:
                            keep(tag_val, byte)
                    state, next_state = next_state, BAD
                    entity.clear()
            elif state == CHAR_REF_DECODE:
                if value == 0 and c in (0x78, 0x58):
                    hexadecimal = True
                    i += 1
                elif c == 0x3B:
                    if next_state == TAG_ARG_VAL:
                        keep(tag_val, value & 0xFF)
                    if value < 0x80:
                        o2.append(_lower(value))
                    else:
                        o2 += _codepoint_bytes(value)
                    state, next_state = next_state, BAD
                    i += 1
                elif c in _DIGITS or (hexadecimal and c in _HEX):
                    # libclamav's overflow guards (64-bit arithmetic): past
                    # them it writes the low byte and drops the digit.
                    if hexadecimal and (value >> 32) * 16 < _INT32_MAX:
                        value *= 16
                    elif (value >> 32) * 10 < _INT32_MAX:
                        value *= 10
                    else:
                        o2.append(value & 0xFF)
                        state, next_state = next_state, BAD
                        i += 1
                        continue
                    increment = int(chr(c), 16)
                    if value > _INT64_MAX - increment:
                        o2.append(value & 0xFF)
                        state, next_state = next_state, BAD
                    else:
                        value += increment
                    i += 1
                else:
                    o2.append(value & 0xFF)
                    state, next_state = next_state, BAD
            elif state == RFC2397_TYPE:
                if c in (0x27, 0x22):
                    mine = _SINGLE if c == 0x27 else _DOUBLE
                    i += 1
                    if not escape and quoted == mine:
                        state, next_state = SKIP_WS, TAG_ARG
                        tag_arg.clear()
                    else:
                        keep(tag_val, 0x22)
                elif c in _SPACE or c == 0x3E:
                    if quoted == _NOT_QUOTED:
                        state, next_state = SKIP_WS, TAG_ARG
                        tag_arg.clear()
                    else:
                        keep(tag_val, 0x20 if c in _SPACE else 0x3E)
                        state, next_state = SKIP_WS, RFC2397_TYPE
                        escape, quoted = False, _NOT_QUOTED
                        i += 1
                elif c == 0x2C:  # , starts the data
                    state, next_state = RFC2397_INIT, BAD
                    escape = False
                    i += 1
                else:
                    keep(tag_val, _lower(c))
                    i += 1
                escape = i < n and buf[i] == 0x5C
            elif state == RFC2397_INIT:
                data_uri = bytearray()
                out.data_uris.append((bytes(tag_val), data_uri))
                state = RFC2397_DATA
                binary = True
            elif state == RFC2397_DATA:
                if c == 0x26:
                    state, next_state = CHAR_REF, RFC2397_DATA
                    i += 1
                elif c == 0x25:  # %
                    esc_length, value = 0, 0
                    state, next_state = ESCAPE_CHAR, RFC2397_ESC
                    i += 1
                elif c in (0x27, 0x22):
                    mine = _SINGLE if c == 0x27 else _DOUBLE
                    if not escape and quoted == mine:
                        state = RFC2397_FINISH
                    elif data_uri is not None:
                        data_uri.append(c)
                    i += 1
                elif c in _SPACE or c == 0x3E:
                    if quoted == _NOT_QUOTED:
                        state = RFC2397_FINISH
                    elif data_uri is not None:
                        data_uri.append(c)
                    i += 1
                else:
                    if data_uri is not None:
                        data_uri.append(c)
                    i += 1
                escape = i < n and buf[i] == 0x5C
            elif state == RFC2397_FINISH:
                data_uri = None
                state, next_state = SKIP_WS, TAG_ARG
                escape, quoted = False, _NOT_QUOTED
                binary = False
            elif state == RFC2397_ESC:
                if data_uri is not None:
                    if esc_length == 2:
                        data_uri.append(value & 0xFF)
                    elif esc_length == 1:
                        data_uri += b"%" + bytes([(value + 0x30) & 0xFF])
                    else:
                        data_uri.append(0x25)
                state = RFC2397_DATA
            elif state == ESCAPE_CHAR:
                value *= 16
                esc_length += 1
                if c in _HEX:
                    value += int(chr(c), 16)
                else:
                    state = next_state
                if esc_length == 2:
                    state = next_state
                i += 1
            else:  # an engine error in libclamav: it stops normalizing
                return out
        if next_state == state:
            next_state = BAD
    # An entity left open at the end of the file.
    if entity:
        replacement = _entity_bytes(bytes(entity))
        o2 += replacement if replacement is not None else b"&" + bytes(entity).lower()
    return out
