"""`clammail scan`: scan files and directories the way clamscan does.

Same output lines (`PATH: NAME FOUND`, `PATH: OK`, `PATH: Access denied`),
same summary block, same exit codes: 0 nothing found, 1 something found,
2 an error. Engine switches use clamscan's option names.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from dataclasses import dataclass

from clammail import __version__
from clammail.config.options import ENGINE_OPTIONS, Kind
from clammail.config.values import parse_bool, parse_size
from clammail.signatures.common import LoadOptions, SignatureError

BUNDLED_DATABASE = os.path.join(os.path.dirname(__file__), "data")
SYSTEM_DATABASE = "/var/lib/clamav"

# clamscan's long option -> clamd.conf option it sets.
_ENGINE_FLAGS = {
    "max-scantime": "MaxScanTime", "max-scansize": "MaxScanSize",
    "max-filesize": "MaxFileSize", "max-recursion": "MaxRecursion",
    "max-files": "MaxFiles", "max-embeddedpe": "MaxEmbeddedPE",
    "max-htmlnormalize": "MaxHTMLNormalize", "max-htmlnotags": "MaxHTMLNoTags",
    "max-scriptnormalize": "MaxScriptNormalize", "max-ziptypercg": "MaxZipTypeRcg",
    "pcre-match-limit": "PCREMatchLimit", "pcre-recmatch-limit": "PCRERecMatchLimit",
    "pcre-max-filesize": "PCREMaxFileSize",
    "alert-exceeds-max": "AlertExceedsMax", "alert-encrypted": "AlertEncrypted",
    "alert-encrypted-archive": "AlertEncryptedArchive",
    "alert-encrypted-doc": "AlertEncryptedDoc", "alert-broken": "AlertBrokenExecutables",
    "alert-broken-media": "AlertBrokenMedia", "alert-macros": "AlertOLE2Macros",
    "heuristic-alerts": "HeuristicAlerts",
    "heuristic-scan-precedence": "HeuristicScanPrecedence",
    "scan-pe": "ScanPE", "scan-elf": "ScanELF", "scan-mail": "ScanMail",
    "scan-ole2": "ScanOLE2", "scan-pdf": "ScanPDF", "scan-swf": "ScanSWF",
    "scan-html": "ScanHTML", "scan-xmldocs": "ScanXMLDOCS", "scan-hwp3": "ScanHWP3",
    "scan-onenote": "ScanOneNote",
    "scan-archive": "ScanArchive", "scan-image": "ScanImage",
    "detect-pua": "DetectPUA", "disable-cache": "DisableCache",
    # clammail's own (not clamscan's): open formats ClamAV 1.4.6 leaves closed.
    "extra-archive-formats": "ExtraArchiveFormats",
}


def _parse_value(option: str, text: str):
    kind = ENGINE_OPTIONS[option].kind
    if kind is Kind.BOOL:
        return parse_bool(text)
    if kind is Kind.SIZE:
        return parse_size(text)
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clammail scan", description="Scan files like clamscan.")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("-d", "--database", action="append", default=[], metavar="FILE/DIR")
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("-z", "--allmatch", action="store_true")
    p.add_argument("-i", "--infected", action="store_true", help="only print infected files")
    p.add_argument("-o", "--suppress-ok-results", action="store_true")
    p.add_argument("--no-summary", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--stdout", action="store_true", help="accepted for clamscan compatibility")
    p.add_argument("--official-db-only", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--matcher", choices=["auto", "hyperscan", "ahocorasick"], default="auto",
                   help="the multi-literal matcher backend")
    p.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")
    p.add_argument("-V", "--version", action="store_true")
    for flag, option in _ENGINE_FLAGS.items():
        p.add_argument(f"--{flag}", dest=f"engine:{option}", metavar="VALUE")
    return p


def _spell_out_switches(argv: list[str]) -> list[str]:
    """clamscan's `--flag[=yes/no]`: a bare on/off flag means `=yes`. (Giving
    it an optional argparse value would swallow the path that follows.)"""
    switches = {f"--{flag}" for flag, option in _ENGINE_FLAGS.items()
                if ENGINE_OPTIONS[option].kind is Kind.BOOL}
    return [f"{arg}=yes" if arg in switches else arg for arg in argv]


@dataclass
class Totals:
    directories: int = 0
    files: int = 0
    infected: int = 0
    errors: int = 0
    scanned_bytes: int = 0
    read_bytes: int = 0


class Progress:
    """A one-line progress display on a terminal, for long runs."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._last = 0.0
        self._shown = False

    def update(self, totals: Totals) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.5:
            return
        self._last = now
        sys.stderr.write(
            f"\r\x1b[Kscanned {totals.files} files, {totals.read_bytes / 1e6:.1f} MB, "
            f"{totals.infected} infected"
        )
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False


