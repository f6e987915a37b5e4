"""The fast HTML normalizer against the byte-loop reference: same bytes on every input.

clammail.unpack.html.normalize must give exactly what
clammail.unpack.html_reference.normalize gives (the reference is checked
against clamscan in test_html.py). The inputs: documents generated from
pieces chosen to hit every state and odd corner of the state machine,
mutations of real HTML files, constructs placed across libclamav's 8191-byte
chunk boundary, the HTML files on this machine, and hostile shapes.

Run as a script for a longer fuzzing session:
    .venv/bin/python tests/test_html_fast.py [COUNT] [SEED]
"""

from __future__ import annotations

import base64
import os
import random
import sys
import threading
from pathlib import Path

import clammail.engine  # noqa: F401  (the engine first: clammail.unpack imports it back)
from clammail.unpack import html as fast
from clammail.unpack import html_reference as reference

TEXT = [b"Hello", b"WORLD", b"a", b"Zz", b"x" * 40, b"caf\xc3\xa9", b"\xe2\x80\x99", b"\xc3\xa9\xc3\xa9",
        b"\xe3\x80\x82", b"\xef\xbc\x8e", b"\xef\xb9\x92", b"x\xe3\x80\x82\xe3\x80\x82", b"\xa1C",
        b"\xa1D", b"\xa1O", b"\xa1", b"\xc3", b"\x80\x80\x80\x80", b"\xff", b"\xf0\x9f\x98\x80", b">",
        b"->", b"=>", b"'", b'"', b"\\", b"=", b"a=b", b"!", b"/", b"1 < 2", b"#", b";", b"%", b"\x7f"]
