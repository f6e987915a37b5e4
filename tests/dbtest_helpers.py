"""Helpers for the database-loading tests: run clamscan/clammail and read their verdicts."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, need_program, parse_scan_output


def _run(cmd: list[str]) -> tuple[int, dict[str, list[str]], str, int | None]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                          errors="surrogateescape")
    known = re.search(r"^Known viruses: (\d+)$", proc.stdout, re.M)
    return (proc.returncode, parse_scan_output(proc.stdout), proc.stderr,
            int(known.group(1)) if known else None)


def clamscan(databases, paths, *extra: str):
    """(returncode, {path: names}, stderr, Known viruses) from clamscan --allmatch."""
    cmd = [need_program("clamscan"), "--allmatch"]
    for db in databases:
        cmd += ["-d", str(db)]
    return _run(cmd + list(extra) + [str(p) for p in paths])


def clammail(databases, paths, *extra: str):
    """The same from `clammail scan --allmatch`."""
    cmd = [sys.executable, "-m", "clammail", "scan", "--allmatch", "--no-progress"]
    for db in databases:
        cmd += ["-d", str(db)]
    return _run(cmd + list(extra) + [str(p) for p in paths])


def both(databases, paths, *extra: str):
    return clamscan(databases, paths, *extra), clammail(databases, paths, *extra)
