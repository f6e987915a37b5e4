"""Unit tests of the executable parsers: known numbers, libclamav's quirks,
hostile headers in bounded time, and the engine paths that use them
(Heuristics.Broken.Executable, embedded PE files, fat Mach-O slices).

The numbers themselves are compared with clamscan's in
test_executable_oracle.py; here each rule is pinned on a small sample.
"""

from __future__ import annotations

import hashlib
import struct
import time

from exe_samples import (
    PESpec,
    Sec,
    build_elf,
    build_fat,
    build_macho,
    build_pe,
    filler,
    import_section,
    patch,
    simple_pe,
    version_section,
)
from test_pe_allmatch import LocalHashIndex

from clammail.engine.scanner import Engine, ScanOptions
from clammail.formats.executable import (
    import_hash_candidates,
    import_table_text,
    parse_executable,
    section_hash_candidates,
)
from clammail.formats.filetypes import FileType
from clammail.formats.pe import embedded_pe_candidates, find_embedded_pe, parse_pe_header
from clammail.signatures.database import Database

E = 0x80
OPT = E + 24
SEC0 = OPT + 96 + 128


def pe(data: bytes):
    return parse_executable(data, FileType.MSEXE)


def test_pe_layout_numbers():
    data = simple_pe()
    exe = pe(data)
    assert exe.header_ok and not exe.broken
    assert exe.entry_point == 0x410  # RVA 0x1010 in .text at file offset 0x400
    assert [(s.raw_offset, s.raw_size, s.virtual_address) for s in exe.sections] == [
        (0x400, 0x1600, 0x1000), (0x1A00, 0x400, 0x3000), (0x1E00, 0x200, 0x4000)]
    assert exe.nsections == 3
    _, _, keys = version_section(0x4000, {"CompanyName": "Test Co", "ProductName": "Thing"})
    assert exe.version_info_offsets == [0x1E00 + k for k in keys]
    # The VI offset is where the UTF-16 key starts.
    assert data[exe.version_info_offsets[0]:].startswith("CompanyName".encode("utf-16-le"))


def test_alignment_rules():
    data = simple_pe()
    # PointerToRawData 0x410 with FileAlignment 0x200: aligned down to 0x400.
    exe = pe(patch(data, SEC0 + 20, "<I", 0x410))
    assert exe.sections[0].raw_offset == 0x400
    # An odd file alignment falls back to 0x200 when a section needs it.
    fallback = patch(patch(data, OPT + 36, "<I", 0x400), SEC0 + 20, "<I", 0x600)
    assert pe(fallback).sections[0].raw_offset == 0x600
    # SizeOfRawData is rounded up, then cut at the end of the file.
    cut = data[:0x1C00]
    assert pe(cut).sections[1].raw_size == 0x1C00 - 0x1A00


def test_sections_past_the_end():
    data = patch(simple_pe(), SEC0 + 40 + 20, "<I", 0x100000)
    exe = pe(data)
    # The matcher keeps the section (size 0), the scanner drops it.
    assert len(exe.sections) == 3 and exe.sections[1].raw_size == 0
    assert len(exe.hash_sections) == 2


def test_entry_point_rules():
    data = simple_pe()
    assert pe(patch(data, OPT + 16, "<I", 0x40)).entry_point == 0x40  # inside the headers
    unmapped = pe(patch(data, OPT + 16, "<I", 0x90000))
    assert not unmapped.header_ok and unmapped.entry_point is None and unmapped.broken


def test_broken_only_with_strict_checks():
    misaligned = pe(patch(simple_pe(), OPT + 32, "<I", 0x800))
    assert misaligned.header_ok and misaligned.broken and misaligned.hash_sections
    assert pe(patch(simple_pe(), E + 6, "<H", 0)).broken
    assert not pe(b"MZ" + b"\0" * 100).broken  # e_lfanew 0: not a PE, not broken
    assert pe(b"not an exe") is None


