#!/usr/bin/env python3
"""The PE unpackers' speed and memory: Debian's packed testfiles and large
UPX/FSG-style files packed by the tests' packers, unpacked in-process.

Usage:
    .venv/bin/python bench/bench_packers.py [--size-mb 4] [--rounds 3]

For each input: the best of --rounds wall-clock times of one unpack (the
whole cli_scanpe chain, detection included), the output size, throughput as
output MB/s, and the peak of Python allocations during one unpack
(tracemalloc, measured in a separate run: tracing slows Python down).
Numbers from a shared development machine are preliminary.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from packer_samples import Payload, fsg2_pe, upx_pe  # noqa: E402

from clammail.unpack.packers import _chain  # noqa: E402
from clammail.unpack.packers.common import read_packed_pe  # noqa: E402

TESTFILES = Path("/usr/share/clamav-testfiles")


class _Ctx:
    def check(self):
        pass

    def option(self, name):
        return {"MaxFileSize": 1 << 30}.get(name, 0)

    def scan_size_left(self):
        return None

    def limit_exceeded(self, limit):
        pass

    def debug(self, message):
        pass

    def alert(self, name):
        pass


def unpack(data: bytes) -> int:
    pe = read_packed_pe(data, strict=False)
    result = _chain(pe, _Ctx()) if pe else None
    return len(result[1]) if result else 0


def large_image(size: int) -> Payload:
    """Compressible code-like data: random 64-byte phrases, repeated and varied."""
    rng = random.Random(1)
    phrases = [rng.randbytes(64) for _ in range(256)]
    out = bytearray()
    while len(out) < size:
        phrase = bytearray(rng.choice(phrases))
        phrase[rng.randrange(64)] = rng.randrange(256)
        out += phrase
    return Payload(b"", bytes(out[:size]), 0x1000)


def measure(name: str, data: bytes, rounds: int) -> None:
    best = float("inf")
    produced = 0
    for _ in range(rounds):
        start = time.perf_counter()
        produced = unpack(data)
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    unpack(data)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rate = produced / best / 1e6 if best else 0
    print(f"{name:28} {len(data):>10} {produced:>10} {best * 1000:>9.1f} {rate:>8.2f} "
          f"{peak / 1e6:>8.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'input':28} {'in bytes':>10} {'out bytes':>10} {'best ms':>9} {'MB/s':>8} "
          f"{'peak MB':>8}")
    for path in sorted(TESTFILES.glob("clam-*.exe")):
        if path.name in ("clam-nsis.exe",):
            continue
        measure(path.name, path.read_bytes(), args.rounds)
    image = large_image(int(args.size_mb * (1 << 20)))
    for method in ("2b", "2d", "2e", "lzma"):
        measure(f"upx-{method} {args.size_mb:g} MB", upx_pe(image, method, "none"), args.rounds)
    measure(f"fsg-2.0 {args.size_mb:g} MB", fsg2_pe(image), args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
