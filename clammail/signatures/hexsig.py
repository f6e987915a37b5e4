"""Parse a ClamAV hex signature into the parts the matcher verifies.

This follows the rules of libclamav 1.4 (readdb.c and matcher-ac.c), because
the product is "same verdict as clamd": which signatures load, how `{n}` is
expanded, where a pattern is split into parts (`*`, `{n-m}`), which static
bytes ClamAV anchors each part on, and how the anchor's neighbours are matched
(forward after it, backward before it). Where ClamAV has odd corners (a `{0}`
gap that means "any distance", a `(B)` in the middle that counts as zero bytes
in the length checks) we keep them: the matcher must agree with clamd, not with
the documentation.

A parsed pattern is a `Plan`: one or two variants (an .ldb `::wa` pattern
has a wide and an ASCII variant), each a tuple of `Part`s that must match in
order with the gaps between them. `parse_hexsig` raises `SignatureError`
with a clamd-like reason for everything clamd refuses to load. Which static
bytes the matcher's automaton looks for is chosen in `anchors`; the matcher
(`clammail.engine.match`) only compiles and runs Plans.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from clammail.signatures.common import SignatureError, scan_decimal
from clammail.signatures.patterns import ANY_OFFSET, BodyPattern, Offset, OffsetKind

# Compiled records are plain slotted classes (not frozen: building 100 000
# patterns at load time must be cheap); nothing changes them after compilation.

# -- element encoding ---------------------------------------------------------
# An element is an int: the low byte is the value, the high byte says how it
# matches (ClamAV's CLI_MATCH_* values, so the rules below read like its own).
CHAR = 0x0000
IGNORE = 0x0100  # ??
SPECIAL = 0x0200  # an entry of Part.specials: alternatives, (B), (L), (W)
NIBBLE_HIGH = 0x0300  # a?
NIBBLE_LOW = 0x0400  # ?a
NOCASE = 0x1000  # a letter matched case-insensitively (::i)
WILDCARD_MASK = 0x0F00
KIND_MASK = 0xFF00

# Special kinds (ClamAV's AC_SPECIAL_*).
ALT_CHAR = 1  # (aa|bb): one byte from a set
ALT_FIXED = 2  # (aabb|ccdd): one string from a set of equal length
ALT_GENERIC = 3  # alternatives of different lengths, with wildcards, or under modifiers
LINE = 4  # (L) in the middle: \n or \r\n
BOUNDARY = 5  # (B) in the middle
WORD = 6  # (W) in the middle

# Boundary flags for (B)/(L)/(W) at the very start or end of a part.
B_LEFT, B_LEFT_NEG, B_RIGHT, B_RIGHT_NEG = 0x1, 0x2, 0x4, 0x8
L_LEFT, L_LEFT_NEG, L_RIGHT, L_RIGHT_NEG = 0x10, 0x20, 0x40, 0x80
W_LEFT, W_LEFT_NEG, W_RIGHT, W_RIGHT_NEG = 0x100, 0x200, 0x400, 0x800

AC_MINDEPTH = 2  # every part needs this many static bytes in a row
AC_MAXDEPTH = 3  # ClamAV's trie depth: the anchor is at most this long
AC_CH_MAXDIST = 32  # the [n-m] of an anchored byte
ALT_MAX_NEST = 15  # parentheses inside one alternative group
OFFSET_MAX_LEN = 64
BM_MIN_LENGTH = 3  # plain patterns of targets 0 and 1 go to ClamAV's Boyer-Moore matcher

# Target types whose objects have an executable layout (EP, sections, VI).
EXE_TARGETS = frozenset({1, 6, 9})
# Targets whose Aho-Corasick trie has clamd's prefilter (cli_mtargets' enable_prefiltering).
PREFILTER_TARGETS = frozenset({0, 1, 4, 7})
# Targets matched only by ClamAV's Aho-Corasick matcher; 0 and 1 also use Boyer-Moore.
_BM_TARGETS = frozenset({0, 1})

_HEX = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}


@dataclass(slots=True)
class Special:
    kind: int
    negative: bool = False
    minlen: int = 0  # bytes it consumes at least (0 for (B)/(L)/(W), as in ClamAV)
    maxlen: int = 0
    chars: frozenset[int] = frozenset()  # ALT_CHAR
    strings: frozenset[bytes] = frozenset()  # ALT_FIXED
    # ALT_GENERIC: (elements, unique) in ClamAV's order; a unique alternative
    # commits when it matches, the others are tried with backtracking.
    alts: tuple[tuple[tuple[int, ...], bool], ...] = ()


@dataclass(slots=True)
class Part:
    """One piece of a pattern between `*`/`{n-m}` gaps, anchored like ClamAV anchors it."""

    prefix: tuple[int, ...]  # elements before the anchor, matched backwards
    body: tuple[int, ...]  # elements from the anchor on, matched forwards
    depth: int  # body[:depth] are the static bytes of ClamAV's trie
    specials: tuple[Special, ...]  # in element order: prefix ones first
    prefix_specials: int  # how many of `specials` sit in the prefix
    boundary: int = 0  # B_/L_/W_ flags
    left: tuple[int, int, int] | None = None  # (element, min, max): aa[min-max]PART
    right: tuple[int, int, int] | None = None  # PART[min-max]aa
    prefix_min: int = 0  # ClamAV's prefix_length[1] / [2]
    prefix_max: int = 0
    body_min: int = 0  # ClamAV's length[1] / [2] after the prefix
    body_max: int = 0
    mindist: int = 0  # gap from the previous part's end; 0 = no limit (ClamAV)
    maxdist: int = 0
    wide: bool = False  # ::w changes the (W) word-boundary test

    @property
    def min_length(self) -> int:
        return self.prefix_min + self.body_min


@dataclass(slots=True)
class Variant:
    parts: tuple[Part, ...]
    boyer_moore: bool = False  # a plain pattern ClamAV hands to Boyer-Moore (reporting order)


@dataclass(slots=True)
class Plan:
    variants: tuple[Variant, ...]
    offset: Offset


# -- small helpers that mirror libc behaviour ClamAV relies on -----------------


def _is_number(text: str) -> bool:
    """ClamAV's cli_isnumber: only digits, and the empty string counts as a number."""
    return _DIGITS(text) is not None