def test_import_table_text():
    data = simple_pe()
    assert import_table_text(pe(data), data) == (
        b"kernel32.exitprocess,kernel32.getprocaddress,kernel32.loadlibrarya,"
        b"ws2_32.closesocket,ws2_32.wsastartup,ws2_32.ord999,user32.messageboxa")
    digests = dict((len(d), (d, s)) for d, s in import_hash_candidates(
        pe(data), data, frozenset({"md5", "sha256"})))
    text = import_table_text(pe(data), data)
    assert digests[16] == (hashlib.md5(text).digest(), len(text))
    assert digests[32] == (hashlib.sha256(text).digest(), len(text))
    # PE32+ files: libclamav does not look at the import table.
    plus = simple_pe(pe32plus=True)
    assert list(import_hash_candidates(pe(plus), plus, frozenset({"md5"}))) == []


def _with_imports(imports) -> bytes:
    data, imp_dir = import_section(0x2000, imports)
    return build_pe(PESpec([Sec(b".text", 0x1000, 0x1000, filler(0x200, 1)),
                            Sec(b".idata", 0x2000, 0x1000, data)],
                           entry=0x1000, data_dirs={1: imp_dir}))


def test_import_name_rules():
    text = import_table_text
    d = _with_imports([(b"Drv.SYS", [b"A"]), (b"x.ocx", [b"B"]), (b"a.b.dll", [b"C"]),
                       (b"oleaut32.dll", [2, 9999])])
    assert text(pe(d), d) == b"drv.a,x.b,a.b.dll.c,oleaut32.sysallocstring,oleaut32.ord9999"
    d = _with_imports([(b"k.dll", [b"ok", b"not-ok"])])
    assert text(pe(d), d) is None  # libclamav rejects the whole table
    d = _with_imports([(b"k.dll", [b"", b"dotted.name"])])
    assert text(pe(d), d) == b"k.,k.dotted.name"


def test_section_hashes():
    data = simple_pe()
    exe = pe(data)
    got = list(section_hash_candidates(exe, data, frozenset({"md5", "sha1"})))
    want = []
    for s in exe.hash_sections:
        chunk = data[s.raw_offset:s.raw_offset + s.raw_size]
        want += [(hashlib.md5(chunk).digest(), s.raw_size), (hashlib.sha1(chunk).digest(), s.raw_size)]
    assert got == want


# -- hostile input: bounded time -------------------------------------------------


def _bounded(fn, seconds: float = 5.0):
    start = time.monotonic()
    result = fn()
    assert time.monotonic() - start < seconds  # a hang guard, not a benchmark
    return result


def test_65535_sections():
    secs = [Sec(b".s", 0x1000 * (i + 1), 0x1000) for i in range(0xFFFF)]
    data = build_pe(PESpec(secs, entry=0x10))
    exe = _bounded(lambda: pe(data))
    assert exe.header_ok and exe.nsections == 0xFFFF


def test_resource_tree_that_points_at_itself():
    # 65535 names that all lead to one language directory of 65535 entries:
    # libclamav would walk 4 billion entries; we walk each directory once.
    names_dir = struct.pack("<IIHHHH", 0, 0, 0, 0, 0, 0xFFFF)
    names_dir += struct.pack("<II", 1, 0x80000000 | 0x30) * 0xFFFF
    langs_dir = struct.pack("<IIHHHH", 0, 0, 0, 0, 0, 0xFFFF) + struct.pack("<II", 1, 0x80000000) * 0xFFFF
    names_at = 0x30 + len(langs_dir)
    root = struct.pack("<IIHHHH", 0, 0, 0, 0, 0, 1) + struct.pack("<II", 16, 0x80000000 | names_at)
    root += b"\0" * (0x30 - len(root))
    rsrc = root + langs_dir + names_dir
    data = build_pe(PESpec([Sec(b".text", 0x1000, 0x1000, filler(0x200, 2)),
                            Sec(b".rsrc", 0x2000, 0x200000, rsrc)],
                           entry=0x1000, data_dirs={2: (0x2000, len(rsrc))}))
    exe = _bounded(lambda: pe(data))
    assert exe.header_ok and exe.version_info_offsets == []


def test_hostile_counts_in_elf_and_macho():
    elf = patch(build_elf(), 60, "<H", 0xFFFF)
    assert _bounded(lambda: parse_executable(elf, FileType.ELF)).header_ok is False
    macho = patch(build_macho(), 16, ">I", 0xFFFFFFFF)
    exe = _bounded(lambda: parse_executable(macho, FileType.MACHO))
    assert not exe.header_ok and exe.broken


