"""RTF: the objects embedded with \\object ... {\\*\\objdata <hex>}.

Follows libclamav's rtf.c: a small parser of groups and control words finds
`\\objdata ` (the control word with the space after it, as libclamav spells
it) inside a group that saw `\\object`, decodes the hex digits that follow,
and reads the OLE1 object header (8 bytes of version and format, the class
name, 8 bytes of topic and item names, the data size). Data that is an OLE2
file becomes a child as it is; anything else is treated as an OLE1 "Package"
(Ole10Native) and the file packed inside it becomes the child.
"""

from __future__ import annotations

from collections.abc import Iterator

from clammail.unpack.base import Extracted, UnpackContext
from clammail.unpack.ole10 import ole10_payload

_OLE2_MAGIC = b"\xd0\xcf"
_HEX_VALUE = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_ALPHA = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset(b"0123456789")
_SPACE = frozenset(b" \t\n\v\f\r")
_MAX_CONTROL_WORD = 32
_INT64_MAX = 2**63 - 1

# Parser states.
_MAIN, _CONTROL, _WORD, _SYMBOL, _PARAM, _INTERPRET = range(6)


class _ObjectData:
    """The hex-decoded bytes of one \\objdata group."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.partial: int | None = None

    def feed(self, text: bytes, limit: int) -> None:
        for byte in text:
            nibble = _HEX_VALUE.get(byte)
            if nibble is None:
                continue
            if self.partial is None:
                self.partial = nibble << 4
            else:
                if len(self.data) < limit:
                    self.data.append(self.partial | nibble)
                self.partial = None


class _State:
    __slots__ = ("saw_object", "objdata")

    def __init__(self, saw_object: bool = False) -> None:
        self.saw_object = saw_object
        self.objdata: _ObjectData | None = None  # set once \objdata is seen in a \object group
        # (a state with neither is libclamav's "default" state)

    @property
    def is_default(self) -> bool:
        return not self.saw_object and self.objdata is None


def unpack_rtf(data: bytes | memoryview, ctx: UnpackContext) -> Iterator[Extracted]:
    data = bytes(data)
    limit = ctx.max_object_size()
    state = _State()
    # Saved states; libclamav does not save default states, it counts them.
    stack: list[_State | None] = []
    found: list[bytes] = []
    pos, end = 0, len(data)
    parse = _MAIN
    word = bytearray()
    param = 0
    steps = 0

    def finish(st: _State) -> None:
        if st.objdata is not None and st.objdata.data:
            found.append(bytes(st.objdata.data))
        st.objdata = None

    while pos < end:
        steps += 1
        if not steps & 0xFFFF:
            ctx.check()
            yield from _objects(found, ctx)
            found.clear()
        if parse == _MAIN:
            byte = data[pos]
            pos += 1
            if byte == 0x7B:  # {
                if state.is_default:
                    stack.append(None)
                else:
                    stack.append(state)
                    state = _State(state.saw_object)
            elif byte == 0x7D:  # }
                finish(state)
                saw = state.saw_object
                previous = stack.pop() if stack else None
                # A default state comes back as default, but keeps what its
                # child group saw (libclamav's behaviour).
                state = previous if previous is not None else _State(saw)
            elif byte == 0x5C:  # backslash
                parse = _CONTROL
            else:
                run_end = pos
                while run_end < end and data[run_end] not in b"{}\\":
                    run_end += 1
                if state.objdata is not None:
                    state.objdata.feed(data[pos - 1: run_end], limit)
                pos = run_end
        elif parse == _CONTROL:
            if data[pos] in _ALPHA:
                parse = _WORD
                word.clear()
            else:
                parse = _SYMBOL
        elif parse == _SYMBOL:
            pos += 1
            parse = _MAIN
        elif parse == _WORD:
            byte = data[pos]
            if len(word) == _MAX_CONTROL_WORD:
                parse = _MAIN
            elif byte in _ALPHA:
                word.append(byte)
                pos += 1
            elif byte in _SPACE:
                # The delimiting space is part of the word ("objdata ").
                word.append(byte)
                pos += 1
                parse = _INTERPRET
            elif byte in _DIGITS:
                parse, param = _PARAM, 0
            elif byte == 0x2D:
                pos += 1
                parse, param = _PARAM, 0
            else:
                parse = _INTERPRET
        elif parse == _PARAM:
            byte = data[pos]
            if byte in _DIGITS:
                if param > (_INT64_MAX - (byte - 48)) // 10:
                    parse = _MAIN
                else:
                    param = param * 10 + byte - 48
                    pos += 1
            elif byte in _ALPHA:
                pos += 1
            else:
                parse = _INTERPRET
        else:  # _INTERPRET
            name = bytes(word)
            if name in (b"object", b"objdata "):
                finish(state)
                if name == b"object":
                    state.saw_object = True
                elif state.saw_object:
                    state.objdata = _ObjectData()
            parse = _MAIN
    finish(state)
    while stack:
        saved = stack.pop()
        if saved is not None:
            finish(saved)
    yield from _objects(found, ctx)


def _objects(found: list[bytes], ctx: UnpackContext) -> Iterator[Extracted]:
    for blob in found:
        ctx.check()
        child = _embedded_object(blob)
        if child is not None:
            yield child


def _embedded_object(blob: bytes) -> Extracted | None:
    """The file inside one decoded \\objdata blob (libclamav's OLE1 header walk)."""
    pos = 8  # version and format: libclamav only notes a mismatch
    if len(blob) < pos + 4:
        return None
    desc_len = int.from_bytes(blob[pos: pos + 4], "little")
    pos += 4 + desc_len  # the class name ("Package", "Word.Document.8" ...)
    pos += 8  # topic and item names
    if len(blob) < pos + 4:
        return None
    size = int.from_bytes(blob[pos: pos + 4], "little")
    pos += 4
    payload = blob[pos: pos + size]
    if not payload:
        return None
    if payload.startswith(_OLE2_MAGIC):
        return Extracted(payload, name="rtf-object")
    # Not OLE2: an OLE1 native stream, prefixed with its size like an Ole10Native stream.
    inner = ole10_payload(size.to_bytes(4, "little") + payload)
    if inner is None:
        return None
    return Extracted(inner, name="rtf-ole10native")
