"""Check that the fast anchor path picks exactly the anchors of a full compile.

For every line of an .ndb file, `hexsig_anchors` (the fast path the loader
uses) must equal `plan_anchors(parse_hexsig(...))` (the full compile the
matcher is built from), or both must refuse the line with the same reason.
With --save FILE the fast results are pickled; with --compare FILE they are
checked against such a file (e.g. one saved by an older version).

    .venv/bin/python bench/check_anchors.py /tmp/clammail-bench/bigdb-1/synth.ndb
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time

from clammail.signatures.anchors import hexsig_anchors, plan_anchors
from clammail.signatures.common import SignatureError
from clammail.signatures.hexsig import parse_hexsig, parse_offset


def _outcome(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except SignatureError as error:
        return ("refused", error.reason)


def _full_anchors(hexsig, offset, target):
    return plan_anchors(parse_hexsig(hexsig, offset, target, ldb=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ndb")
    parser.add_argument("--save")
    parser.add_argument("--compare")
    args = parser.parse_args()
    lines = [line for line in open(args.ndb, encoding="latin-1").read().splitlines()
             if line and not line.startswith("#")]
    fast_results = []
    mismatches = 0
    fast_seconds = 0.0
    for line in lines:
        _name, target, offset_text, hexsig = line.split(":", 5)[:4]
        offset = _outcome(parse_offset, offset_text)
        if isinstance(offset, tuple):
            fast_results.append(offset)
            continue
        start = time.perf_counter()
        fast = _outcome(hexsig_anchors, hexsig, offset, int(target), ldb=False)
        fast_seconds += time.perf_counter() - start
        full = _outcome(_full_anchors, hexsig, offset, int(target))
        fast_results.append(fast)
        if fast != full:
            mismatches += 1
            if mismatches <= 10:
                print(f"MISMATCH {line}\n  fast {fast}\n  full {full}")
    print(f"{len(lines)} signatures, {mismatches} differ from the full compile; "
          f"fast path {fast_seconds:.2f} s")
    if args.save:
        with open(args.save, "wb") as out:
            pickle.dump(fast_results, out)
    if args.compare:
        with open(args.compare, "rb") as saved:
            before = pickle.load(saved)
        changed = sum(1 for a, b in zip(before, fast_results, strict=True) if a != b)
        print(f"{changed} differ from {args.compare}")
        mismatches += changed
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