_DIGITS = re.compile("[0-9]*").fullmatch


def _atoi(text: str) -> int:
    """C atoi on a string of digits: saturate to long, then truncate to int."""
    if not text:
        return 0
    value = min(int(text), (1 << 63) - 1)
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _u32(text: str) -> int:
    """atoi stored in a uint32 (ClamAV's offset fields)."""
    return _atoi(text) & 0xFFFFFFFF


def _strtok(line: str, fieldno: int, delim: str) -> str | None:
    """ClamAV's cli_strtok: runs of delimiters count as one; empty fields are None."""
    fields = [f for f in _split_runs(line, delim)]
    if fieldno >= len(fields) or not fields[fieldno]:
        return None
    return fields[fieldno]


def _split_runs(line: str, delim: str) -> list[str]:
    # The field numbering of cli_strtok: a leading delimiter makes field 0
    # empty; a run of delimiters separates exactly one field.
    return _delimiter_runs(delim).split(line)


@functools.lru_cache(maxsize=16)
def _delimiter_runs(delim: str) -> re.Pattern:
    return re.compile("[" + re.escape(delim) + "]+")


# -- offsets ----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def parse_offset(text: str) -> Offset:
    """An offset field (`*`, `n`, `n,m`, `EOF-n`, `EP+n`, `EP-n`, `Sx+n`, `SL+n`, `SEx`, `VI`).

    Cached: databases repeat the same few offsets, and equal ones share one object.
    """
    if text == "*":
        return ANY_OFFSET
    if len(text) > OFFSET_MAX_LEN:
        raise SignatureError("cli_caloff: Offset string too long")
    base, comma, shift_text = text.partition(",")
    shift = None
    if comma:
        if not _is_number(shift_text):
            raise SignatureError("cli_caloff: Invalid offset shift value")
        shift = _u32(shift_text)
    if base.startswith(("EP+", "EP-")):
        if not _is_number(base[3:]):
            raise SignatureError("cli_caloff: Invalid offset value")
        kind = OffsetKind.EP_PLUS if base[2] == "+" else OffsetKind.EP_MINUS
        return Offset(kind, _u32(base[3:]), 0, shift)
    if base.startswith("S"):
        if base.startswith("SE"):
            if not _is_number(base[2:]):
                raise SignatureError("cli_caloff: Invalid section number")
            return Offset(OffsetKind.SECTION_ENTIRE, 0, _u32(base[2:]), shift)
        if base.startswith("SL+"):
            if not _is_number(base[3:]):
                raise SignatureError("cli_caloff: Invalid offset value")
            return Offset(OffsetKind.LAST_SECTION, _u32(base[3:]), 0, shift)
        section = scan_decimal(base, 1)
        if section is not None and section[1] < len(base) and base[section[1]] == "+":
            value = scan_decimal(base, section[1] + 1)
            if value is not None:
                return Offset(OffsetKind.SECTION, value[0] & 0xFFFFFFFF,
                              section[0] & 0xFFFFFFFF, shift)
        raise SignatureError("cli_caloff: Invalid offset string")
    if base.startswith("EOF-"):
        if not _is_number(base[4:]):
            raise SignatureError("cli_caloff: Invalid offset value")
        return Offset(OffsetKind.EOF_MINUS, _u32(base[4:]), 0, shift)
    if base.startswith("VI"):
        return Offset(OffsetKind.VERSION_INFO, 0, 0, shift)
    if "$" in base:
        # `$n$`: a macro group of a logical signature; an .ndb pattern with it never matches.
        group = scan_decimal(base, 1) if base.startswith("$") else None
        if group is None:
            raise SignatureError(f"cli_caloff: Invalid macro($) in offset: {base}")
        if not 0 <= group[0] < 32:
            raise SignatureError("cli_caloff: at most 32 macro groups supported")
        return Offset(OffsetKind.MACRO, group[0], 0, shift)
    if not _is_number(base):
        raise SignatureError("cli_caloff: Invalid offset value")
    return Offset(OffsetKind.ABSOLUTE, _u32(base), 0, shift)


