"""Messages per second of Engine.scan_file on the mail benchmark corpus.

    .venv/bin/python bench/bench_mail.py [--profile] [--limit N] [--db PATH] [CORPUS]

CORPUS is a directory of .eml files written by shared/bench/mkcorpus.py (500
MIME messages, 49 MB); without one the corpus is made in a temporary
directory. The database is the bundled clammail/data unless --db says
otherwise; the clean cache is off, so every message is parsed and matched.
One process, one core: the number is the engine's own, without the daemon.
Times are wall clock and, in brackets, this process's CPU time (steadier on
a shared machine).

It also times the mail parse and decode alone: every object unpack_mail
yields is drained without being scanned.

--profile scans the corpus again under cProfile and prints where the time
goes by area (cumulative time of the functions that do each part of the
work; nested areas overlap: an archive inside a mail counts in both), then
the functions with the most time of their own. Numbers measured on the
shared development machine are preliminary.
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


def scan_all(engine, files: list[Path]) -> tuple[float, float, int]:
    infected = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for path in files:
        if engine.scan_file(str(path)).infected:
            infected += 1
    return time.perf_counter() - wall, time.process_time() - cpu, infected


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
    wall, cpu = time.perf_counter(), time.process_time()
    for data in datas:
        for _ in unpack_mail(data, ctx):
            pass
    return time.perf_counter() - wall, time.process_time() - cpu


# Areas of the work, by the function that does each (file, function name).
AREAS = [
    ("mail parse + decode", "clammail/unpack/mail.py", "unpack_mail"),
    ("  base64/QP/yEnc decoding", "clammail/unpack/mime_message.py", "decode_lines"),
    ("HTML normalization", "clammail/unpack/html.py", "unpack_html"),
    ("embedded archives/PE search", "clammail/unpack/embedded.py", "embedded_objects"),
    ("text normalization", "clammail/engine/textnorm.py", "normalize_text"),
    ("signature matching", "clammail/engine/sigmatch.py", "match_buffer"),
    ("executable matching", "clammail/engine/sigmatch.py", "match_executable"),
    ("hashes", "clammail/engine/scanner.py", "_match_hashes"),
    ("file typing", "clammail/formats/filetypes.py", "detect"),
    ("archives (zip, gz, ...)", "clammail/unpack/archive.py", "unpack_archive"),
    ("PE parsing", "clammail/unpack/executable.py", "unpack_pe"),
    ("PDF", "clammail/unpack/pdf.py", "unpack_pdf"),
]


def print_areas(stats: pstats.Stats, total: float) -> None:
    print(f"{'area':34s} {'seconds':>8s} {'share':>6s}   (cumulative, under cProfile)")
    for label, path, name in AREAS:
        seconds = sum(row[3] for (file, _line, func), row in stats.stats.items()
                      if func == name and file.endswith(path))
        print(f"{label:34s} {seconds:8.2f} {100 * seconds / total:5.1f}%")


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

    wall, cpu, infected = scan_all(engine, files)
    print(f"{len(files)} messages, {size / 1e6:.1f} MB, {infected} infected")
    print(f"Engine.scan_file: {wall:.2f} s [{cpu:.2f} s CPU], {len(files) / wall:.1f} "
          f"messages/s [{len(files) / cpu:.1f}], {1000 * wall / len(files):.1f} ms/message "
          f"[{1000 * cpu / len(files):.1f}]")
    wall, cpu = mail_parse_seconds(files)
    print(f"mail parse + decode alone (unpack_mail): {wall:.2f} s [{cpu:.2f} s CPU], "
          f"{1000 * wall / len(files):.2f} ms/message [{1000 * cpu / len(files):.2f}]")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        scan_all(engine, files)
        profiler.disable()
        stats = pstats.Stats(profiler)
        print()
        print_areas(stats, stats.total_tt)
        print()
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
