"""Signature files in the style of the public third-party sets people load next
to the official database (none is packaged in Debian or downloadable at build
time, so they are generated here, from a seed).

`sanesecurity_style` writes .ndb/.ldb/.hdb/.hsb/.ign2 files shaped like
SaneSecurity's and SecuriteInfo's: mail and HTML body signatures with
wildcards, alternatives and jumps, logical signatures with short fixed-offset
subsignatures, modifiers and PCREs, MD5 and SHA-256 hash lists (sizes and
`*`). `yara_repo_style` writes a .yar file shaped like the public rule
repositories': meta blocks, tags, `import "pe"`/`"math"` and rules using
them, string modifiers (ascii wide nocase fullword, and YARA 4's xor and
base64), hex strings with jumps, wildcards and alternatives, regexes,
`uint16(0) == 0x5A4D and filesize < 2MB` conditions, counts and offsets.
Both return probe files that their signatures fire on (and some they miss).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

WORDS = [b"invoice", b"payment", b"account", b"verify", b"password", b"urgent", b"bitcoin",
         b"wallet", b"refund", b"document", b"macro", b"enable", b"content", b"security"]


def _phrase(rng: random.Random, n: int) -> bytes:
    return b" ".join(rng.choice(WORDS) for _ in range(n))


def _hex(data: bytes) -> str:
    return data.hex()


def sanesecurity_style(directory: Path, rng: random.Random) -> list[bytes]:
    """Write the body, logical and hash files; return the probe contents."""
    probes: list[bytes] = []
    ndb, ldb, hdb, hsb = [], [], [], []
    for n in range(40):
        phrase = _phrase(rng, 3) + b" " + str(n).encode()
        body = b"\x01\xf7 " + b"Subject: " + phrase + b"\r\n" + _phrase(rng, 6) + b"\r\n"
        probes.append(body)
        pieces = [p for p in phrase.split(b" ") if len(p) >= 3]
        shape = n % 6
        if shape == 0:  # plain literal, anywhere
            sig = _hex(phrase)
        elif shape == 1:  # words separated by `*`
            sig = "*".join(_hex(p) for p in pieces)
        elif shape == 2:  # bounded jumps
            sig = "{-3}".join(_hex(p) for p in pieces)
        elif shape == 3:  # nibble and byte wildcards
            raw = _hex(phrase)
            sig = raw[:6] + "??" + raw[8:14] + "?" + raw[15:]
        elif shape == 4:  # alternatives of equal length
            raw = _hex(phrase)
            sig = raw[:8] + f"({raw[8:10]}|{raw[8:10].upper()}|2e)" + raw[10:]
        else:  # fixed offset after the 2-byte marker
            sig = _hex(b" Subject: ")
            ndb.append(f"Sanesecurity.Junk.{n}.Hdr:0:2:{sig}")
            continue
        target = (0, 0, 0, 4, 3)[n % 5]
        ndb.append(f"Sanesecurity.Junk.{n}:{target}:*:{sig}")
    # Logical signatures, as in foxhole/winnow/bofhland style files.
    for n in range(30):
        a, b = rng.sample(WORDS, 2)
        data = b"PK\x03\x04" + b"\x00" * 8 + a + b" and then " + b + b"\x00" * 4
        probes.append(data)
        shape = n % 6
        if shape == 0:  # the short fixed-offset subsignature clamd loads in its AC trie
            ldb.append(f"Sanesecurity.Foxhole.Zip_{n};Engine:51-255,Target:0;0&1;0:504b;"
                       f"{_hex(a)}::i")
        elif shape == 1:
            ldb.append(f"Sanesecurity.Foxhole.Zip_{n};Engine:51-255,Target:0,FileSize:10-4096;"
                       f"(0|1)&2;{_hex(a)};{_hex(a.upper())}::i;0:504b0304")
        elif shape == 2:  # a PCRE triggered by a literal
            ldb.append(f"Sanesecurity.Winnow.Pcre_{n};Engine:81-255,Target:0;0&1;{_hex(a)};"
                       f"0/{a.decode()}\\s+and\\s+then\\s+{b.decode()}/i")
        elif shape == 3:  # counts and an EOF offset
            ldb.append(f"Sanesecurity.Bofhland.Cnt_{n};Engine:51-255,Target:0;0>0&1;"
                       f"{_hex(b)};EOF-4:0000")
        elif shape == 4:  # wide and fullword modifiers
            ldb.append(f"Sanesecurity.Winnow.Word_{n};Engine:51-255,Target:0;0|1;"
                       f"{_hex(a)}::wa;{_hex(b)}::f")
        else:  # an engine range that excludes 1.4 (skipped silently, as clamd does)
            ldb.append(f"Sanesecurity.Future.{n};Engine:250-255,Target:0;0;{_hex(a)}")
    # Hash lists: MD5 with sizes, SHA-256 with sizes and `*` (needs FLEVEL 73).
    for n in range(20):
        data = b"\x01\xf7 spam image " + str(n).encode() + rng.randbytes(32)
        probes.append(data)
        hdb.append(f"{hashlib.md5(data).hexdigest()}:{len(data)}:Sanesecurity.SpamImg.{n}")
        size = "*" if n % 2 else str(len(data))
        hsb.append(f"{hashlib.sha256(data).hexdigest()}:{size}:Sanesecurity.Malware.{n}:73")
    (directory / "junk.ndb").write_text("\n".join(ndb) + "\n")
    (directory / "foxhole.ldb").write_text("\n".join(ldb) + "\n")
    (directory / "spamimg.hdb").write_text("\n".join(hdb) + "\n")
    (directory / "malwarehash.hsb").write_text("\n".join(hsb) + "\n")
    # An ignore list, as sigwhitelist.ign2 ships: drops two of the signatures above.
    (directory / "sigwhitelist.ign2").write_text(
        "Sanesecurity.Junk.7.UNOFFICIAL\nSanesecurity.SpamImg.3\n")
    probes.append(b"\x01\xf7 nothing to see here " * 4)
    return probes


def yara_repo_style(path: Path, rng: random.Random, modules: bool = True) -> list[bytes]:
    """Write one rules file; return the probe contents.

    With `modules`, some rules use the pe and math modules, YARA 4's string
    modifiers and functions, which ClamAV's YARA does not know: clamd skips
    them, and the first that fails after part of its condition stops clamd
    from evaluating every later rule (see yara.YaraRule.halts_evaluation).
    """
    rules = ['import "pe"', 'import "math"', ""]
    probes: list[bytes] = []
    for n in range(36):
        a, b, c = rng.sample(WORDS, 3)
        probe = (b"MZ\x90\x00" + b"\x00" * 60 + a + b" " + b + b"\x00" + c.upper()
                 + b" " + "wide".encode("utf-16-le") + b" end")
        probes.append(probe)
        meta = (f'   meta:\n      description = "Detects {a.decode()} samples"\n'
                f'      author = "generated"\n      date = "2021-0{n % 9 + 1}-1{n % 9}"\n'
                f'      score = {50 + n}\n')
        kind = n % 12
        if not modules and kind in (1, 3, 4, 8, 9, 11):
            kind = (0, 2, 5, 6, 7, 10)[n % 6]
        name = f"MAL_{a.decode().title()}_{n}"
        if kind == 0:
            strings = f'$s1 = "{a.decode()}" ascii wide\n      $s2 = "{b.decode()}" fullword'
            cond = "uint16(0) == 0x5A4D and filesize < 2MB and all of them"
        elif kind == 1:
            strings = f'$s1 = "{a.decode()}"\n      $s2 = "{c.decode()}" nocase'
            cond = "uint16(0) == 0x5A4D and pe.number_of_sections > 2 and 1 of them"
        elif kind == 2:
            hexa = " ".join(f"{x:02X}" for x in a)
            strings = f"$h1 = {{ {hexa[:8]} [0-4] {hexa[12:]} }}\n      $s1 = \"{b.decode()}\""
            cond = "$h1 and $s1"
        elif kind == 3:
            strings = f'$s1 = "{a.decode()}" xor\n      $s2 = "{b.decode()}"'
            cond = "any of them"
        elif kind == 4:
            strings = f'$s1 = "{a.decode()}"'
            cond = "$s1 and math.entropy(0, filesize) > 6.5"
        elif kind == 5:
            hexb = " ".join(f"{x:02X}" for x in b)
            strings = f"$h1 = {{ 4D 5A ?? 00 }}\n      $h2 = {{ {hexb} ( 00 | 20 ) }}"
            cond = "$h1 at 0 and #h2 >= 1"
        elif kind == 6:
            strings = f"$r1 = /{a.decode()}\\s{b.decode()}/ nocase"
            cond = "$r1 and filesize < 500KB"
        elif kind == 7:
            strings = f'$s1 = "{c.decode().upper()}" fullword\n      $s2 = "w" wide'
            cond = "all of them"
        elif kind == 8:
            hexa = " ".join(f"{x:02X}" for x in a)
            strings = f"$h1 = {{ {hexa} [-] 00 }}"
            cond = "$h1 and uint16be(0) == 0x4D5A"
        elif kind == 9:
            strings = f'$s1 = "{a.decode()}" base64\n      $s2 = "{b.decode()}"'
            cond = "$s2"
        elif kind == 10:
            strings = f'$s1 = "{a.decode()}"\n      $s2 = "{b.decode()}"'
            cond = "for any i in (1..#s1) : ( @s1[i] > 32 ) and $s2 in (0..200)"
        else:
            strings = f'$s1 = "{b.decode()}"'
            cond = "$s1 and pe.imphash() == \"f34d5f2d4577ed6d9ceec516c1f5a744\""
        tags = " : APT Generated" if n % 3 == 0 else ""
        rules.append(f"rule {name}{tags} {{\n{meta}   strings:\n      {strings}\n"
                     f"   condition:\n      {cond}\n}}\n")
    rules.append('rule Generic_Clean_Marker {\n   strings:\n      $s = "clean binary"\n'
                 '   condition:\n      $s\n}\n')
    path.write_text("\n".join(rules))
    probes.append(b"MZ\x90\x00" + b"\x00" * 60 + b"clean binary")
    return probes
