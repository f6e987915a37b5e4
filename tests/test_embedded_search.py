"""The installer-magic search equals the plain regex scan it replaces."""

from __future__ import annotations

import random

from clammail.unpack import embedded


def test_installer_hits_equal_the_alternation_scan():
    rng = random.Random(2)
    pieces = [
        b"\xef\xbe\xad\xdeNullsoftInst",
        b"\xa3\x48\x4b\xbe\x98\x6c\x4a\xa9\x99\x4c\x53\x0a\x86\xd6\x48\x7dAU3!EA05",
        b"AU3!EA06",
        b"InstallShield\x00" + b"x" * 292 + b"\x06" + b"\x00" * 7 + b"y" * 8 + b"\x00" * 4 + b"\x01",
        b"InstallShield\x00", b"NullsoftInst", b"zz" * 10,
    ]
    for _ in range(5000):
        data = b"".join(
            rng.choice(pieces) if rng.random() < 0.5 else rng.randbytes(rng.randint(0, 30))
            for _ in range(rng.randint(0, 8))
        )
        expected = [(m.start(), m.lastgroup) for m in embedded._INSTALLERS.finditer(data)]
        assert embedded._installer_hits(data) == expected
        assert embedded._installer_hits(memoryview(data)) == expected
