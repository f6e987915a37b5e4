#!/usr/bin/env python3
"""Peak Python allocations of one scan, for the largest messages of the corpus.

Usage: bench/bench_peak.py [--corpus DIR] [--count N] [--db PATH] [NAME.eml ...]

Scans each of the N largest .eml files (or the named ones) once (clean cache off) under
tracemalloc and prints the message size and the peak of memory allocated
by Python while scanning it: what a scan worker needs beyond its resting
size (allocations made by C libraries such as libarchive or hyperscan are
not counted).
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clammail.engine import Engine  # noqa: E402
from clammail.engine.scanner import ScanOptions  # noqa: E402
from clammail.signatures.loader import load_database  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=Path("/tmp/clammail-bench/corpus"))
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--db", default=str(REPO / "clammail" / "data"))
    p.add_argument("names", nargs="*", help="messages of the corpus to scan instead")
    args = p.parse_args()
    engine = Engine(load_database([args.db]), ScanOptions.from_mapping({"DisableCache": True}))
    files = ([args.corpus / name for name in args.names] if args.names
             else sorted(args.corpus.glob("*.eml"), key=os.path.getsize)[-args.count:])
    for path in files:
        data = path.read_bytes()
        tracemalloc.start()
        result = engine.scan_bytes(data)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{path.name}: {len(data) / 1e6:5.2f} MB, peak {peak / 1e6:6.1f} MB, "
              f"{', '.join(result.detections) or 'OK'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