def test_truncated_files_never_raise():
    for data in (simple_pe(), build_elf(), build_elf(is64=False, big_endian=True), build_macho(),
                 build_macho(is64=True, cpu=18 | 0x1000000)):
        for cut in range(0, 0x400, 7):
            for ftype in (FileType.MSEXE, FileType.ELF, FileType.MACHO):
                parse_executable(data[:cut], ftype)  # must not raise


# -- ELF and Mach-O numbers --------------------------------------------------------


def test_elf_numbers():
    for is64 in (False, True):
        for big in (False, True):
            exe = parse_executable(build_elf(is64=is64, big_endian=big), FileType.ELF)
            assert exe.header_ok and exe.entry_point == 0x1010
            assert [(s.raw_offset, s.raw_size) for s in exe.sections] == [
                (0, 0), (0x1000, 0x800), (0x2000, 0x400)]
    assert parse_executable(build_elf(entry=0), FileType.ELF).entry_point == 0
    unmapped = parse_executable(build_elf(entry=0x900000), FileType.ELF)
    assert not unmapped.header_ok and unmapped.broken


def test_macho_numbers():
    exe = parse_executable(build_macho(), FileType.MACHO)  # PowerPC: the EP is known
    assert exe.header_ok and exe.entry_point == 0x1010
    assert [(s.raw_offset, s.raw_size) for s in exe.sections] == [(0x1000, 0x800), (0x2000, 0x1000)]
    # x86: libclamav never reads the entry point.
    assert parse_executable(build_macho(cpu=7), FileType.MACHO).entry_point == 0


# -- through the engine --------------------------------------------------------------


def _engine(db=None, **options) -> Engine:
    return Engine(db or Database(), ScanOptions.from_mapping(options))


def test_engine_broken_executable_heuristic():
    broken = patch(simple_pe(), E + 6, "<H", 0)
    assert _engine(AlertBrokenExecutables=True).scan_bytes(broken).detections == [
        "Heuristics.Broken.Executable"]
    assert _engine().scan_bytes(broken).detections == []
    elf = build_elf()
    elf = elf[:4] + b"\x03" + elf[5:]
    assert _engine(AlertBrokenExecutables=True).scan_bytes(elf).detections == [
        "Heuristics.Broken.Executable"]
    assert _engine(AlertBrokenExecutables=True, ScanELF=False).scan_bytes(elf).detections == []


def _mdb_index(data: bytes, section: int) -> LocalHashIndex:
    exe = pe(data)
    s = exe.hash_sections[section]
    index = LocalHashIndex()
    digest = hashlib.md5(data[s.raw_offset:s.raw_offset + s.raw_size]).hexdigest()
    index.add_line(f"{s.raw_size}:{digest}:Inner.Text", size_first=True)
    return index


def test_engine_finds_embedded_pe():
    inner = simple_pe(seed=33)
    outer = simple_pe(seed=34) + b"MZ" + filler(300, 5) + inner
    assert find_embedded_pe(outer) == len(simple_pe(seed=34)) + 302
    assert embedded_pe_candidates(outer)[0] == 0
    db = Database(section_hashes=_mdb_index(inner, 0))
    assert _engine(db).scan_bytes(outer).detections == ["Inner.Text.UNOFFICIAL"]
    assert _engine(db, MaxEmbeddedPE=len(outer) - 1).scan_bytes(outer).detections == []
    assert _engine(db, ScanPE=False).scan_bytes(outer).detections == []


def test_engine_scans_fat_slices():
    slice_ = build_macho(seed=5)
    fat = build_fat([build_macho(seed=4), slice_])
    index = LocalHashIndex()
    index.add_line(f"{hashlib.md5(slice_).hexdigest()}:{len(slice_)}:Fat.Slice", size_first=False)
    assert _engine(Database(file_hashes=index)).scan_bytes(fat).detections == ["Fat.Slice.UNOFFICIAL"]


def test_header_parse_of_embedded_offsets_is_relative():
    inner = simple_pe(seed=40)
    data = b"\0" * 1000 + inner
    header = parse_pe_header(memoryview(data)[1000:])
    assert header.entry_point == pe(inner).entry_point
