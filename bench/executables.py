"""Parse speed of the executable layer on real and generated files (preliminary numbers).

Run: .venv/bin/python bench/executables.py [FILES...]
Without arguments it uses ClamAV's pe_allmatch test.exe (1.4 MB, 25 nested
PEs) and a generated PE with 65535 sections. For each file: the time to
parse its layout (both libclamav views), to hash all sections in MD5, SHA-1
and SHA-256, and to build the import-table hash text.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from clammail.formats.executable import (  # noqa: E402
    import_table_text,
    parse_executable,
    section_hash_candidates,
)
from clammail.formats.filetypes import FileType  # noqa: E402

ALGOS = frozenset({"md5", "sha1", "sha256"})


def _time(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench(name: str, data: bytes) -> None:
    parse = _time(lambda: parse_executable(data, FileType.MSEXE))
    exe = parse_executable(data, FileType.MSEXE)
    hashes = _time(lambda: list(section_hash_candidates(exe, data, ALGOS)))
    imports = _time(lambda: import_table_text(parse_executable(data, FileType.MSEXE), data))
    print(f"{name}: {len(data)} bytes, parse {parse * 1000:.2f} ms, "
          f"section hashes {hashes * 1000:.2f} ms, imports {imports * 1000:.2f} ms")


def main(argv: list[str]) -> None:
    if argv:
        for path in argv:
            bench(path, Path(path).read_bytes())
        return
    test_exe = Path("/work/shared/clamav-unit-data/pe_allmatch/test.exe")
    if test_exe.is_file():
        bench("test.exe", test_exe.read_bytes())
    from exe_samples import PESpec, Sec, build_pe

    many = build_pe(PESpec([Sec(b".s", 0x1000 * (i + 1), 0x1000) for i in range(0xFFFF)], entry=0x10))
    bench("65535 sections", many)


if __name__ == "__main__":
    main(sys.argv[1:])