def check_offset_target(offset: Offset, target: int) -> None:
    if offset.kind not in (OffsetKind.ANY, OffsetKind.ABSOLUTE, OffsetKind.EOF_MINUS,
                           OffsetKind.MACRO):
        if target not in EXE_TARGETS:
            raise SignatureError(f"cli_caloff: Invalid offset type for target {target}")


# -- the .ldb modifiers, applied to the text as ClamAV does ---------------------


def _fullword_text(hexsig: str) -> str:
    text = "(W)" + hexsig + "(W)"
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "[":
            close = text.find("]", i)
            if close < 0:
                raise SignatureError("cli_sigopts_handler: unmatched '[' in signature")
            out.append("{" + text[i + 1:close] + "}")
            i = close + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _wide_text(hexsig: str) -> str:
    """Every byte followed by 00; ranges kept as they are (ClamAV does not double them)."""
    out: list[str] = []
    i, n = 0, len(hexsig)
    while i < n:
        c = hexsig[i]
        if c in "*|)":
            out.append(c)
        elif c == "[":
            close = hexsig.find("]", i)
            close = n if close < 0 else close
            out.append("{" + hexsig[i + 1:close] + "}")
            i = close
        elif c == "{":
            close = hexsig.find("}", i)
            close = n if close < 0 else close
            out.append(hexsig[i:close] + "}")
            i = close
        elif c in "!(":
            if c == "!":
                out.append("!")
                i += 1
                c = hexsig[i] if i < n else ""
            out.append(c)
            if i + 2 >= n:
                raise SignatureError("cli_sigopts_handler: malformed wide signature")
            if hexsig[i + 1] in "BLW":
                if hexsig[i + 2] != ")":
                    raise SignatureError("cli_sigopts_handler: malformed wide signature")
                out.append(hexsig[i + 1] + ")")
                i += 2
        else:
            out.append(c + (hexsig[i + 1] if i + 1 < n else "") + "00")
            i += 1
        i += 1
    return "".join(out)


# -- pattern parsing -----------------------------------------------------------


def parse_pattern(pattern: BodyPattern) -> Plan:
    """Parse a `BodyPattern` (already validated or not); raises SignatureError."""
    return parse_hexsig(pattern.hexsig, pattern.offset, pattern.target,
                        nocase=pattern.nocase, wide=pattern.wide, ascii=pattern.ascii,
                        fullword=pattern.fullword, ldb=pattern.logical)