def default_databases() -> list[str]:
    """clamscan reads /var/lib/clamav; without databases there, the bundled set."""
    from clammail.signatures.loader import holds_databases

    return [SYSTEM_DATABASE if holds_databases(SYSTEM_DATABASE) else BUNDLED_DATABASE]


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(_spell_out_switches(argv))
    if args.version:
        print(f"clammail {__version__}")
        return 0
    overrides = {}
    for key, value in vars(args).items():
        if key.startswith("engine:") and value is not None:
            option = key.split(":", 1)[1]
            try:
                overrides[option] = _parse_value(option, value)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                print(f"ERROR: --{option}: {exc}", file=sys.stderr)
                return 2
    if args.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="LibClamAV debug: %(message)s")

    from clammail.engine import Engine, ScanOptions
    from clammail.signatures.loader import load_database

    started = time.time()
    load_options = LoadOptions(
        detect_pua=bool(overrides.get("DetectPUA", False)), official_only=args.official_db_only
    )
    try:
        database = load_database(args.database or default_databases(), load_options)
    except SignatureError as exc:
        print(f"ERROR: Can't load {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ERROR: Can't open database: {exc}", file=sys.stderr)
        return 2
    for warning in database.info.warnings:
        print(f"LibClamAV Warning: {warning}", file=sys.stderr)
    backend = None if args.matcher == "auto" else args.matcher
    engine = Engine(database, ScanOptions.from_mapping(overrides), matcher_backend=backend)

    totals = Totals()
    progress = Progress(sys.stderr.isatty() and not args.no_progress and not args.quiet)
    out = Output(args, progress)
    paths = args.paths or ["."]
    for path in paths:
        _scan_path(engine, path, args, totals, out, progress, top=True)
    progress.clear()
    if not args.no_summary and not args.quiet:
        _print_summary(database, totals, started)
    if totals.errors:
        return 2
    return 1 if totals.infected else 0


class Output:
    def __init__(self, args, progress: Progress):
        self.args = args
        self.progress = progress

    def line(self, text: str, ok: bool = False) -> None:
        if self.args.quiet or (ok and (self.args.infected or self.args.suppress_ok_results)):
            return
        self.progress.clear()
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def info(self, text: str) -> None:
        """A line clamscan prints unless --infected or --quiet (a skipped symbolic link)."""
        if not self.args.infected:
            self.line(text)

    def error(self, text: str) -> None:
        self.progress.clear()
        sys.stderr.write(text + "\n")


def _scan_path(engine, path, args, totals: Totals, out: Output, progress: Progress, top: bool):
    try:
        st = os.stat(path) if top else os.lstat(path)
    except OSError as exc:
        out.error(f"{path}: {exc.strerror}")
        out.error(f"WARNING: {path}: Can't access file")
        return
    if stat.S_ISDIR(st.st_mode):
        if not top and not args.recursive:
            return
        totals.directories += 1
        try:
            entries = os.listdir(path)  # readdir order, as clamscan walks
        except OSError as exc:
            out.error(f"{path}: {exc.strerror}")
            totals.errors += 1
            return
        for entry in entries:
            _scan_path(engine, os.path.join(path, entry), args, totals, out, progress, top=False)
        return
    if stat.S_ISLNK(st.st_mode):
        # clamscan follows links given on the command line only (--follow-*-symlinks=1).
        out.info(f"{path}: Symbolic link")
        return
    if not stat.S_ISREG(st.st_mode):
        return
    if not os.access(path, os.R_OK):
        out.line(f"{path}: Access denied")
        totals.errors += 1
        return
    result = engine.scan_file(path, allmatch=args.allmatch)
    totals.files += 1
    totals.read_bytes += st.st_size
    totals.scanned_bytes += result.scanned_bytes
    if result.error:
        out.line(f"{path}: {result.error} ERROR")
        totals.errors += 1
    elif result.detections:
        totals.infected += 1
        for name in result.detections:
            out.line(f"{path}: {name} FOUND")
    else:
        out.line(f"{path}: OK", ok=True)
    progress.update(totals)


def _print_summary(database, totals: Totals, started: float) -> None:
    elapsed = time.time() - started
    ratio = totals.scanned_bytes / totals.read_bytes if totals.read_bytes else 0.0
    lines = [
        "",
        "----------- SCAN SUMMARY -----------",
        f"Known viruses: {database.info.signatures}",
        f"Engine version: clammail {__version__}",
        f"Scanned directories: {totals.directories}",
        f"Scanned files: {totals.files}",
        f"Infected files: {totals.infected}",
    ]
    if totals.errors:
        lines.append(f"Total errors: {totals.errors}")
    lines += [
        f"Data scanned: {totals.scanned_bytes / 1048576:.2f} MB",
        f"Data read: {totals.read_bytes / 1048576:.2f} MB (ratio {ratio:.2f}:1)",
        f"Time: {elapsed:.3f} sec ({int(elapsed // 60)} m {int(elapsed % 60)} s)",
        f"Start Date: {time.strftime('%Y:%m:%d %H:%M:%S', time.localtime(started))}",
        f"End Date:   {time.strftime('%Y:%m:%d %H:%M:%S')}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
