#!/usr/bin/env python3
"""Large binaries: `clammail scan` (fast path and fallback) beside `clamscan`: wall time, peak RSS.

Usage: bench/bench_bigfiles.py [--db DIR]... [--runs N] [--target PATH]... [--skip-fallback-dir]

Targets (by default): a generated 100 MB ELF-like file (`make_elf_like`:
/usr/bin/python3.11 with the bytes of other /usr/bin programs appended
until it is 100 MB, so an ELF header and sections up front and real code
after), /usr/bin/node (99 MB) alone, and the whole /usr/bin directory
(not recursive). Databases: the bundled clammail/data and, when present,
/tmp/clammail-bench/bigdb-1 (mkdb.py's 3.1M signatures).

Each program runs as a fresh process (database load included) and is
measured with wait4(): wall seconds, user+system CPU, peak RSS (ru_maxrss,
the largest of the process and its children). "load" is the same command on
a directory holding one 1 KB file: the memory of the loaded database, which
the scan of a big file adds to. clammail runs with `--matcher hyperscan`
(the fast path, Debian's libhyperscan5) and `--matcher ahocorasick` (the
portable fallback). The verdicts of all runs are compared. The best of N
runs is kept; `uptime` is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLAMMAIL = REPO / ".venv" / "bin" / "clammail"
ELF_LIKE = Path("/tmp/clammail-bench/elf-like-100m.bin")
ELF_SIZE = 100 * 1000 * 1000


def make_elf_like(path: Path = ELF_LIKE, size: int = ELF_SIZE) -> Path:
    """python3.11 followed by other /usr/bin programs (sorted by name), cut at `size`."""
    if path.exists() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    first = Path("/usr/bin/python3.11")
    others = sorted(p for p in Path("/usr/bin").iterdir()
                    if p.is_file() and not p.is_symlink() and p != first)
    with open(path, "wb") as out:
        for source in [first, *others]:
            left = size - out.tell()
            if left <= 0:
                break
            out.write(source.read_bytes()[:left])
        if out.tell() < size:
            out.write(bytes(size - out.tell()))
    return path


def measured(cmd: list[str], env: dict | None = None) -> dict:
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024, "exit": os.waitstatus_to_exitcode(status),
            "stdout": text}


def command(program: str, db: Path, target: Path) -> list[str]:
    if program == "clamscan":
        return ["clamscan", "--no-summary", "-d", str(db), str(target)]
    matcher = program.split(":")[1]
    return [str(CLAMMAIL), "scan", "--no-summary", "--no-progress", "--matcher", matcher,
            "-d", str(db), str(target)]


def verdicts(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        path, sep, rest = line.rpartition(": ")
        if sep:
            found[path] = rest
    return found


def best_of(cmd: list[str], runs: int) -> dict:
    return min((measured(cmd) for _ in range(runs)), key=lambda r: r["wall"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, action="append")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--target", type=Path, action="append")
    p.add_argument("--programs", default="clamscan,clammail:hyperscan,clammail:ahocorasick")
    p.add_argument("--skip-fallback-dir", action="store_true",
                   help="no pyahocorasick run over a whole directory (it takes minutes)")
    args = p.parse_args()
    dbs = args.db or [REPO / "clammail" / "data"] + [
        d for d in [Path("/tmp/clammail-bench/bigdb-1")] if d.exists()]
    targets = args.target or [make_elf_like(), Path("/usr/bin/node"), Path("/usr/bin")]
    programs = args.programs.split(",")
    print("uptime:", os.getloadavg(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as small:
        Path(small, "small.bin").write_bytes(os.urandom(1024))
        for db in dbs:
            for program in programs:
                load = best_of(command(program, db, Path(small)), args.runs)
                for target in targets:
                    if (target.is_dir() and program.endswith("ahocorasick")
                            and args.skip_fallback_dir):
                        continue
                    result = best_of(command(program, db, target), args.runs)
                    row = {"database": db.name, "program": program, "target": str(target),
                           "wall s": round(result["wall"], 2), "cpu s": round(result["cpu"], 2),
                           "peak RSS MB": round(result["rss_mb"], 1),
                           "load wall s": round(load["wall"], 2),
                           "load peak RSS MB": round(load["rss_mb"], 1),
                           "exit": result["exit"], "loadavg": os.getloadavg()[0]}
                    rows.append((row, verdicts(result["stdout"])))
                    print(json.dumps(row), flush=True)
    reference: dict[tuple, dict] = {}
    for row, found in rows:
        key = (row["database"], row["target"])
        if key not in reference:
            reference[key] = found
        elif found != reference[key]:
            differing = sorted(set(found.items()) ^ set(reference[key].items()))
            print(f"verdicts differ: {row['program']} {key}: {differing[:10]}")
    print("uptime:", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
