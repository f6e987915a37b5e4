"""Conformance: Debian's clamd 1.4.6 and `clammail daemon` answer the same bytes alike.

Both daemons run on the same database and the same clamd.conf options; every
case sends both the same byte sequence and the replies must be equal byte for
byte, after replacing the version string (and the descriptor number in
FILDES replies, which is clamd's own). Replies inside IDSESSION come in the
order scans end, so those are compared as sorted lines.

The cases are generated: every command in every form (z, n, bare, with
garbage), path commands over a tree with missing, unreadable, excluded,
symlinked, special and too-deep entries, INSTREAM with split, oversized and
truncated chunks, sessions with mixed and invalid commands, FILDES.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from clamd_harness import EICAR, TEST_DB, exchange, make_root, start_pair

pytestmark = [pytest.mark.oracle, pytest.mark.slow]

TESTFILE = Path("/usr/share/clamav-testfiles/clam.exe")
QUIET = 2.0


def chunk(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def build_tree(root: Path) -> Path:
    db = root / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    scan = root / "scan"
    (scan / "sub" / "deeper" / "d1" / "d2" / "d3" / "d4").mkdir(parents=True)
    (scan / "excluded").mkdir()
    (scan / "clean_only").mkdir()
    (scan / "emptydir").mkdir()
    (scan / "noaccess").mkdir()
    (scan / "eicar.com").write_bytes(EICAR)
    (scan / "clean.txt").write_text("hello\n")
    (scan / "empty").write_bytes(b"")
    (scan / "sub" / "e2").write_bytes(EICAR)
    (scan / "sub" / "c2").write_text("clean\n")
    (scan / "sub" / "deeper" / "d1" / "d2" / "d3" / "d4" / "deep.com").write_bytes(EICAR)
    (scan / "sub" / "deeper" / "d1" / "mid.com").write_bytes(EICAR)
    (scan / "excluded" / "e3").write_bytes(EICAR)
    (scan / "clean_only" / "a").write_text("a\n")
    (scan / "clean_only" / "b").write_text("b\n")
    (scan / "noaccess" / "hidden.com").write_bytes(EICAR)
    (scan / "unread").write_bytes(EICAR)
    if TESTFILE.exists():
        shutil.copy(TESTFILE, scan / "clam.exe")
    os.symlink(scan / "eicar.com", scan / "link")
    os.symlink(scan / "sub", scan / "dirlink")
    os.symlink("/nonexistent/target", scan / "dangling")
    os.symlink(scan / "clean_only", scan / "sub" / "inner_dirlink")
    os.symlink(scan / "eicar.com", scan / "clean_only" / "inner_link")
    os.mkfifo(scan / "fifo")
    for path in [root, db, *db.iterdir(), scan, *scan.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod(0o755 if path.is_dir() else 0o644)
    (scan / "unread").chmod(0o000)
    (scan / "noaccess").chmod(0o000)
    return scan


def options(root: Path, **extra) -> dict:
    base = {
        "DatabaseDirectory": root / "db",
        "MaxDirectoryRecursion": 3,
        "ExcludePath": "/excluded$",
        "CommandReadTimeout": 3,
        "ReadTimeout": 3,
        "StreamMaxLength": "64K",
        "SelfCheck": 0,
    }
    if os.geteuid() == 0:
        base["User"] = "nobody"
    base.update(extra)
    return base


@pytest.fixture(scope="module")
def tree():
    root = make_root()
    scan = build_tree(root)
    yield root, scan
    (scan / "noaccess").chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


# -- normalization -----------------------------------------------------------

_VERSION = re.compile(rb"(ClamAV 1\.4\.6|clammail [0-9][0-9.]*)(/[0-9]+/[^|\n\0]*)?")
_FD = re.compile(rb"fd\[[0-9]+\]")


def normalize(reply: bytes, unordered: bool = False) -> bytes:
    reply = _VERSION.sub(b"<VERSION>", reply)
    reply = _FD.sub(b"fd[N]", reply)
    if unordered:
        tail = b""
        for marker in (b"<QUIET>", b"<RESET>"):
            if reply.endswith(marker):
                reply, tail = reply[: -len(marker)], marker
        parts = re.split(rb"(?<=[\n\0])", reply)
        reply = b"".join(sorted(p for p in parts if p)) + tail
    return reply


# -- cases -----------------------------------------------------------------------

SIMPLE = ["PING", "VERSION", "VERSIONCOMMANDS", "DETSTATS", "DETSTATSCLEAR", "END",
          "IDSESSION", "INSTREAM", "FILDES", "NOSUCH", "PINGPONG", "ping", "SCAN", "SESSION"]
PATH_COMMANDS = ["SCAN", "CONTSCAN", "MULTISCAN", "ALLMATCHSCAN"]


def forms(command: bytes) -> list[bytes]:
    return [
        b"n" + command + b"\n", b"z" + command + b"\0", command, command + b"\n",
        command + b"\r\n", b"n" + command + b"\r\n", b"n" + command + b" \n",
        b"z" + command + b"\0garbage", b"n" + command + b"\nnPING\n",
    ]


def path_targets(scan: Path) -> list[str]:
    names = ["eicar.com", "clean.txt", "empty", "sub", "sub/e2", "sub/deeper", "excluded",
             "excluded/e3", "clean_only", "emptydir", "noaccess", "noaccess/hidden.com",
             "unread", "link", "dirlink", "dangling", "fifo", "nonexistent", "clam.exe"]
    targets = [str(scan / n) for n in names]
    targets += [str(scan) + "/", "//" + str(scan / "eicar.com").lstrip("/"),
                str(scan / "sub") + "//", str(scan / "sub/../eicar.com"), "relative/path",
                "", " " + str(scan / "eicar.com"), "/dev/null", "/"[:0] + str(scan / "clean_only/")]
    return targets


def generate(scan: Path) -> list[tuple[str, object, str, bool]]:
    """(case name, packets, transport, unordered)."""
    cases: list[tuple[str, object, str, bool]] = []
    for command in SIMPLE:
        for i, data in enumerate(forms(command.encode())):
            cases.append((f"{command}/form{i}", data, "tcp", False))
    for command in PATH_COMMANDS:
        for target in path_targets(scan):
            arg = target.encode()
            for form, data in (("n", b"n%s %s\n"), ("z", b"z%s %s\0"), ("bare", b"%s %s")):
                cases.append((f"{command} {target!r} {form}", data % (command.encode(), arg),
                              "tcp", command == "MULTISCAN"))
    # Argument separators and missing arguments.
    for data in (b"nSCAN\n", b"nSCAN \n", b"zSCAN\0", b"nSCAN" + str(scan / "eicar.com").encode() + b"\n",
                 b"nSCAN\t" + str(scan / "eicar.com").encode() + b"\n", b"nCONTSCAN\n",
                 b"nALLMATCHSCAN\n", b"ALLMATCHSCAN " + str(scan).encode()):
        cases.append((f"arg {data!r}", data, "tcp", False))
    # Malformed and partial input.
    for data in (b"\n", b"\0", b"z\0", b"n\n", b"nPIN", b"zPING", b"n", b"x" * 5000,
                 b"n" + b"A" * 5000 + b"\n", b"\xff\xfe\x00\x01", b"nPING\0", b"zPING\n"):
        cases.append((f"malformed {data[:20]!r}", data, "tcp", False))
    cases.append(("split nPING", [b"nPI", b"NG\n"], "tcp", False))
    cases.append(("split bare PING", [b"PI", b"NG"], "tcp", False))
    # INSTREAM.
    for prefix in (b"nINSTREAM\n", b"zINSTREAM\0"):
        tag = prefix[:1].decode()
        streams = {
            "eicar": chunk(EICAR) + chunk(b""),
            "clean": chunk(b"hello") + chunk(b""),
            "nothing": chunk(b""),
            "split": chunk(EICAR[:10]) + chunk(EICAR[10:40]) + chunk(EICAR[40:]) + chunk(b""),
            "bytewise": b"".join(chunk(EICAR[i:i + 1]) for i in range(len(EICAR))) + chunk(b""),
            "oversized": struct.pack(">I", 65 * 1024),
            "quota": chunk(b"a" * 40000) + chunk(b"b" * 30000) + chunk(b""),
            "exact": chunk(b"a" * 65536) + chunk(b""),
            "truncated-size": b"\0\0",
            "truncated-data": struct.pack(">I", 100) + b"abc",
            "garbage-after": chunk(EICAR) + chunk(b"") + b"nPING\n",
            "huge": b"\xff\xff\xff\xff",
        }
        for name, body in streams.items():
            cases.append((f"INSTREAM {tag} {name}", prefix + body, "tcp", False))
        cases.append((f"INSTREAM {tag} packets", [prefix, chunk(EICAR)[:3], chunk(EICAR)[3:], chunk(b"")],
                      "tcp", False))
    # Sessions.
    eicar = str(scan / "eicar.com").encode()
    clean = str(scan / "clean.txt").encode()
    session_bodies = {
        "ping-end": b"nPING\nnEND\n",
        "mixed": b"nPING\nnVERSION\nnSCAN " + eicar + b"\nnSCAN " + clean + b"\nnEND\n",
        "z-mixed": b"zPING\0zSCAN " + eicar + b"\0nPING\nzEND\0",
        "instream": b"nINSTREAM\n" + chunk(EICAR) + chunk(b"") + b"nPING\nnEND\n",
        "instream-clean": b"zINSTREAM\0" + chunk(b"abc") + chunk(b"") + b"zEND\0",
        "instream-oversized": b"nPING\nnINSTREAM\n" + struct.pack(">I", 70000),
        "missing": b"nSCAN /nonexistent\nnEND\n",
        "versioncommands": b"nVERSIONCOMMANDS\nnEND\n",
        "no-end": b"nPING\n",
        "end-only": b"nEND\n",
        "end-then-more": b"nEND\nnPING\n",
        "bare-inside": b"nPING\nPING\n",
        "bare-first": b"PING",
        "unknown": b"nPING\nnFOO\nnPING\n",
        "nested": b"nIDSESSION\n",
        "fildes-tcp": b"nFILDES\nx",
    }
    for bad in ("CONTSCAN", "MULTISCAN", "ALLMATCHSCAN", "SHUTDOWN", "QUIT", "RELOAD",
                "DETSTATS", "DETSTATSCLEAR"):
        arg = b" " + eicar if bad in ("CONTSCAN", "MULTISCAN", "ALLMATCHSCAN") else b""
        session_bodies[f"invalid-{bad}"] = b"nPING\nn" + bad.encode() + arg + b"\nnPING\n"
    for name, body in session_bodies.items():
        for start in (b"nIDSESSION\n", b"zIDSESSION\0"):
            cases.append((f"session {start[:1].decode()} {name}", start + body, "tcp", True))
    cases.append(("session packets", [b"zIDSESSION\0", b"zPING\0", b"zSCAN " + eicar + b"\0", b"zEND\0"],
                  "tcp", True))
    # The local socket: the same answers, and FILDES.
    for name, data in (("ping", b"zPING\0"), ("scan", b"nSCAN " + eicar + b"\n"),
                       ("fildes-none", b"nFILDES\n"), ("fildes-byte", b"nFILDES\nx"),
                       ("bare-fildes", b"FILDES\n")):
        cases.append((f"unix {name}", data, "unix", False))
    return cases


def run_case(pair, case) -> tuple[str, bytes, bytes]:
    name, packets, transport, unordered = case
    answers = []
    for daemon in (pair.clamd, pair.clammail):
        target = ("unix", daemon.unix) if transport == "unix" else ("tcp", daemon.port)
        answers.append(normalize(exchange(target, packets, quiet=QUIET), unordered))
    return name, answers[0], answers[1]


def fildes_cases(pair, scan: Path) -> list[tuple[str, bytes, bytes]]:
    results = []
    for name, path, packets in (
        ("eicar", scan / "eicar.com", [b"nFILDES\n", b"x"]),
        ("eicar-same-packet", scan / "eicar.com", [b"zFILDES\0x"]),
        ("clean", scan / "clean.txt", [b"nFILDES\n", b"x"]),
        ("directory", scan / "sub", [b"nFILDES\n", b"x"]),
        ("without-command", scan / "eicar.com", [b"x"]),
        ("session", scan / "eicar.com", [b"nIDSESSION\nnFILDES\n", b"x"]),
    ):
        answers = []
        for daemon in (pair.clamd, pair.clammail):
            fd = os.open(path, os.O_RDONLY)
            try:
                answers.append(normalize(exchange(("unix", daemon.unix), packets, quiet=QUIET, fd=fd)))
            finally:
                os.close(fd)
        results.append((f"FILDES {name}", *answers))
    return results


def compare(pair, cases, extra=()) -> list[str]:
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda c: run_case(pair, c), cases))
    results += list(extra)
    failures = [f"{name}:\n  clamd:    {a!r}\n  clammail: {b!r}" for name, a, b in results if a != b]
    return failures, len(results)


@pytest.fixture(scope="module")
def pair(tree):
    root, _ = tree
    plain = root / "plain"
    plain.mkdir()
    plain.chmod(0o755)
    p = start_pair(plain, options(root))
    yield p
    p.stop()


def test_same_replies_as_clamd(pair, tree):
    _, scan = tree
    cases = generate(scan)
    failures, count = compare(pair, cases, fildes_cases(pair, scan))
    assert count > 500
    assert not failures, f"{len(failures)} of {count} cases differ:\n" + "\n".join(failures[:40])


def test_same_replies_with_other_options(tree):
    """Following symlinks, no cross-filesystem, ALLMATCHSCAN disabled, no recursion limit."""
    root, scan = tree
    other = root / "other"
    other.mkdir()
    other.chmod(0o755)
    p = start_pair(other, options(root, FollowDirectorySymlinks="yes", FollowFileSymlinks="yes",
                                  AllowAllMatchScan="no", CrossFilesystems="no",
                                  MaxDirectoryRecursion=0, ExcludePath=["/excluded$", "clean_only"]))
    try:
        cases = [c for c in generate(scan) if c[0].split()[0] in PATH_COMMANDS]
        failures, count = compare(p, cases)
    finally:
        p.stop()
    assert count > 200
    assert not failures, f"{len(failures)} of {count} cases differ:\n" + "\n".join(failures[:40])
