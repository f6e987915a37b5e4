#!/usr/bin/env python3
"""Decoding speed of the RAR 1.5 and RAR 2.0 decoders (clammail.unpack.rar_decode).

Usage:
    .venv/bin/python bench/bench_rar_old.py [--size-mb 1] [--rounds 2]

1 MiB of word text (and of random bytes) is packed by the tests' encoders
(tests/rar_builder.py: RAR 2.0 LZ, RAR 2.0 two-channel audio, RAR 1.5
literals) and decoded in-process; each line gives the best of --rounds
wall-clock times as output MB/s. Numbers from a shared development machine
are preliminary: print `uptime` beside them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import rar_builder as RB  # noqa: E402

from clammail.unpack.rar_decode import OldRarDecoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = int(args.size_mb * (1 << 20))
    rng = random.Random(3)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"\n", b" ", b"epsilon", b"0123456789"]
    text = b"".join(rng.choice(words) for _ in range(size // 3))[:size]
    cases = [
        ("RAR 2.0 LZ, text", 20, RB.pack20(text)),
        ("RAR 2.0 LZ, random bytes", 20, RB.pack20(rng.randbytes(size))),
        ("RAR 2.0 audio, 2 channels", 20, RB.pack20_audio(text, 2)),
        ("RAR 1.5 literals, text", 15, RB.pack15(text)),
    ]
    for name, version, packed in cases:
        best = None
        for _ in range(args.rounds):
            start = time.perf_counter()
            out = OldRarDecoder().unpack(packed, version, size, solid=False)
            elapsed = time.perf_counter() - start
            best = elapsed if best is None else min(best, elapsed)
        assert len(out) == size
        print(f"{name:28s} {size / best / 1e6:6.2f} MB/s  ({len(packed)} bytes packed)")


if __name__ == "__main__":
    main()
