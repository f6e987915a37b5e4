"""Verify one part of a pattern at one anchor position, the way ClamAV does.

The multi-literal automaton only says "this part's static bytes occur here";
`verify_part` decides whether the whole part matches there and where it starts
and ends. It walks the part like libclamav's matcher: forwards from the
anchor, then backwards over the prefix; alternatives that ClamAV marks unique
commit on their first match, the others backtrack; the (B)/(L)/(W) markers
and the `aa[n-m]` anchored bytes are checked at the ends. Positions are
relative to the whole buffer (ClamAV's file offsets).
"""

from __future__ import annotations

from clammail.signatures.hexsig import (
    ALT_CHAR,
    ALT_FIXED,
    ALT_GENERIC,
    B_LEFT,
    B_LEFT_NEG,
    B_RIGHT,
    B_RIGHT_NEG,
    BOUNDARY,
    CHAR,
    IGNORE,
    KIND_MASK,
    L_LEFT,
    L_LEFT_NEG,
    L_RIGHT,
    L_RIGHT_NEG,
    LINE,
    NIBBLE_HIGH,
    NIBBLE_LOW,
    NOCASE,
    SPECIAL,
    W_LEFT,
    W_LEFT_NEG,
    W_RIGHT,
    W_RIGHT_NEG,
    WORD,
    Part,
)

# ClamAV's boundary table: 1 = ends a word on its left only, 2 = on its right
# only, 3 = both sides (space, '-', '/', '_').
_BOUNDARY = bytearray(256)
for _byte, _kind in ((0x0A, 2), (0x0D, 2), (0x20, 3), (0x22, 2), (0x27, 2), (0x2D, 3),
                     (0x2E, 1), (0x2F, 3), (0x3C, 1), (0x3D, 2), (0x3E, 2), (0x40, 1),
                     (0x5F, 3)):
    _BOUNDARY[_byte] = _kind
_LOWER = bytes(range(256)).lower()
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

Match = tuple[int, int]  # (start, end) in the buffer


def element_matches(element: int, byte: int) -> bool:
    kind = element & KIND_MASK
    if kind == CHAR:
        return element == byte
    if kind == NOCASE:
        return element & 0xFF == _LOWER[byte]
    if kind == IGNORE:
        return True
    if kind == NIBBLE_HIGH:
        return element & 0xF0 == byte & 0xF0
    if kind == NIBBLE_LOW:
        return element & 0x0F == byte & 0x0F
    return False


def verify_part(part: Part, buf, anchor: int) -> Match | None:
    """The match of `part` whose static anchor starts at `anchor`, or None."""
    size = len(buf)
    if anchor + part.body_min > size or part.prefix_min > anchor:
        return None
    body = part.body
    for k in range(part.depth):
        if not element_matches(body[k], buf[anchor + k]):
            return None
    return _Walk(part, buf, size, anchor).forward(anchor + part.depth, part.depth,
                                                  part.prefix_specials)


