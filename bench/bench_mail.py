"""Messages per second of Engine.scan_file on the mail benchmark corpus.

    .venv/bin/python bench/bench_mail.py [--profile] [--limit N] [--db PATH] [CORPUS]

CORPUS is a directory of .eml files written by shared/bench/mkcorpus.py (500
MIME messages, 49 MB); without one the corpus is made in a temporary
directory. The database is the bundled clammail/data unless --db says
otherwise; the clean cache is off, so every message is parsed and matched.
One process, one core: the number is the engine's own, without the daemon.

--profile runs the scans again under cProfile and prints the hot functions
(own time and cumulative time) and the time spent in the mail parse and
decode alone (clammail.unpack.mail.unpack_mail, excluding the scans of the
objects it yields). Numbers measured on the shared development machine are
preliminary.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MKCORPUS = ROOT.parent.parent / "shared" / "bench" / "mkcorpus.py"


def corpus_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    out = Path(tempfile.mkdtemp(prefix="mailcorpus"))
    script = Path(os.environ.get("MKCORPUS", MKCORPUS))
    if not script.exists():
        script = Path("/work/shared/bench/mkcorpus.py")
    subprocess.run([sys.executable, str(script), str(out), "500"], check=True)
    return out


def make_engine(db_path: str):
    from clammail.engine import Engine
    from clammail.engine.scanner import ScanOptions
    from clammail.signatures.loader import load_database

    db = load_database([db_path])
    return Engine(db, ScanOptions.from_mapping({"DisableCache": True}))


def scan_all(engine, files: list[Path]) -> tuple[float, int]:
    infected = 0
    start = time.perf_counter()
    for path in files:
        if engine.scan_file(str(path)).infected:
            infected += 1
    return time.perf_counter() - start, infected


def mail_parse_seconds(files: list[Path]) -> float:
    """The mail parse and decode alone: every object unpack_mail yields is
    drained without scanning it."""
    from clammail.unpack.mail import unpack_mail

    class Ctx:
        def option(self, name):
            return {"MaxRecursion": 17, "MaxFiles": 10000, "AlertExceedsMax": False,
                    "PhishingScanURLs": True}.get(name)

        def check(self):
            pass

        def max_object_size(self):
            return 100 << 20

        def alert(self, name):
            pass

        def debug(self, text):
            pass

    ctx = Ctx()
    datas = [p.read_bytes() for p in files]
    start = time.perf_counter()
    for data in datas:
        for _ in unpack_mail(data, ctx):
            pass
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", nargs="?")
    ap.add_argument("--db", default=str(ROOT / "clammail" / "data"))
    ap.add_argument("--limit", type=int, default=0, help="scan only the first N messages")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()

    corpus = corpus_dir(args.corpus)
    files = sorted(corpus.glob("*.eml"))
    if args.limit:
        files = files[:args.limit]
    size = sum(p.stat().st_size for p in files)
    engine = make_engine(args.db)
    scan_all(engine, files[:5])  # warm up: imports, lazily built tables

    seconds, infected = scan_all(engine, files)
    print(f"{len(files)} messages, {size / 1e6:.1f} MB, {infected} infected")
    print(f"Engine.scan_file: {seconds:.2f} s, {len(files) / seconds:.1f} messages/s, "
          f"{1000 * seconds / len(files):.1f} ms/message")
    parse = mail_parse_seconds(files)
    print(f"mail parse + decode alone (unpack_mail): {parse:.2f} s, "
          f"{1000 * parse / len(files):.2f} ms/message")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        scan_all(engine, files)
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