SPACE = [b" ", b"  ", b"\n", b"\r\n", b"\t", b"\x0b", b"\x0c", b"\r", b" \n \t ", b"\n\n"]
CONTROL = [b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x07", b"\x1f", b"\x00\x00"]
REFERENCES = [
    b"&amp;", b"&AMP;", b"&lt;", b"&gt;", b"&quot;", b"&nbsp;", b"&eacute;", b"&Eacute;", b"&bogus;",
    b"&amp", b"&", b"& ", b"&;", b"&#65;", b"&#65", b"&#x4a;", b"&#X4A;", b"&#0;", b"&#;", b"&#x;",
    b"&#0x41;", b"&#00x0x41;", b"&#x1x;", b"&#12345;", b"&#x3002;", b"&#xff0e;", b"&#1;", b"&#65537;",
    b"&#99999999999999999999;", b"&#xffffffffffffffffff;", b"&#x10001;", b"&a:b-c_d;",
    b"&" + b"a" * 1030 + b";", b"&#128;", b"&#255;", b"&#254;", b"&#32;", b"&#10;", b"&#60;p&#62;",
    b"&#x41", b"&#12a", b"&#0a;", b"&lt", b"&\xc3\xa9", b"&#9;"]
TAGS = [
    b"<p>", b"</p>", b"<P>", b"<b >", b"< i>", b"<br/>", b"<br />", b"<>", b"< >", b"</>", b"<hr\t>",
    b"<div class='A' id=B>", b'<div class="a b">', b'<div class="a  b c">', b'<div class="a b c d">',
    b'<span title="x y=z">', b'<td\tclass="x">', b'<td class="x\ty">', b'<td class=" x">',
    b'<td class="x ">', b'<td class="">', b'<td class=" ">', b"<td class='a b'>", b"<td class='it\"s'>",
    b'<td class="it\'s">', b'<a href="HTTP://x.Y/z">', b"<A HREF=foo>", b'<a href="">', b"<a href>",
    b"<a href='q'>", b'<a title="a b href" href="u">', b'<a title="x y href z" href="u">',
    b'<a title="x y href=z" href="u">', b'<a href="a b">', b'<a href="a  b c">', b'<a href = "x">',
    b'<a href= "x">', b'<a href ="x">', b'<a name="n" href="#top">', b'<a href="x" href="y">',
    b'<a hreff="x">', b'<a xhref="x">', b"<a href=x>", b"<a\thref=x>", b'<img src=Q.gif>',
    b'<img SRC="a.png" alt="b">', b'<img alt="x" src="">', b"<img src=x/>", b'<img src="x"/>',
    b'<IMG src="A b">', b"<img src>", b"<img  src='z'  >", b'<a href="x&amp;y">',
    b'<a href="\xc3\xa9">', b'<a title="\xc3\xa9">', b'<a href="x\\"y">', b"<a href=x\\>",
    b'<a href="' + b"L" * 1100 + b'">', b"<a href=" + b"M" * 1030 + b">", b"<" + b"t" * 1030 + b">",
    b'<a x="y>z">', b'<a x="y z>w">', b"<a x=\"y'>", b"<a x='y\">", b'<a x="y"z>', b'<a x="y""z">',
    b"<a =x>", b"<a x=>", b"<a x= >", b"<=a>", b'<a"x">', b'<a x=y"z">', b"<a x='a b c'>",
    b'<a x="a b" y="c">', b"<a x=a=b>", b'<a x=="y">', b'<?xml version="1.0"?>', b"<!DOCTYPE html>",
    b'<a\nhref="x"\n>', b'<p\r\nclass="x">', b'<a href="x" >', b"<a href=x >", b"<a\x00b>",
    b'<a href="x\x00y">', b"<a\x07>", b'<a b="\x07">', b"<a/href=x>", b"<a href=&#104;>",
    b'<img src="data:text/plain;base64,QUJD">', b"<a href=data:,x%41%4>", b'<a href="DATA:x">',
    b"<a href='data:image/png;base64,QUJD\r\nREVG'>", b'<img src="data:,a b">',
    b"<img src=data:text/html,%3cp%3e>", b'<a href="x data:y">', b'<a href="&#100;ata:,zz">',
    b'<a href="data:,q\\"r">', b'<a href="data:,%\\"s">', b"<a href=\"data:,&amp;&#65;&x\">",
    b"<a href=data:;base64,QQ==>", b'<a href="data:a"b">', b"<img src='data:,\xc3\xa9 x'>",
    b"<a x='y' y=\"z\">", b'<a x="y" / >', b"<a b c d>", b'<a b="1"c="2">', b"<p a=b=c>",
    b'<img alt=lt="home"/>', b'<a x=a="b" href="c">', b'<a x=="y"/>', b'<img src=a="b"c>']
COMMENTS = [b"<!-- x -->", b"<!x>", b"<!-- <p> -->", b"<!-- a > b -->", b"<!--", b"<!- -", b"< !-- y -->",
            b"<!>", b"<!-- \xe3\x80\x82 -->", b"<!-- 'q' \"d\" & -->", b"<!--<a href=x>-->", b"<\t!x>",
            b"<!-- <!-- -->", b"<!---->"]
SCRIPT = [b"<script>", b"</script>", b"<SCRIPT type='x'>", b"</script >", b"< /script>", b"<script/>",
          b"<script >", b"var  X = 'a' ;", b"if (a < b && c > d) {}", b"<!-- hidden -->", b"'str'",
          b"</div>", b"<\\/script>", b"</scripts>", b"<scriptx>", b"</SCRIPT>", b"<a href=x>", b"<'q'>"]
STYLE = [b"<style>", b"a > b { color: red }", b"</style>", b"p>q{}"]
GROUPS = [(TEXT, 30), (SPACE, 25), (TAGS, 20), (REFERENCES, 6), (COMMENTS, 3), (SCRIPT, 4), (STYLE, 2),
          (CONTROL, 1)]


def _outputs(result) -> tuple:
    return (bytes(result.nocomment), bytes(result.notags),
            [(bytes(mime), bytes(payload)) for mime, payload in result.data_uris])


def _first_difference(one: bytes, other: bytes) -> int:
    for offset, (a, b) in enumerate(zip(one, other, strict=False)):
        if a != b:
            return offset
    return min(len(one), len(other))


def assert_same(data: bytes, label: str) -> None:
    ours, theirs = _outputs(fast.normalize(data)), _outputs(reference.normalize(data))
    for name, mine, expected in zip(("nocomment", "notags"), ours, theirs, strict=False):
        if mine != expected:
            at = _first_difference(mine, expected)
            raise AssertionError(f"{label}: {name} differs at {at} of {len(expected)}: "
                                 f"fast {mine[max(0, at - 40): at + 40]!r}\n"
                                 f"reference {expected[max(0, at - 40): at + 40]!r}")
    assert ours[2] == theirs[2], f"{label}: data: URIs differ"


def generated(rng: random.Random, pieces: int) -> bytes:
    groups, weights = zip(*GROUPS, strict=True)
    out = []
    for _ in range(pieces):
        group = rng.choices(groups, weights)[0]
        out.append(rng.choice(group))
    return b"".join(out)


def mutated(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    all_pieces = [piece for group, _ in GROUPS for piece in group]
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(data) + 1)
        action = rng.random()
        if action < 0.5:
            data[at:at] = rng.choice(all_pieces)
        elif action < 0.7:
            del data[at: at + rng.randint(1, 20)]
        elif action < 0.85:
            data[at:at] = data[at: at + rng.randint(1, 200)]
        else:
            data[at: at + 1] = bytes([rng.choice(b"<>&\"' \n\r\x00\xe3=!")])
    return bytes(data)


def html_files(limit_files: int = 300, limit_bytes: int = 5_000_000) -> list[Path]:
    """HTML files on this machine, in a stable order, bounded in count and total size."""
    found, total = [], 0
    for root in ("/usr/share/doc", "/usr/share", "/usr/lib"):
        for folder, subs, names in os.walk(root):
            subs.sort()
            for name in sorted(names):
                if not name.endswith((".html", ".htm", ".xhtml")):
                    continue
                path = Path(folder, name)
                if path in found or path.is_symlink() or not path.is_file():
                    continue
                size = path.stat().st_size
                if size > 80_000 or total + size > limit_bytes:
                    continue
                found.append(path)
                total += size
                if len(found) >= limit_files:
                    return found
    return found


def test_generated_documents():
    rng = random.Random(2024)
    tier1 = _count_tier1()
    for case in range(2000):
        size = rng.choice((1, 3, 10, 40, 150, 600))
        if case % 4 == 0:
            fast._BODY_CACHE.clear()  # tag bodies computed afresh, not found in the cache
        assert_same(generated(rng, rng.randint(1, size)), f"generated case {case}")
    # The comparison is only worth something if both tiers were at work.
    assert tier1.spans > 1000
    tier1.restore()


def test_plain_markup_with_rare_tokens():
    """Mostly ordinary markup with a rare odd token: long tier-1 spans ending at the odd one."""
    rng = random.Random(7)
    plain = [b"<p>", b"</p>", b'<a href="x.html">', b"</a>", b'<span class="a b">', b"</span>", b"text ",
             b"More Text", b" ", b"\n", b"&amp;", b"caf\xc3\xa9 ", b'<img src="i.png" alt="">']
    odd = [piece for group, _ in GROUPS for piece in group]
    for case in range(250):
        pieces = [rng.choice(odd) if rng.random() < 0.02 else rng.choice(plain)
                  for _ in range(rng.randint(10, 3000))]
        assert_same(b"".join(pieces), f"plain case {case}")


def test_chunk_boundaries():
    """Every kind of token cut by libclamav's 8191-byte chunks, with and without whitespace before."""
    rng = random.Random(3)
    samples = [piece for group, _ in GROUPS for piece in group if len(piece) < 200]
    cases = 0
    for piece in rng.sample(samples, 45):
        for shift in (0, 1, 3, 8):
            for filler in (b"y", b"y y", b"<p>"):
                head = (filler * 2800)[: 8191 - shift]
                tail = generated(rng, 8)
                assert_same(head + piece + tail, f"boundary {piece!r} shift {shift} filler {filler!r}")
                assert_same(head + b" " + piece + tail, f"boundary {piece!r} shift {shift} + space")
                cases += 2
    # NULs change where chunks end.
    for count in (1, 2, 100, 8191, 9000):
        assert_same(b"<p>" + b"\x00" * count + b"ab <a href=x>y</a> " * 900, f"{count} NULs")
        assert_same(b"ab " * 2730 + b"\x00" * count + b"<b>x</b> " * 100, f"{count} NULs later")
        cases += 2
    assert cases > 1000


def test_mutated_real_files():
    rng = random.Random(5)
    files = html_files(limit_files=80, limit_bytes=1_500_000)
    assert files, "no HTML files on this machine"
    for path in files:
        data = path.read_bytes()
        for round_ in range(5):
            assert_same(mutated(rng, data), f"{path} mutation {round_}")


def test_real_files():
    files = html_files()
    assert len(files) >= 50, "too few HTML files on this machine to be a test"
    # (bench/bench_html.py --check compares the big ones too.)
    for path in files:
        assert_same(path.read_bytes(), str(path))


def test_hostile_shapes_agree():
    shapes = {
        "lt": b"<" * 200_000,
        "comment opens": b"<!--" * 50_000,
        "nested": b"<div>" * 40_000,
        "no tags": b"word " * 40_000,
        "no spaces": b"x" * 200_000,
        "gt": b">" * 200_000,
        "amp": b"&" * 200_000,
        "high": b"\xe2\x80" * 100_000,
        "open attribute": b"<a href='" + b"y" * 200_000,
        "open data uri": b'<img src="data:,' + b"z" * 200_000,
        "script": b"<script>" + b"a='b'; " * 30_000,
        "stray gt text": b"a -> b " * 30_000,
        "quotes": b'<a x="' * 40_000,
        "cr lf": b"<p>\r\n" * 50_000,
    }
    for name, data in shapes.items():
        assert_same(data, name)


def test_hostile_shapes_at_full_size_are_bounded():
    """1 MB of each hostile shape goes through (time and memory grow with the input only)."""
    for data in (b"<" * (1 << 20), b"<!--" * (1 << 18), b"<div>" * 200_000, b"w " * (1 << 19),
                 b"x" * (1 << 20), b"<a href='" + b"y" * (1 << 20), b"<script>" + b"'" * (1 << 20)):
        result = fast.normalize(data)
        assert len(result.nocomment) <= 2 * len(data) and len(result.notags) <= 2 * len(data) + 2048


def test_threads_and_a_cache_that_keeps_clearing(monkeypatch):
    """Tag bodies are cached per process: threads and a full cache change nothing."""
    rng = random.Random(9)
    documents = [generated(rng, rng.randint(50, 800)) for _ in range(24)]
    expected = [_outputs(reference.normalize(data)) for data in documents]
    monkeypatch.setattr(fast, "_BODY_CACHE_SIZE", 16)
    results: dict[int, tuple] = {}

    def work(offset: int) -> None:
        for at in range(offset, len(documents), 4):
            for _ in range(3):
                results[at] = _outputs(fast.normalize(documents[at]))

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[at] for at in range(len(documents))] == expected
    assert len(fast._BODY_CACHE) <= 16 + 4096


