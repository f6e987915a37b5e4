"""Logical expressions of .ldb signatures, parsed the way libclamav parses them.

libclamav's `cli_ac_chklsig` does not use a grammar: it walks the text,
splits a top-level expression at its *first* `&`/`|` (so `0&1|2` means
`0&(1|2)`), splits a parenthesised block at the *last* operator inside it,
and reads numbers with `sscanf("%u")` (which skips blanks, takes a sign and
stops at the first non-digit). Signatures in the wild rely on these quirks,
so this module reproduces that walk exactly, once, into a small tree that is
then evaluated per scanned object without re-parsing.

Counting semantics (also libclamav's): a subsignature evaluates to its match
count; `A=X`, `A>X`, `A<X` compare that count; a group's count is the sum of
the counts of its true members; `(..)>X,Y` also needs at least Y distinct
subsignatures among them.
"""

from __future__ import annotations

from dataclasses import dataclass

from clammail.signatures.common import SignatureError, scan_decimal

_UINT_MASK = 0xFFFFFFFF
_ULONG_MAX = (1 << 64) - 1


def scan_uint(text: str, pos: int) -> int | None:
    """`sscanf(text + pos, "%u")`: the value, or None where sscanf converts nothing."""
    scanned = scan_decimal(text, pos)
    if scanned is None:
        return None
    value = scanned[0]
    magnitude = min(abs(value), _ULONG_MAX)  # strtoul saturates
    if value < 0:
        return ((-magnitude) & _ULONG_MAX) & _UINT_MASK
    return magnitude & _UINT_MASK


@dataclass(frozen=True)
class Leaf:
    """One subsignature, optionally with `=X`, `>X` or `<X` on its count."""

    sub: int
    mod: str = ""  # "", "=", "<", ">" (or ")": a quirk that always fails)
    value: int = 0


@dataclass(frozen=True)
class Branch:
    """`left OP right`, as a block with an optional count modifier `(..)>X,Y`."""

    op: str  # "&" or "|"
    left: Node
    right: Node
    mod: str = ""  # block modifier: "", "=", "<", ">"
    value: int = 0
    distinct: int = 0


Node = Leaf | Branch


class _Syntax(Exception):
    pass


def _char(text: str, i: int) -> str:
    return text[i] if 0 <= i < len(text) else "\0"


def _parse(text: str, start: int, end: int, depth: int) -> Node:
    if depth > 500:
        raise _Syntax("expression nested too deeply")
    length = end - start
    pth = 0
    op = op1 = ""
    opoff = op1off = 0
    mod = ""
    modoff = 0
    blkend = 0
    blkmod = ""
    modval1 = modval2 = 0
    i = 0
    while i < length:
        c = text[start + i]
        if c == "(":
            pth += 1
        elif c == ")":
            if not pth:
                raise _Syntax("missing opening parenthesis")
            pth -= 1
            mod, modoff = c, i  # libclamav falls through into the modifier case
        elif c in "<>=":
            mod, modoff = c, i
        elif c in "&|":
            if not pth:
                op, opoff = c, i
            elif pth == 1:
                op1, op1off = c, i
        if op:
            break
        if op1 and not pth:
            blkend = i
            nxt = _char(text, start + i + 1)
            if nxt in "<>=" and nxt != "\0":
                blkmod = nxt
                first = scan_uint(text, start + i + 2)
                if first is None:
                    raise _Syntax(f"missing number after {nxt!r}")
                modval1 = first
                after = _comma_value(text, start + i + 2)
                if after is not None:
                    modval2 = after
                i += 2
                while i + 1 < length and (text[start + i + 1].isdigit() or text[start + i + 1] == ","):
                    i += 1
            if start + i + 1 == end:
                break
            blkmod = ""
        i += 1

    if pth:
        raise _Syntax("missing closing parenthesis")

    if not op and not op1:
        if _char(text, start) == "(":
            return _parse(text, start + 1, end - 1, depth + 1)
        sub = scan_uint(text, start)
        if sub is None:
            raise _Syntax(f"cannot parse {text[start:end]!r}")
        if mod:
            value = scan_uint(text, start + modoff + 1)
            if value is None:
                raise _Syntax(f"missing number after {mod!r}")
            return Leaf(sub, mod, value)
        return Leaf(sub)

    lstart, rend = start, end
    if not op:
        op, opoff = op1, op1off
        lstart = start + 1
        rend = start + blkend
    if not opoff:
        raise _Syntax("missing left argument")
    if opoff + 1 == length:
        raise _Syntax("missing right argument")
    left = _parse(text, lstart, start + opoff, depth + 1)
    right = _parse(text, start + opoff + 1, rend, depth + 1)
    if not blkmod:
        return Branch(op, left, right)
    return Branch(op, left, right, blkmod, modval1, modval2)