def parse_hexsig(hexsig: str, offset: Offset, target: int, *, nocase: bool = False,
                   wide: bool = False, ascii: bool = True, fullword: bool = False,
                   ldb: bool = False) -> Plan:
    """`ldb` marks a logical subsignature: always Aho-Corasick, never Boyer-Moore."""
    check_offset_target(offset, target)
    modified = nocase or wide or fullword
    text = _fullword_text(hexsig) if fullword else hexsig
    variants = []
    if wide:
        variants.append(_parse_variant(_wide_text(text), offset, target, nocase, True,
                                         modified, ldb))
    if not wide or ascii:
        variants.append(_parse_variant(text, offset, target, nocase, False, modified, ldb))
    return Plan(tuple(variants), offset)


def _parse_variant(text: str, offset: Offset, target: int, nocase: bool, wide: bool,
                     modified: bool, ldb: bool) -> Variant:
    text, boyer_moore, pieces = variant_pieces(text, offset, target, modified, ldb)
    if boyer_moore:
        return Variant((plain_part(text),), boyer_moore=True)
    prefiltered = target in PREFILTER_TARGETS
    return Variant(tuple(parse_part(piece, nocase, wide, modified, mindist, maxdist, prefiltered)
                         for piece, mindist, maxdist in pieces))


def variant_pieces(text: str, offset: Offset, target: int, modified: bool, ldb: bool):
    """(text after `{n}` expansion, Boyer-Moore?, the parts' texts with their gaps).

    The parts come from a generator, so a caller that compiles each part as
    it comes meets the errors in ClamAV's order (part 1 before gap 2).
    """
    text = _expand_small_gaps(text)
    if "{" in text:
        return text, False, _ranged_pieces(text)
    if "*" in text:
        return text, False, _star_pieces(text)
    boyer_moore = (
        target in _BM_TARGETS and not ldb and not modified
        and not any(c in text for c in "?([")
        and not (target == 1 and (offset.kind is OffsetKind.ANY or offset.max_shift is not None))
        and offset.kind is not OffsetKind.VERSION_INFO
    )
    return text, boyer_moore, iter(((text, 0, 0),))


def _expand_small_gaps(text: str) -> str:
    """ClamAV rewrites the first `{n}` (0 < n < 128) as n `??`, again and again."""
    while True:
        brace = text.find("{")
        if brace < 0:
            return text
        plain = _PLAIN_GAP(text, brace)
        if plain is not None:  # digits right after the brace (no blanks or sign)
            count = int(plain.group(1))
            if not (plain.group(2) and 0 < count < 128):
                return text
            text = text[:brace] + "??" * count + text[plain.end():]
            continue
        scanned = scan_decimal(text, brace + 1)
        if scanned is None:
            return text
        count, end = scanned
        if not (end < len(text) and text[end] == "}" and 0 < count < 128):
            return text
        text = text[:brace] + "??" * count + text[end + 1:]


_PLAIN_GAP = re.compile(r"\{([0-9]+)(\}?)").match
# The characters whose nesting the part splitters check (the others are skipped).
_NESTING = re.compile(r"[(){*]")


def _check_alternatives(text: str, ranges: bool) -> None:
    """ClamAV's refusals of `*` (and, where parts are cut at ranges, `{`) inside
    an alternative group."""
    nest = 0
    for c in _NESTING.findall(text) if "(" in text else ():
        if c == "(":
            nest += 1
        elif c == ")":
            nest -= 1
        elif c == "{" and nest and ranges:
            raise SignatureError("Alternative match contains unsupported ranged wildcard")
        elif c == "*" and nest:
            raise SignatureError("Alternative match cannot contain unbounded wildcards")


def _ranged_pieces(text: str):
    """Parts separated by `*` and `{n-m}`: (text, mindist, maxdist) each."""
    _check_alternatives(text, ranges=True)
    count = text.count("{") + text.count("*") + 1
    mindist = maxdist = 0
    rest = text
    for number in range(1, count + 1):
        if number == count:
            yield rest, mindist, maxdist
            return
        cut = min((i for i in (rest.find("{"), rest.find("*")) if i >= 0), default=-1)
        if cut < 0:
            # ClamAV would cut at its stale pointer; such text is malformed anyway.
            raise SignatureError("Problem adding signature: missing separator")
        piece, sep, after = rest[:cut], rest[cut], rest[cut + 1:]
        yield piece, mindist, maxdist
        mindist = maxdist = 0
        if sep == "*":
            rest = after
            continue
        close = after.find("}")
        if close < 0:
            raise SignatureError("Problem adding signature: missing bracket")
        mindist, maxdist = _parse_gap(after[:close])
        rest = after[close + 1:]


