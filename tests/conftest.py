"""Shared test helpers: the ClamAV oracle and clammail side by side.

`clamscan_results` runs Debian's clamscan 1.4.6 on paths with given signature
files; `clammail_results` runs our engine on the same input. Both return
{path: [names]} so a differential test is one comparison.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from milter_harness import scanners  # noqa: F401  (fixtures for every test)
from postfix_harness import postfix, postfix_factory  # noqa: F401  (fixtures for every test)

REPO = Path(__file__).resolve().parents[1]
TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_TEST_FILE_SIG = (
    "71e7b604d18aefd839e51a39c88df8383bb4c071dc31f87f00a2b5df580d4495:544:ClamAV-Test-File"
)


def _find_unit_data() -> Path | None:
    candidates = [
        os.environ.get("CLAMMAIL_UNIT_DATA"),
        REPO.parent / "shared" / "clamav-unit-data",
        Path("/work/shared/clamav-unit-data"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate, "pe_allmatch").is_dir():
            return Path(candidate)
    return None


UNIT_DATA = _find_unit_data()


def shared_bench_script(name: str) -> Path:
    """A script of ../shared/bench (the benchmark database and corpus builders)."""
    for base in (REPO.parent / "shared", Path("/work/shared")):
        if (base / "bench" / name).exists():
            return base / "bench" / name
    pytest.fail(f"../shared/bench/{name} is missing: the shared benchmark scripts sit "
                "beside the checkout")


def need_unit_data() -> Path:
    """ClamAV's unit-test signatures and samples; the test fails without them."""
    if UNIT_DATA is None:
        pytest.fail("ClamAV's unit-test data is missing: put it in ../shared/clamav-unit-data "
                    "(beside the checkout) or name it in CLAMMAIL_UNIT_DATA")
    return UNIT_DATA


# The fast multi-literal matcher backend the engine is expected to have: the
# tests of that backend fail, not skip, where it cannot be loaded. It is
# Debian's libhyperscan5 through clammail's own binding; Debian builds it for
# amd64 only, and CLAMMAIL_MATCHER=ahocorasick runs the suite on the fallback.
FAST_MATCHER = "hyperscan"


def need_fast_matcher() -> str:
    """The fast matcher's backend name; the test fails when it is expected and missing."""
    from clammail.engine.match import available_backends

    if FAST_MATCHER not in available_backends():
        if os.environ.get("CLAMMAIL_MATCHER") == "ahocorasick" or platform.machine() != "x86_64":
            pytest.skip("the fast matcher is not expected here")
        pytest.fail(f"the fast matcher ({FAST_MATCHER}) does not load (libhs.so.5): "
                    f"`make test` installs libhyperscan5 (packaging/apt-packages.txt)")
    return FAST_MATCHER


def wait_until(predicate, timeout: float = 60.0) -> bool:
    """Whether `predicate()` came true within `timeout` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def need_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs it from {REPO}/packaging")
    return path


def parse_scan_output(text: str) -> dict[str, list[str]]:
    """clamscan-style lines -> {path: [names found]} ([] for OK)."""
    results: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("-----------"):
            break
        if line.endswith(": OK"):
            results.setdefault(line[: -len(": OK")], [])
        elif line.endswith(" FOUND"):
            path, _, name = line[: -len(" FOUND")].rpartition(": ")
            results.setdefault(path, []).append(name)
        elif line.endswith(" ERROR"):
            path, _, reason = line[: -len(" ERROR")].rpartition(": ")
            results.setdefault(path, []).append(f"ERROR {reason}")
    return results


def clamscan_results(databases, paths, *extra: str, allmatch: bool = False):
    """Run clamscan (the oracle) and return (returncode, {path: [names]}, stderr)."""
    cmd = [need_program("clamscan"), "--no-summary"]
    if allmatch:
        cmd.append("--allmatch")
    for db in databases:
        cmd += ["-d", str(db)]
    cmd += list(extra) + [str(p) for p in paths]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return proc.returncode, parse_scan_output(proc.stdout), proc.stderr


def clammail_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `clammail` from this checkout in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "clammail", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )


def clammail_results(databases, paths, *extra: str, allmatch: bool = False):
    """Run `clammail scan` and return (returncode, {path: [names]}, stderr)."""
    args = ["scan", "--no-summary", "--no-progress"]
    if allmatch:
        args.append("--allmatch")
    for db in databases:
        args += ["-d", str(db)]
    args += list(extra) + [str(p) for p in paths]
    proc = clammail_cli(*args)
    return proc.returncode, parse_scan_output(proc.stdout), proc.stderr


@pytest.fixture
def sigdir(tmp_path):
    """A fresh directory for signature files."""
    d = tmp_path / "sigs"
    d.mkdir()
    return d
