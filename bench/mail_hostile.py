"""Time clammail's mail parse on large hostile mails (and clamscan's, for scale).

    .venv/bin/python bench/mail_hostile.py [--clamscan] [DIR]

Writes the mails to DIR (a temporary directory by default), scans each with
the engine in this process and prints seconds and the peak of Python's
allocations during the scan. With --clamscan
it also times clamscan 1.4.6 on the same files. Numbers measured on a busy
shared machine are preliminary.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HEAD = "From: a@b\nTo: c@d\nMIME-Version: 1.0\n"


def mails() -> dict[str, bytes]:
    m: dict[str, str | bytes] = {}
    parts = "".join("--B\nContent-Type: text/plain\n\np\n" for _ in range(100_000))
    m["parts100k_mixed"] = HEAD + "Content-Type: multipart/mixed; boundary=B\n\n" + parts
    m["parts100k_related"] = HEAD + "Content-Type: multipart/related; boundary=B\n\n" + parts
    n = 10_000
    m["nest10k_multipart"] = HEAD + "Content-Type: multipart/mixed; boundary=B0\n\n" + "".join(
        f"--B{i}\nContent-Type: multipart/mixed; boundary=B{i + 1}\n\n" for i in range(n))
    m["nest10k_rfc822"] = HEAD + "Content-Type: message/rfc822\n\n" * n + "From: x\n\nx\n"
    m["broken_base64_8MB"] = HEAD + "Content-Type: application/octet-stream\n" \
        "Content-Transfer-Encoding: base64\n\n" + ("%%!!@@##" * 10 + "\n") * 100_000
    m["headers_200k"] = HEAD + "".join(f"X-H{i}: {'v' * 50}\n" for i in range(200_000))
    m["folds_300k"] = HEAD + "Content-Type: text/plain;\n" + " x=y\n" * 300_000
    m["unclosed_boundary_4MB"] = HEAD + "Content-Type: multipart/mixed; boundary=B\n\n--B\n" \
        "Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(os.urandom(3_000_000)).decode()
    m["nul_5MB"] = b"From: a\n" + b"\0" * 5_000_000
    m["junk8bit_5MB"] = (HEAD + "\n").encode() + bytes(range(128, 256)) * 40_000
    m["random_5MB"] = b"From: a\nContent-Type: multipart/mixed; boundary=B\n\n" + os.urandom(5_000_000)
    m["qp_line_9MB"] = HEAD + "Content-Type: text/plain\nContent-Transfer-Encoding: " \
        "quoted-printable\n\n" + "=41" * 3_000_000 + "\n"
    m["mbox_50k"] = "".join(f"From a@b Mon Jan  1 00:00:00 2024\nFrom: a\n"
                            f"Content-Type: text/plain\n\nmsg {i}\n\n" for i in range(50_000))
    m["uu_12MB"] = HEAD + "\nbegin 644 a\n" + ("M" + "A" * 60 + "\n") * 200_000 + "end\n"
    m["bounces_20k"] = HEAD + "Content-Type: text/plain\n\n" + (
        "From MAILER-DAEMON Mon Jan  1 00:00:00 2024 12345\nContent-Type: application/x\n\nx\n"
    ) * 20_000
    return {k: v if isinstance(v, bytes) else v.encode("latin-1") for k, v in m.items()}


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    with_clamscan = "--clamscan" in sys.argv
    out = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="mailbench"))
    out.mkdir(parents=True, exist_ok=True)
    from clammail.engine import Engine
    from clammail.engine.scanner import ScanOptions
    from clammail.signatures.loader import load_database

    db_file = out / "bench.hdb"
    db_file.write_text("0123456789abcdef0123456789abcdef:1:Nothing\n")
    db = load_database([str(db_file)])
    for name, data in mails().items():
        path = out / f"{name}.eml"
        path.write_bytes(data)
        engine = Engine(db, ScanOptions.from_mapping({"DisableCache": True}))
        start = time.perf_counter()
        result = engine.scan_file(str(path))
        ours = time.perf_counter() - start
        # Python's own allocations during a second scan (the process RSS would
        # count this script's copies of every mail)
        tracemalloc.start()
        Engine(db, ScanOptions.from_mapping({"DisableCache": True})).scan_file(str(path))
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        line = f"{name:24s} {len(data) / 1e6:6.1f} MB  clammail {ours:6.2f} s  peak {peak:5.0f} MB"
        line += f"  {result.detections or 'OK'}"
        if with_clamscan:
            start = time.perf_counter()
            subprocess.run(["clamscan", "--no-summary", "-d", str(db_file), str(path)],
                           capture_output=True)
            line += f"  clamscan {time.perf_counter() - start:6.2f} s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