@functools.lru_cache(maxsize=4096)
def _parse_gap(inner: str) -> tuple[int, int]:
    """The n or n-m of a `{...}` gap, with cli_strtok's idea of fields."""
    if "-" not in inner:
        if not _is_number(inner) or _atoi(inner) < 0:
            raise SignatureError(f"Problem adding signature: bad range {{{inner}}}")
        return _atoi(inner), _atoi(inner)
    fields = [f or None for f in _split_runs(inner, "-")] + [None, None, None]
    for field in fields[:2]:
        if field is not None and (not _is_number(field) or _atoi(field) < 0):
            raise SignatureError(f"Problem adding signature: bad range {{{inner}}}")
    if fields[2] is not None:
        raise SignatureError(f"Problem adding signature: bad range {{{inner}}}")
    return _atoi(fields[0] or ""), _atoi(fields[1] or "")


def _star_pieces(text: str):
    """Parts separated by `*` only: (text, 0, 0) each."""
    _check_alternatives(text, ranges=False)
    count = text.count("*") + 1
    fields = _split_runs(text, "*")
    for number in range(count):
        piece = fields[number] if number < len(fields) and fields[number] else None
        if piece is None:
            raise SignatureError(f"Can't extract part {number + 1} of partial signature")
        yield piece, 0, 0


def plain_part(text: str) -> Part:
    """A Boyer-Moore pattern: plain hex bytes, at least three."""
    data = _hex_bytes(text)
    if len(data) < BM_MIN_LENGTH:
        raise SignatureError("cli_bm_addpatt: Signature is too short")
    body = tuple(data)
    return Part(prefix=(), body=body, depth=min(AC_MAXDEPTH, len(body)), specials=(),
                prefix_specials=0, body_min=len(body), body_max=len(body))


def _hex_bytes(text: str) -> bytes:
    if len(text) % 2:
        raise SignatureError(f"Malformed hexstring: {text} (length: {len(text)})")
    if not _PURE_HEX.fullmatch(text):  # (bytes.fromhex would allow blanks)
        raise SignatureError(f"Malformed hexstring: {text}")
    return bytes.fromhex(text)


def _elements(text: str) -> list[int]:
    """ClamAV's cli_hex2ui: hex pairs, ??, a?, ?a, and `(`+anything for a special."""
    if len(text) % 2:
        raise SignatureError(f"Malformed hexstring: {text} (length: {len(text)})")
    if _PURE_HEX.fullmatch(text):
        return list(bytes.fromhex(text))
    out = list(map(_TOKENS.get, _PAIRS.findall(text)))
    if None in out:
        for i, element in enumerate(out):
            if element is None:
                if text[2 * i] != "(":
                    raise SignatureError(f"Malformed hexstring: {text}")
                out[i] = SPECIAL
    return out


_PURE_HEX = re.compile(r"[0-9a-fA-F]*")
_PAIRS = re.compile(r"..", re.DOTALL)
_TOKENS: dict[str, int] = {"??": IGNORE}
for _a, _va in _HEX.items():
    _TOKENS[_a + "?"] = NIBBLE_HIGH | _va << 4
    _TOKENS["?" + _a] = NIBBLE_LOW | _va
    for _b, _vb in _HEX.items():
        _TOKENS[_a + _b] = _va << 4 | _vb


def _lower(value: int) -> int:
    return value + 32 if 0x41 <= value <= 0x5A else value


def _nocase_elements(elements: list[int]) -> list[int]:
    return [NOCASE | _lower(e) if e & KIND_MASK == CHAR else e for e in elements]


