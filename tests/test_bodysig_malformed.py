"""Which .ndb lines clamscan 1.4.6 refuses, and that `load_ndb` refuses exactly those.

Each line is tried as line 2 of a database whose line 1 is valid: clamscan
either loads it (exit 0/1) or stops with "Malformed database" (exit 2); our
loader must load it too, or raise SignatureError naming line 2 with a reason.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import need_program

from clammail.signatures.bodysig import load_ndb
from clammail.signatures.common import LoadOptions, SignatureError

VALID = "Valid:0:*:a0a1a2a3a4"

LINES = [
    # fields, names, engine levels
    "A:0:*", "A:0:*:a0b0c0:1:2:3", "A", "", "A:0:*:a0b0c0:", "A:0:*:a0b0c0::",
    "A:0:*:a0b0c0:abc", "A:0:*:a0b0c0:10:abc", "A:0:*:a0b0c0:999", "A:0:*:zz:999",
    "A:0:*:a0b0c0:1:5", "A:0:*:zz:1:5", "A:0:*:a0b0c0:1:999", ":0:*:a0b0c0",
    " (Clam):0:*:a0b0c0", "A (Clam):0:*:a0b0c0", "#A:0:*:zz", "A:0:*:a0b0c0\r",
    "A:0:*:a0b0c0:99999999999",
    # targets
    "A:15:*:a0b0c0", "A:99:*:zz", "A:-1:*:a0b0c0", "A:*:*:a0b0c0", "A::*:a0b0c0",
    "A:1a:*:a0b0c0", "A:14:*:a0b0", "A:8:*:a0b0c0",
    # plain hex and wildcards
    "A:0:*:a0b0", "A:3:*:a0b0", "A:1:*:a0b0", "A:1:0:a0b0", "A:0:*:a0b0c", "A:0:*:a0b0zz",
    "A:0:*:A0B0C0", "A:0:*:a0??", "A:0:*:??a0b0", "A:0:*:a?b0c0", "A:0:*:?ab0c0",
    "A:0:*:a0b0?", "A:0:*:a0b0??c0", "A:0:*:a0??b0??c0", "A:0:*:0000??", "A:0:*:000000??",
    "A:0:*:g?b0c0", "A:0:*:a0 b0c0", "A:0:*:",
    # gaps
    "A:0:*:a0*b0", "A:0:*:a0b0*c0d0", "A:0:*:*a0b0c0", "A:0:*:a0b0c0*", "A:0:*:a0b0**c0d0",
    "A:0:*:a0b0{3}", "A:0:*:{3}a0b0", "A:0:*:a0b0{3}c0d0", "A:0:*:a0b0{0}c0d0",
    "A:0:*:a0b0{}c0d0", "A:0:*:a0b0{-}c0d0", "A:0:*:a0b0{5-3}c0d0", "A:0:*:a0b0{a}c0d0",
    "A:0:*:a0b0{1-2-3}c0d0", "A:0:*:a0b0{1--3}c0d0", "A:0:*:a0b0{ 5}c0d0",
    "A:0:*:a0b0{+5}c0d0", "A:0:*:a0b0{5 }c0d0", "A:0:*:a0b0{200}c0d0",
    "A:0:*:a0b0{3000000000}c0d0", "A:0:*:a0b0{5-7c0d0", "A:0:*:a0b05}c0d0",
    "A:0:*:a0b0{1-2}*c0d0", "A:0:*:a0b0{1-2}c0{3}d0e0", "A:0:*:a0b0{127}c0d0",
    "A:0:*:a0b0{128}c0", "A:0:*:a0{2-3}b0c0d0",
    # alternatives
    "A:0:*:a0b0(c0|d0)e0f0", "A:0:*:a0b0(c0)d0e0", "A:0:*:a0b0()c0d0", "A:0:*:a0b0(c0|d0",
    "A:0:*:a0b0c0|d0)", "A:0:*:a0b0(c0||d0)e0f0", "A:0:*:a0b0(|c0)e0f0",
    "A:0:*:a0b0(c0|)e0f0", "A:0:*:a0b0(c0|d0e0)f0a1", "A:0:*:a0b0!(c0|d0)e0f0",
    "A:0:*:a0b0!(c0|d0e0)f0a1", "A:0:*:a0b0(c?|d0)e0f0", "A:0:*:a0b0(c0|(d0|e0))f0a1",
    "A:0:*:a0b0" + "(" * 17 + "c0" + ")" * 17 + "d0e0", "A:0:*:a0b0(zz|d0)e0f0",
    "A:0:*:a0b0(c0*d0)e0f0", "A:0:*:a0b0(c0{3}d0)e0f0", "A:0:*:a0b0(c0{3-4}d0)e0f0",
    "A:0:*:(a0|b0)(c0|d0)", "A:0:*:a0b0(c0d0|e0f0)a1", "A:0:*:a0b0!(c0d0|e0f0)a1",
    "A:0:*:a0b0(c0|!(d0|e0))f0", "A:0:*:a0b0(c0|d0)", "A:0:*:(c0|d0)a0b0",
    # boundaries
    "A:0:*:(B)a0b0c0", "A:0:*:a0b0c0(B)", "A:0:*:a0b0(B)c0", "A:0:*:!(B)a0b0c0",
    "A:0:*:a0b0c0!(B)", "A:0:*:(b)a0b0c0", "A:0:*:(X)a0b0c0", "A:0:*:(L)(W)a0b0c0",
    "A:0:*:(B)", "A:0:*:(B)a0", "A:0:*:a0b0(L)", "A:0:*:(W)a0b0(W)",
    # anchored bytes
    "A:0:*:a0[1-2]b0c0d0", "A:0:*:a0b0c0[1-2]d0", "A:0:*:a0[2-1]b0c0d0",
    "A:0:*:a0[0-33]b0c0d0", "A:0:*:a0[0-32]b0c0d0", "A:0:*:a0[x]b0c0d0", "A:0:*:a0[3]b0c0d0",
    "A:0:*:a0[1-2b0c0d0", "A:0:*:a0b0[1-2]c0d0", "A:0:*:a0[1-2]b0c0[1-2]d0",
    "A:0:*:a0[1-2]b0", "A:0:*:a0[1-2]b0c0d0[1-2]e0", "A:0:*:a0b0c0d0[1-2]e0[3-4]f0",
    "A:0:*:??[1-2]b0c0d0", "A:0:*:a0[-1]b0c0d0", "A:0:*:a0[ 1-2]b0c0d0",
    # offsets
    "A:0:10:a0b0c0", "A:0:10,5:a0b0c0", "A:0:,5:a0b0c0", "A:0:10,:a0b0c0",
    "A:0:10,x:a0b0c0", "A:0:*,5:a0b0c0", "A:0:EOF-10:a0b0c0", "A:0:EOF-:a0b0c0",
    "A:0:EOF-x:a0b0c0", "A:0:EOF+10:a0b0c0", "A:0:EP+10:a0b0c0", "A:1:EP+10:a0b0c0",
    "A:1:EP-10:a0b0c0", "A:1:EP+:a0b0c0", "A:1:S2+10:a0b0c0", "A:1:SL+10:a0b0c0",
    "A:1:SE2:a0b0c0", "A:1:SE:a0b0c0", "A:1:S+10:a0b0c0", "A:1:Sx+1:a0b0c0",
    "A:1:VI:a0b0c0", "A:6:EP+0:a0b0c0", "A:9:SL+0:a0b0c0", "A:7:EP+0:a0b0c0",
    "A:0:VI:a0b0c0", "A:0:$1$:a0b0c0", "A:0:$40$:a0b0c0", "A:0:x:a0b0c0", "A:0:-5:a0b0c0",
    "A:0:" + "1" * 70 + ":a0b0c0", "A:1:EP+10,5:a0b0c0", "A:1:S1+2x:a0b0c0",
    "A:0:EOF-10,5:a0b0", "A:3:EOF-10,5:a0b0", "A:1:SE1,4:a0b0c0", "A:0::a0b0c0",
]


def clamscan_accepts(tmp_path, line: str) -> bool:
    db = tmp_path / "t.ndb"
    db.write_bytes((VALID + "\n" + line + "\n").encode("latin-1"))
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"\x00\x01 nothing to find here")
    proc = subprocess.run([need_program("clamscan"), "--no-summary", "-d", str(db), str(sample)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1, 2), proc.stderr
    if proc.returncode == 2:
        assert "Malformed database" in proc.stderr or "Problem parsing" in proc.stderr, proc.stderr
    return proc.returncode != 2


@pytest.mark.oracle
def test_refuses_exactly_what_clamscan_refuses(tmp_path):
    disagreements = []
    for line in LINES:
        theirs = clamscan_accepts(tmp_path, line)
        try:
            load_ndb(VALID + "\n" + line + "\n", "t.ndb", False, LoadOptions())
            ours, reason = True, None
        except SignatureError as error:
            ours, reason = False, error
            assert error.line == 2 and error.path == "t.ndb" and error.reason, error
        if ours != theirs:
            disagreements.append((line, theirs, reason))
    assert not disagreements


def test_error_names_file_line_and_reason():
    text = "Good:0:*:a0b0c0\n# comment\nBad:0:*:a0??\n"
    with pytest.raises(SignatureError) as caught:
        load_ndb(text, "db/x.ndb", False, LoadOptions())
    assert (caught.value.path, caught.value.line) == ("db/x.ndb", 3)
    assert "static subpattern" in caught.value.reason
    assert str(caught.value).startswith("db/x.ndb:3: ")


def test_empty_file_is_an_error():
    with pytest.raises(SignatureError) as caught:
        load_ndb("", "empty.ndb", False, LoadOptions())
    assert "Empty database" in caught.value.reason


def test_names_engine_levels_and_comments():
    text = ("Sig.One:0:*:a0b0c0\n#Sig.Two:0:*:zz\nSig.Three:0:*:a0b0c0:999\n"
            "Sig.Four (Clam):0:*:a0b0c0:100:300\nSig.Five:0:*:a0b0c0:1:100\n")
    sigs = load_ndb(text, "x.ndb", False, LoadOptions())
    assert [s.name for s in sigs] == ["Sig.One.UNOFFICIAL", "Sig.Four.UNOFFICIAL"]
    assert (sigs[1].min_flevel, sigs[1].max_flevel) == (100, 300)
    official = load_ndb("Sig.One:0:*:a0b0c0\n", "x.ndb", True, LoadOptions())
    assert official[0].name == "Sig.One"
    assert load_ndb("Sig.One:0:*:a0b0c0:300\n", "x.ndb", True, LoadOptions(flevel=300))


def test_hostile_lines_fail_fast():
    for line in ["A:0:*:" + "(" * 5000 + "a0", "A:0:*:" + "a0b0" * 20000,
                 "A:0:*:" + "(a0|b0)" * 3000 + "c0d0", "A:0:*:a0b0" + "{1-2}c0d0" * 2000,
                 "A:0:*:\x00\xff\u20ac"]:
        try:
            load_ndb(line + "\n", "x.ndb", False, LoadOptions())
        except SignatureError as error:
            assert error.line is not None