def test_data_uri_payload_decoding():
    """The base64 clean-up keeps exactly the alphabet's bytes (it used to go byte by byte)."""
    rng = random.Random(4)
    alphabet = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    for _ in range(300):
        payload = bytes(rng.choice(b"QUJDREVG=+/ \r\n%&\x00\xff") for _ in range(rng.randint(0, 60)))
        cleaned = bytes(b for b in payload if b in alphabet).rstrip(b"=")
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4 if len(cleaned) % 4 == 1 else None]
        cleaned += b"=" * (-len(cleaned) % 4)
        assert fast._decode_data_uri(b"text/plain;base64", payload) == base64.b64decode(cleaned)
        assert fast._decode_data_uri(b"text/plain", payload) == payload


class _count_tier1:  # noqa: N801  (used like a context, named like one)
    """Counts the spans tier 1 produced while installed."""

    def __init__(self) -> None:
        self.spans = 0
        self._original = fast._bulk_span

        def counting(*args):
            span = self._original(*args)
            self.spans += span is not None
            return span

        fast._bulk_span = counting

    def restore(self) -> None:
        fast._bulk_span = self._original


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rng = random.Random(seed)
    files = html_files(limit_files=100, limit_bytes=2_000_000)
    for case in range(count):
        if case % 3 == 2 and files:
            data = mutated(rng, rng.choice(files).read_bytes())
        else:
            data = generated(rng, rng.randint(1, rng.choice((10, 100, 1000, 4000))))
        assert_same(data, f"seed {seed} case {case}")
        if case % 1000 == 999:
            print(case + 1, "cases agree", flush=True)


if __name__ == "__main__":
    main()