def parse_part(text: str, nocase: bool, wide: bool, modified: bool,
               mindist: int, maxdist: int, prefiltered: bool) -> Part:
    """One part, as cli_ac_addsig builds it."""
    if len(text) // 2 < AC_MINDEPTH:
        raise SignatureError("cli_ac_addsig: Signature is too short")
    left = right = None
    if "[" in text:
        text, left, right = _anchored_bytes(text, nocase)
    boundary = 0
    specials: list[Special] = []
    if "(" in text:
        text, boundary, specials = _specials(text, nocase or modified, nocase)
    elements = _elements(text)
    if nocase:
        elements = _nocase_elements(elements)
    ppos = _anchor_position(elements)
    prefix, body = tuple(elements[:ppos]), tuple(elements[ppos:])
    depth = 0
    for element in body[:AC_MAXDEPTH]:
        if element & WILDCARD_MASK:
            break
        depth += 1
    if depth < AC_MINDEPTH:
        raise SignatureError("cli_ac_addpatt: Signature is too short")
    if specials and prefiltered:
        _check_prefilter(elements, specials)
    prefix_specials = sum(1 for e in prefix if e & WILDCARD_MASK == SPECIAL) if specials else 0
    prefix_min, prefix_max = _lengths(prefix, specials[:prefix_specials])
    body_min, body_max = _lengths(body, specials[prefix_specials:])
    return Part(prefix, body, depth, tuple(specials), prefix_specials, boundary, left, right,
                prefix_min, prefix_max, body_min, body_max, mindist, maxdist, wide)


def _check_prefilter(elements: list[int], specials: list[Special]) -> None:
    """clamd's prefilter (filtering.c, on by default) must get two bytes' worth of
    classes from the start of a part before a special other than a one-byte
    alternative stops it; else cli_ac_addsig fails and with it the database.

    Measured with clamscan: `68(L)6c6c`, `aa(bbcc|ddee)ff00`, `??(aabb|ccdd)eeff`
    fail; a special at the very start (`(aabb|ccdd)eeff`) or at the third
    element (`6865(L)6c6c`) does not.
    """
    if len(elements) < 2 or elements[1] & KIND_MASK != SPECIAL:
        return
    first_special = elements[0] & KIND_MASK == SPECIAL
    if first_special and specials[0].kind != ALT_CHAR:
        return
    if specials[1 if first_special else 0].kind != ALT_CHAR:
        raise SignatureError("cli_ac_addsig: cannot use filter for trie")


def _lengths(elements: tuple[int, ...], specials: list[Special]) -> tuple[int, int]:
    if not specials:
        return len(elements), len(elements)
    lo = hi = 0
    index = 0
    for e in elements:
        if e & KIND_MASK == SPECIAL:
            lo += specials[index].minlen
            hi += specials[index].maxlen
            index += 1
        else:
            lo += 1
            hi += 1
    return lo, hi


def _anchored_bytes(text: str, nocase: bool):
    """`aa[n-m]PART` and `PART[n-m]aa`: one byte at a bounded distance from the part."""
    left = right = None
    rest = text
    i = 0
    while i < 2:
        open_ = rest.find("[")
        if open_ < 0:
            break
        before = rest[:open_]
        close = rest.find("]", open_)
        if close < 0:
            raise SignatureError("cli_ac_addsig: missing closing square bracket")
        inner, after = rest[open_ + 1:close], rest[close + 1:]
        lo = scan_decimal(inner, 0)
        if lo is None:
            raise SignatureError("cli_ac_addsig: incorrect range inside square brackets")
        n1, end = lo[0] & 0xFFFFFFFF, lo[1]
        n2 = n1
        if end < len(inner) and inner[end] == "-":
            hi = scan_decimal(inner, end + 1)
            if hi is not None:
                n2 = hi[0] & 0xFFFFFFFF
        if n1 > n2 or n2 > AC_CH_MAXDIST:
            raise SignatureError("cli_ac_addsig: incorrect range inside square brackets")
        if len(before) == 2:
            if i:
                raise SignatureError("cli_ac_addsig: incorrect use of square brackets")
            left = (_anchor_element(before, nocase), n1, n2)
            rest = after
        elif len(after) == 2:
            right = (_anchor_element(after, nocase), n1, n2)
            rest = before
            break
        else:
            raise SignatureError("cli_ac_addsig: incorrect use of square brackets")
        i += 1
    return rest, left, right


def _anchor_element(text: str, nocase: bool) -> int:
    (element,) = _elements(text)
    if nocase and element & KIND_MASK == CHAR:
        element = NOCASE | _lower(element)
    return element


def _paren_end(text: str, start: int) -> tuple[int, int]:
    """Index of the ')' closing the group that starts at `start`, and how many '(' it holds."""
    nest = level = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "(":
            nest += 1
            level += 1
        elif c == ")":
            if not level:
                return i, nest
            level -= 1
    return -1, nest


