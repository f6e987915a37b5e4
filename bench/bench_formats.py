"""Decoding speed of clammail's SZDD, ARJ, CHM and SIS readers (one process, no engine).

    .venv/bin/python bench/bench_formats.py [--size BYTES]

Builds one archive per format and method from the same text (Debian's
mscompress, arj and chmcmd must be installed; SIS is written by the test
helper), unpacks it with the clammail unpacker and prints bytes out per
second. The ARJ and SZDD decoders are pure Python; CHM uses libmspack (C).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_formats_extra as T  # noqa: E402

from clammail.unpack.arj import unpack_arj  # noqa: E402
from clammail.unpack.chm import unpack_chm  # noqa: E402
from clammail.unpack.sis import unpack_sis  # noqa: E402
from clammail.unpack.szdd import unpack_szdd  # noqa: E402


class _Context:
    """No limits, no deadline."""

    def alert(self, name): pass
    def check(self): pass
    def max_object_size(self): return 1 << 62
    def limit_exceeded(self, limit): pass
    def scan_size_left(self): return None
    def option(self, name): return {"MaxFileSize": 0, "MaxScanSize": 0}.get(name)
    def debug(self, message): pass


def measure(label: str, unpack, blob: bytes, expected: int) -> None:
    start = time.perf_counter()
    out = sum(len(member.data) for member in unpack(blob, _Context()))
    seconds = time.perf_counter() - start
    print(f"{label:10} {len(blob):>10} -> {out:>10} bytes  {seconds:6.2f} s  "
          f"{expected / seconds / 1e6:6.2f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2_000_000)
    args = parser.parse_args()
    data = T.payload("bench", args.size)
    measure("szdd", unpack_szdd, T.szdd_tool(data), len(data))
    for method in range(5):
        measure(f"arj -m{method}", unpack_arj, T.arj_tool([("b.txt", data)], method), len(data))
    measure("chm (lzx)", unpack_chm, T.chm_fixed(T.chm_tool([("index.html", b"<html/>"),
                                                              ("b.txt", data)])), len(data))
    measure("sis", unpack_sis, T.sis([("b", [data])]), len(data))


if __name__ == "__main__":
    main()