class _Walk:
    """One verification: ClamAV's forward and backward branches over one buffer."""

    __slots__ = ("part", "buf", "size", "anchor")

    def __init__(self, part: Part, buf, size: int, anchor: int):
        self.part = part
        self.buf = buf
        self.size = size
        self.anchor = anchor

    def forward(self, bp: int, index: int, special: int) -> Match | None:
        part, buf, size = self.part, self.buf, self.size
        body = part.body
        count = len(body)
        while index < count and bp < size:
            element = body[index]
            if element & KIND_MASK == SPECIAL:
                taken = self.special(bp, index, special, False)
                if type(taken) is tuple:
                    return taken
                if taken <= 0:
                    return None
                bp += taken - 1
                special += 1
            elif not element_matches(element, buf[bp]):
                return None
            bp += 1
            index += 1
        end = bp
        if part.boundary and not self._right_ok(end):
            return None
        right = part.right
        if right is not None and not right[0] & IGNORE:
            element, lo, hi = right
            bp = end + lo
            for _ in range(lo, hi + 1):
                if bp >= size:
                    return None
                if element_matches(element, buf[bp]):
                    break
                bp += 1
            else:
                return None
        return self.backward(self.anchor - 1, len(part.prefix) - 1, part.prefix_specials - 1, end)

    def backward(self, bp: int, index: int, special: int, end: int) -> Match | None:
        part, buf = self.part, self.buf
        prefix = part.prefix
        if prefix:
            if bp < 0:
                return None  # prefix elements left but no bytes before the anchor
            while index >= 0:
                element = prefix[index]
                if element & KIND_MASK == SPECIAL:
                    taken = self.special(bp, index, special, True, end)
                    if type(taken) is tuple:
                        return taken
                    if taken <= 0:
                        return None
                    bp = bp + 1 - taken
                    special -= 1
                elif not element_matches(element, buf[bp]):
                    return None
                if index == 0 or bp == 0:
                    break
                bp -= 1
                index -= 1
            start = bp
        else:
            start = bp = self.anchor
        if part.boundary and not self._left_ok(start):
            return None
        return self._left_anchor(start, end)

    def special(self, bp: int, index: int, number: int, reverse: bool, end: int = 0):
        """Bytes the special at `index` consumes here (0 = no match), or a resolved match."""
        buf, size = self.buf, self.size
        spec = self.part.specials[number]
        byte = buf[bp]
        matched = int(spec.negative)
        kind = spec.kind
        if kind == ALT_CHAR:
            if byte in spec.chars:
                matched = int(not spec.negative)
        elif kind == ALT_FIXED:
            length = spec.minlen
            if not reverse:
                if bp + length > size:
                    return matched
                sub = bp
            else:
                if bp < length - 1:
                    return matched
                sub = bp - (length - 1)
            matched *= length
            if bytes(buf[sub:sub + length]) in spec.strings:
                matched = int(not spec.negative) * length
        elif kind == ALT_GENERIC:
            for elements, unique in spec.alts:
                length = len(elements)
                if not reverse:
                    if bp + length > size:
                        continue
                    sub = bp
                else:
                    if length == 0 or bp < length - 1:
                        continue
                    sub = bp - (length - 1)
                matched = 1
                for k, element in enumerate(elements):
                    if not element_matches(element, buf[sub + k]):
                        matched = 0
                        break
                if matched:
                    if unique:
                        return length
                    if not reverse:
                        result = self.forward(sub + length, index + 1, number + 1)
                    else:
                        result = self._backward_from(sub - 1, index - 1, number - 1, end)
                    if result is not None:
                        return result
                    matched = 0
        elif kind == LINE:
            if byte == 0x0A:
                matched = int(not spec.negative)
            elif byte == 0x0D and bp + 1 < size and buf[bp + 1] == 0x0A:
                matched = int(not spec.negative) * 2
        elif kind == BOUNDARY:
            if _BOUNDARY[byte]:
                matched = int(not spec.negative)
        elif kind == WORD:
            if byte not in _ALNUM:
                matched = int(not spec.negative)
        return matched

    def _backward_from(self, bp: int, index: int, special: int, end: int) -> Match | None:
        if index < 0:
            # The alternative was the first thing in the prefix: the part starts there.
            start = bp + 1
            if self.part.boundary and not self._left_ok(start):
                return None
            return self._left_anchor(start, end)
        return self.backward(bp, index, special, end)

    def _left_anchor(self, start: int, end: int) -> Match | None:
        left = self.part.left
        if left is not None and not left[0] & IGNORE:
            element, lo, hi = left
            if lo + 1 > start:
                return None
            bp = start - (lo + 1)
            for _ in range(lo, hi + 1):
                if element_matches(element, self.buf[bp]):
                    return start, end
                if not bp:
                    return None
                bp -= 1
            return None
        return start, end

    def _left_ok(self, start: int) -> bool:
        flags, buf = self.part.boundary, self.buf
        before = buf[start - 1] if start else -1
        if flags & B_LEFT:
            ok = bool(flags & B_LEFT_NEG)
            if not start or _BOUNDARY[before] in (1, 3):
                ok = not ok
            if not ok:
                return False
        if flags & L_LEFT:
            ok = bool(flags & L_LEFT_NEG)
            if not start or before == 0x0A:
                ok = not ok
            if not ok:
                return False
        if flags & W_LEFT:
            ok = bool(flags & W_LEFT_NEG)
            if not start:
                ok = not ok
            elif self.part.wide:
                if start == 1:
                    ok = not ok
                if start >= 2 and not (buf[start - 2] in _ALNUM and before == 0):
                    ok = not ok
            elif before not in _ALNUM:
                ok = not ok
            if not ok:
                return False
        return True

    def _right_ok(self, end: int) -> bool:
        flags, buf, size = self.part.boundary, self.buf, self.size
        after = buf[end] if end < size else -1
        if flags & B_RIGHT:
            ok = bool(flags & B_RIGHT_NEG)
            if end == size or _BOUNDARY[after] >= 2:
                ok = not ok
            if not ok:
                return False
        if flags & L_RIGHT:
            ok = bool(flags & L_RIGHT_NEG)
            if end == size or after == 0x0A or (
                    after == 0x0D and end + 1 < size and buf[end + 1] == 0x0A):
                ok = not ok
            if not ok:
                return False
        if flags & W_RIGHT:
            ok = bool(flags & W_RIGHT_NEG)
            if end == size:
                ok = not ok
            elif self.part.wide and end + 1 < size:
                if not (after in _ALNUM and buf[end + 1] == 0):
                    ok = not ok
            elif after not in _ALNUM:
                ok = not ok
            if not ok:
                return False
        return True