def _comma_value(text: str, pos: int) -> int | None:
    """The Y of `%u,%u` when both convert (else sscanf leaves it at 0)."""
    n = len(text)
    while pos < n and text[pos] in " \t\n\v\f\r":
        pos += 1
    if pos < n and text[pos] in "+-":
        pos += 1
    begin = pos
    while pos < n and text[pos].isdigit():
        pos += 1
    if pos == begin or pos >= n or text[pos] != ",":
        return None
    return scan_uint(text, pos + 1)


@dataclass(frozen=True)
class Expression:
    text: str
    root: Node

    @property
    def max_subsig(self) -> int:
        return _max_sub(self.root)

    def evaluate(self, counts) -> bool:
        """Whether the expression holds for these per-subsignature match counts."""
        return _eval(self.root, counts)[0]

    def needed_counts(self) -> dict[int, int]:
        """Per subsignature, how many matches must be seen to decide every comparison."""
        need: dict[int, int] = {}
        _needs(self.root, 1, need)
        return need


def parse_expression(text: str) -> Expression:
    """Parse a logical expression; SignatureError with libclamav's reason if invalid."""
    if "\0" in text:
        raise SignatureError("invalid logical expression: NUL character")
    try:
        root = _parse(text, 0, len(text), 0)
    except _Syntax as exc:
        raise SignatureError(f"invalid logical expression {text!r}: {exc}") from None
    except RecursionError:
        raise SignatureError(f"invalid logical expression {text!r}: nested too deeply") from None
    top = _max_sub(root)
    if top > 0x7FFFFFFF:  # libclamav returns it as a negative int: an error
        raise SignatureError(f"invalid logical expression {text!r}: subsignature number too large")
    return Expression(text, root)


def _max_sub(node: Node) -> int:
    if isinstance(node, Leaf):
        return node.sub
    return max(_max_sub(node.left), _max_sub(node.right))


def _compare(mod: str, count: int, value: int) -> bool:
    if mod == "=":
        return count == value
    if mod == "<":
        return count < value
    if mod == ">":
        return count > value
    return False


def _eval(node: Node, counts) -> tuple[bool, int, int]:
    """(true?, count contributed, bitmask of subsignatures seen) as cli_ac_chklsig computes them."""
    if isinstance(node, Leaf):
        count = counts[node.sub] if node.sub < len(counts) else 0
        if node.mod:
            if not _compare(node.mod, count, node.value):
                return False, 0, 0
            return True, count, 1 << node.sub
        if count:
            return True, count, 1 << node.sub
        return False, 0, 0
    lval, lcnt, lids = _eval(node.left, counts)
    rval, rcnt, rids = _eval(node.right, counts)
    ok = (lval and rval) if node.op == "&" else (lval or rval)
    if not node.mod:
        if ok:
            return True, lcnt + rcnt, lids | rids
        return False, 0, 0
    total, ids = (lcnt + rcnt, lids | rids) if ok else (0, 0)
    if not _compare(node.mod, total, node.value):
        return False, 0, 0
    if node.distinct and bin(ids).count("1") < node.distinct:
        return False, 0, 0
    return True, total, 0  # a counted block passes its count up, not its members


def _needs(node: Node, bound: int, need: dict[int, int]) -> None:
    if isinstance(node, Leaf):
        want = bound
        if node.mod in ("=", ">"):
            want = max(want, node.value + 1)
        elif node.mod == "<":
            want = max(want, node.value)
        need[node.sub] = max(need.get(node.sub, 1), min(want, 1 << 20))
        return
    if node.mod in ("=", ">"):
        bound = max(bound, node.value + 1)
    elif node.mod == "<":
        bound = max(bound, node.value)
    _needs(node.left, bound, need)
    _needs(node.right, bound, need)
