"""The fast anchor path (`hexsig_anchors`) against the full compiler, on generated signatures.

Loading computes each body signature's anchor literals without building its
compiled plan when it can; the answer, and the error for a signature clamd
refuses, must be exactly those of `plan_anchors(parse_hexsig(...))`.
"""

from __future__ import annotations

import random

import pytest

from clammail.signatures.anchors import hexsig_anchors, plan_anchors
from clammail.signatures.common import SignatureError
from clammail.signatures.hexsig import parse_hexsig, parse_offset


def _both(hexsig, offset, target, **modifiers):
    def run(function):
        try:
            return function()
        except SignatureError as exc:
            return ("error", str(exc))

    slow = run(lambda: plan_anchors(parse_hexsig(hexsig, offset, target, **modifiers)))
    fast = run(lambda: hexsig_anchors(hexsig, offset, target, **modifiers))
    return slow, fast


def _random_hexsig(rng: random.Random) -> str:
    def run(n):
        return "".join(rng.choice("0123456789abcdefABCDEF0000ff") + rng.choice("0123456789abcdef0")
                       for _ in range(n))

    pieces = [rng.choice(["", "??", "000000", "00", "a?", "(B)", "!(aa|bb)"]) if rng.random()
              < 0.2 else "", run(rng.randint(0, 16))]
    for _ in range(rng.randint(0, 4)):
        pieces.append(rng.choice([
            "??", "????", "*", "**", "{3}", "{130}", "{2-9}", "{-5}", "{4-}", "{0}", "{9-3}",
            "{x}", "(aa|bb)", "(aabb|ccdd)", "!(aa|bb)", "(B)", "(L)", "?5", "5?", "[1-3]",
            "{", "}", "*(", ")", "", "{1-2}??", "000000", "0000", "(aabbcc|ddeeff)", "(aa)",
            "(aabb)", "(aa|bbcc)", "(aa||bb)", "(|aa)", "(aa|bb|cc|dd)", "(0000|ffff)",
            "(aa|bb)(cc|dd)", "(aa|(bb|cc))", "(aa|b?)", "(AA|bB)"]))
        pieces.append(run(rng.randint(0, 14)))
    return "".join(pieces)


def test_fast_anchors_agree_with_the_compiler_on_generated_signatures():
    rng = random.Random(11)
    offsets = [parse_offset(text) for text in ("*", "0", "10,20", "EOF-30", "EP+4", "S1+2")]
    loaded = fast_errors = 0
    for _ in range(10000):
        hexsig = _random_hexsig(rng)
        offset = rng.choice(offsets)
        target = rng.choice([0, 0, 1, 3, 6])
        ldb = rng.random() < 0.2
        slow, fast = _both(hexsig, offset, target, ldb=ldb)
        assert fast == slow, (hexsig, offset, target, ldb)
        if isinstance(slow, tuple) and slow and slow[0] == "error":
            fast_errors += 1
        else:
            loaded += 1
    assert loaded > 2500 and fast_errors > 2500  # both sides of the line were exercised


@pytest.mark.parametrize("hexsig", [
    "0123456789abcdef0123456789abcdef",  # Boyer-Moore, a literal cut to 12 bytes
    "000000ff20aabbccddeeff00112233445566",  # common bytes skipped at the start
    "ffff20aabbccddeeff00112233445566778899??aa",
    "aabbcc??ddeeff{5-9}00000000aabb*1122334455",
    "0000001122??33",  # zero start: ClamAV's anchor search
    "a1b2",  # too short for Boyer-Moore
])
def test_fast_anchors_on_chosen_shapes(hexsig):
    for target in (0, 1, 3):
        slow, fast = _both(hexsig, parse_offset("*"), target)
        assert fast == slow
    slow, fast = _both(hexsig, parse_offset("*"), 0, nocase=True, ldb=True)
    assert fast == slow