def _specials(text: str, generic_only: bool, nocase: bool):
    """Replace every (...) group by a placeholder element; (B)/(L)/(W) at the ends become flags."""
    out: list[str] = []
    boundary = 0
    specials: list[Special] = []
    start = 0
    while True:
        open_ = text.find("(", start)
        if open_ < 0:
            break
        segment = text[start:open_]
        negative = open_ >= 1 and text[open_ - 1] == "!"
        if negative:
            segment = segment[:-1] if segment.endswith("!") else segment
        out.append(segment)
        close, nest = _paren_end(text, open_ + 1)
        if close < 0:
            raise SignatureError("cli_ac_addsig: Missing closing parenthesis")
        inner = text[open_ + 1:close]
        start = close + 1
        if not inner:
            raise SignatureError("cli_ac_addsig: Empty block")
        if nest > ALT_MAX_NEST:
            raise SignatureError("ac_addspecial: Expression exceeds maximum alternate nesting limit")
        if inner in ("B", "L", "W"):
            flags = {"B": (B_RIGHT, B_RIGHT_NEG, B_LEFT, B_LEFT_NEG),
                     "L": (L_RIGHT, L_RIGHT_NEG, L_LEFT, L_LEFT_NEG),
                     "W": (W_RIGHT, W_RIGHT_NEG, W_LEFT, W_LEFT_NEG)}[inner]
            if start == len(text):
                boundary |= flags[0] | (flags[1] if negative else 0)
                continue
            if open_ == 0:
                boundary |= flags[2] | (flags[3] if negative else 0)
                continue
            kind = {"B": BOUNDARY, "L": LINE, "W": WORD}[inner]
            specials.append(Special(kind, negative))
        else:
            specials.append(_alternatives(inner, negative, generic_only, nocase))
        out.append("()")
    out.append(text[start:])
    return "".join(out), boundary, specials


def _analyze(expr: str) -> tuple[int, bool, int]:
    """ClamAV's ac_analyze_expr: (number of top-level alternatives, fixed length?, longest)."""
    level = length = 0
    count = 1
    fixed = True
    longest = 0
    for c in expr:
        if c == "(":
            fixed = False
            level += 1
        elif c == ")":
            level -= 1
        if not level and c == "|":
            if not longest:
                longest = length
            elif length != longest:
                fixed = False
                longest = max(longest, length)
            length = 0
            count += 1
        else:
            if c == "?":
                fixed = False
            length += 1
    if not longest:
        longest = length
    elif length != longest:
        fixed = False
        longest = max(longest, length)
    return count, fixed, longest


def _alternatives(expr: str, negative: bool, generic_only: bool, nocase: bool) -> Special:
    count, fixed, longest = _analyze(expr)
    if not generic_only and fixed:
        if count == 1:
            members = [_hex_bytes(expr)]
        else:
            members = []
            for index in range(count):
                member = _strtok(expr, index, "|")
                if member is None:
                    raise SignatureError("cli_ac_special_altstr: empty alternative")
                members.append(_hex_bytes(member))
        size = longest // 2
        if longest == 2:
            return Special(ALT_CHAR, negative, 1, 1, chars=frozenset(m[0] for m in members))
        if any(len(m) != size for m in members):
            raise SignatureError("cli_ac_special_altstr: alternatives of unequal length")
        return Special(ALT_FIXED, negative, size, size, strings=frozenset(members))
    if negative:
        raise SignatureError(
            "ac_special_altstr: Can't apply negation operation to generic alternate strings")
    alts: list[list] = []  # [elements, unique]
    for member in _expand(expr):
        elements = _elements(member)
        if nocase:
            elements = _nocase_elements(elements)
        unique = True
        duplicate = False
        for other in alts:
            same, wild = _compatible(other[0], elements)
            if not same:
                continue
            if len(other[0]) != len(elements):
                # One can match where the other matches a prefix: both need backtracking.
                unique = other[1] = False
            elif not wild:
                duplicate = True
                break
        if not duplicate:
            alts.append([elements, unique])
    if not alts:
        raise SignatureError("ac_special_altstr: no alternatives")
    lengths = [len(a[0]) for a in alts]
    return Special(ALT_GENERIC, False, min(lengths), max(lengths),
                   alts=tuple((tuple(a[0]), a[1]) for a in alts))


