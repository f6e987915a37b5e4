"""YARA rules: clamscan 1.4.6 against clammail on generated rules and files."""

from __future__ import annotations

import pytest
from conftest import clamscan_results, need_unit_data
from test_logical import compare, write_files

from clammail.signatures.common import LoadOptions, SignatureError
from clammail.signatures.yara import load_yara

CONTENT = [
    b"hello world h\0e\0l\0l\0o\0 foo123bar HELLO xhellox abcabcabc",
    b"abc hello",
    b"nothing of interest",
    b"HeLLo wide: W\0O\0R\0L\0D\0 end",
    b"abcabc" + b"-" * 200 + b"hello",
]

RULES = [
    '$a = "hello" => $a',
    '$a = "hello" => #a == 2',
    '$a = "hello" => #a > 1',
    '$a = "hello" nocase => #a == 3',
    '$a = "hello" wide => $a',
    '$a = "hello" wide ascii => #a == 3',
    '$a = "hello" fullword => #a == 1',
    '$a = "hello" nocase fullword => #a > 1',
    '$a = "world" wide nocase => $a',
    '$a = { 68 65 6c 6c 6f } => $a at 64',
    '$a = { 68 65 6c 6c 6f } => $a at 65',
    '$a = /fo+[0-9]+bar/ => $a',
    '$a = /FOO/i => $a',
    '$a = /FOO/ nocase => $a',
    '$a = /ab(c)/ => #a == 1',
    '$a = "hello" $b = "nothere" => any of them',
    '$a = "hello" $b = "nothere" => all of them',
    '$a = "hello" $b = "nothere" => 1 of ($a,$b)',
    '$a = "hello" $b = "nothere" => 2 of them',
    '$a1 = "hello" $a2 = "world" => all of ($a*)',
    '$a = "hello" => $a and filesize < 120',
    '$a = "hello" => $a and filesize > 120',
    '$a = "hello" => $a and uint8(0) == 0 and uint32(0) == 0',
    '$a = "hello" => $a and uint16(64) == 0x6568',
    '$a = "hello" => $a and int8(69) == 32',
    '$a = "zzzz" => not $a',
    '$a = "hello" => not $a',
    '$a = "hello" => $a or not $a',
    '$a = "hello" => @a[1] == 64',
    '$a = "abc" => #a == 3 and @a[3] == 70',
    '$a = "hello" => for any i in (1..#a): (@a[i] > 80)',
    '$a = "hello" => for all i in (1..#a): (@a[i] >= 64)',
    '$a = "hello" => for all of them : ($ at 64)',
    '$a = "hello" => for any of them : ($ in (0..100))',
    '$a = "hello" => $a and entrypoint == 0',
    '$a = "hello" => $a and (filesize + 1) * 2 > 100',
    '$a = "hello" => $a and filesize \\ 2 > 10 and filesize % 7 < 7',
    '$a = "hello" => $a and (uint8(64) & 0x0f) == 0x08',
    '$a = "hello" => $a and 1 << 2 == 4 and 16 >> 2 == 4 and (5 ^ 1) == 4 and (4 | 1) == 5',
    '$a = "hello" => $a and ~0 == 0',
    '$a = "hello" => $a and 1KB == 1024 and 1MB == 1048576',
    '$a = "hello" => true and $a',
    '$a = "hello" => false or $a',
    '$a = "hel\\x6co" => $a',
    '$ = "hello" $ = "abc" => all of them',
    '$a = "hello" => $a and @a[9] == 1',
    '$a = "hello" => $a and uint32(100000) == 0',
]

# Hex strings with wildcards, jumps and alternatives need the real body matcher.
WILDCARD_RULES = [
    '$a = { 68 65 ?? 6c 6f } => $a in (64..70)',
    '$a = { 68 6? 6c 6c 6f } => $a',
    '$a = { 68 65 ( 6c | 6d ) 6c 6f } => $a',
    '$a = { 68 65 [1-3] 6f 20 } => $a',
    '$a = { 61 62 [-] 68 65 } => $a',
    '$a = { 61 62 [2-] 68 65 } => #a == 1',
]