def _expand(expr: str) -> list[str]:
    """All strings of a (possibly nested) alternative expression, in ClamAV's order."""
    results, end = _expand_seq(expr, 0)
    if end != len(expr):
        raise SignatureError("ac_special_altexpand: Unexpected closing parenthesis")
    return results


def _expand_seq(expr: str, pos: int) -> tuple[list[str], int]:
    """Alternatives separated by '|' up to a ')' or the end; returns (strings, stop index)."""
    alternatives: list[str] = []
    current = [""]
    while pos < len(expr):
        c = expr[pos]
        if c == "|":
            alternatives.extend(current)
            current = [""]
            pos += 1
        elif c == ")":
            break
        elif c == "(":
            if pos >= 1 and expr[pos - 1] == "!":
                raise SignatureError(
                    "ac_special_altexpand: Generic alternates cannot contain negations")
            inner, stop = _expand_seq(expr, pos + 1)
            if stop >= len(expr):
                raise SignatureError("ac_special_altexpand: Missing closing parenthesis")
            current = [head + tail for head in current for tail in inner]
            pos = stop + 1
        else:
            current = [head + c for head in current]
            pos += 1
        if len(current) > 4096:
            raise SignatureError("ac_special_altexpand: too many alternatives")
    alternatives.extend(current)
    return alternatives, pos


def _compatible(a, b) -> tuple[bool, int]:
    """ClamAV's ac_uicmp: can a and b match the same bytes over their common length?

    Returns (compatible, wild): `wild` tells which side had wildcards where the
    other was exact (0 = neither, so equal-length compatible strings are duplicates).
    """
    side = 0
    for x, y in zip(a, b, strict=False):
        xw, yw = x & WILDCARD_MASK, y & WILDCARD_MASK
        if xw == yw:
            if xw == CHAR:
                if x & 0xFF != y & 0xFF:
                    return False, side
            elif xw == NIBBLE_HIGH:
                if x & 0xF0 != y & 0xF0:
                    return False, side
            elif xw == NIBBLE_LOW:
                if x & 0x0F != y & 0x0F:
                    return False, side
        elif xw == CHAR:
            if yw == NIBBLE_HIGH and x & 0xF0 != y & 0xF0:
                return False, side
            if yw == NIBBLE_LOW and x & 0x0F != y & 0x0F:
                return False, side
            side |= 2
        elif yw == CHAR:
            if xw == NIBBLE_HIGH and x & 0xF0 != y & 0xF0:
                return False, side
            if xw == NIBBLE_LOW and x & 0x0F != y & 0x0F:
                return False, side
            side |= 1
        elif xw == IGNORE:
            side |= 1
        elif yw == IGNORE:
            side |= 2
        else:
            side |= 3
        if side == 3:
            return False, side
    return True, side


def _anchor_position(elements: list[int]) -> int:
    """Where ClamAV starts a part's trie path (cli_ac_addsig's search for a static run)."""
    count = len(elements)
    wildcard_prefix = False
    zero_prefix = True
    for i in range(min(AC_MAXDEPTH, count)):
        if elements[i] & WILDCARD_MASK:
            wildcard_prefix = True
            break
        if elements[i]:
            zero_prefix = False
    if not (wildcard_prefix or zero_prefix):
        return 0
    best_len = best_pos = 0
    nz_len = nz_pos = 0

    def nonzero(pos: int) -> bool:
        return bool(elements[pos] or (pos + 1 < count and elements[pos + 1]))

    for i in range(count - AC_MINDEPTH + 1):
        for j in range(i, min(i + AC_MAXDEPTH, count)):
            if elements[j] & WILDCARD_MASK:
                break
            if j - i + 1 >= best_len:
                best_len, best_pos = j - i + 1, i
            if nonzero(best_pos):
                if best_len >= AC_MAXDEPTH:
                    break
                if best_len >= AC_MINDEPTH and best_len > nz_len:
                    nz_len, nz_pos = best_len, best_pos
        if best_len >= AC_MAXDEPTH and nonzero(best_pos):
            break
    if count and not nonzero(best_pos) and nz_len:
        best_len, best_pos = nz_len, nz_pos
    if best_len < AC_MINDEPTH:
        raise SignatureError(
            f"cli_ac_addsig: Can't find a static subpattern of length {AC_MINDEPTH}")
    return best_pos