BROKEN_RULES = [  # each is skipped with a warning; the others in the file still load
    '$a = "hello" => uint16(3) == 0x5a4d',
    '$a = "hello" => $a and int8(4) == -1',
    '$a = "hello" => $a and uint32be(0) == 0',
    '$a = "hello" => $a matches /hel/',
    '$a = "hello" $a = "world" => $a',
    '$a = "hello" => $b',
    '$a = "hello" xor => $a',
    '$a = "h" => $a',
    '$a = "hello" => $a and pe.number_of_sections == 1',
    '$a = /hello/ wide => $a',
]


def _rule(n: int, body: str, prefix: str = "R") -> str:
    strings, condition = body.split(" => ")
    return f"rule {prefix}{n}\n{{\n  strings:\n    {strings}\n  condition:\n    {condition}\n}}\n"


def test_rules_match_clamscan(tmp_path):
    text = "".join(_rule(n, body) for n, body in enumerate(RULES))
    text += (
        'private rule Priv { strings: $a = "hello" condition: $a }\n'
        'rule UsesPriv { strings: $x = "world" condition: Priv and $x }\n'
        'global rule Glob { strings: $a = "abc" condition: $a }\n'
        'import "pe"\n'
        'rule Tagged : tag1 tag2 { meta: author = "x" n = 1 flag = true strings: $a = "hello" condition: $a }\n'
        "// a comment\n/* a block\ncomment */\n"
    )
    db = tmp_path / "rules.yar"
    db.write_text(text)
    paths = write_files(tmp_path, CONTENT)
    theirs = compare([db], paths)
    assert sum(len(v) for v in theirs.values()) > 40


def test_wildcard_hex_strings_match_clamscan(tmp_path):
    db = tmp_path / "wild.yar"
    db.write_text("".join(_rule(n, body, "W") for n, body in enumerate(WILDCARD_RULES)))
    paths = write_files(tmp_path, CONTENT)
    theirs = compare([db], paths)
    assert any(theirs.values())


def test_broken_rules_are_skipped_like_clamscan(tmp_path):
    text = "".join(_rule(n, body, "Bad") for n, body in enumerate(BROKEN_RULES))
    text += _rule(0, '$a = "hello" => $a', "Good")
    db = tmp_path / "broken.yar"
    db.write_text(text)
    paths = write_files(tmp_path, CONTENT[:2])
    theirs = compare([db], paths)
    assert all(set(names) == {"YARA.Good0.UNOFFICIAL"} for names in theirs.values())


@pytest.mark.parametrize("body", [
    '$a = { 68 65 [1-2] 6f } => $a',
    '$a = { 68 65 [2] 6f } => $a',
    '$a = { 68 [2] 65 6c } => $a',
])
def test_single_byte_hex_pieces_fail_the_database(tmp_path, body):
    db = tmp_path / "fatal.yar"
    db.write_text(_rule(0, body))
    probe = write_files(tmp_path, [b"hello"])[0]
    code, _, err = clamscan_results([db], [probe])
    assert code == 2, err
    with pytest.raises(SignatureError) as info:
        load_yara(db.read_text(), str(db), False, LoadOptions())
    assert "single byte" in info.value.reason


def test_unparsable_files_load_nothing():
    assert load_yara("rule {", "x.yar", False, LoadOptions()) == []
    assert load_yara("", "x.yar", False, LoadOptions()) == []
    assert load_yara('rule a { strings: $a = "ab\n" condition: $a }', "x.yar", False, LoadOptions()) == []


def test_names_and_official():
    rules = load_yara('rule Abc { strings: $a = "hello" condition: $a }', "x.yar", True, LoadOptions())
    assert [r.name for r in rules] == ["YARA.Abc"]


def test_pe_allmatch_yara_rules_match_test_exe():
    unit = need_unit_data()
    rules = sorted((unit / "pe_allmatch" / "alert-sigs").glob("*.yar"))
    assert rules
    theirs = compare(rules, [str(unit / "pe_allmatch" / "test.exe")])
    # test.exe carries nested PE files that clamscan scans too: each rule
    # matches in the file and in its embedded PE.
    names = next(iter(theirs.values()))
    assert set(names) == {f"YARA.{r.name.split('.')[1]}.UNOFFICIAL" for r in rules}
