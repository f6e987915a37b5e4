"""Our executable numbers against clamscan's, file by file.

PE: clamscan --debug prints, for every PE it scans, the entry point's file
offset, the MD5 of each section it hashes for .mdb ("MDB hashset"), the
import-table hash (".imp") and the offset of each version-information
string. We load a wildcard .mdb and .imp so it computes all of them and
compare with `parse_executable` / `section_hash_candidates` /
`import_hash_candidates` over the same files: generated PEs that bend one
header field each, ClamAV's own test PEs, and Windows PEs found on this
machine. ELF, Mach-O and the matcher's view of PE sections (Sx+n, SL+n, SEx,
EP+n, EOF-n) are checked by turning our numbers into .ndb signatures and
asking clamscan which of them match.
"""

from __future__ import annotations

import hashlib
import random
import re
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import TESTFILES, need_program
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

from clammail.formats.executable import (
    import_hash_candidates,
    parse_executable,
    section_hash_candidates,
)
from clammail.formats.filetypes import FileType
from clammail.formats.pe import find_embedded_pe

pytestmark = pytest.mark.oracle

MAX_CHAIN = 16  # clamscan's default recursion limit lets it scan 16 nested PEs


# -- generated PE files ------------------------------------------------------


def _pe_variants() -> dict[str, bytes]:
    base = simple_pe(seed=7)
    e = 0x80  # e_lfanew of the samples
    opt = e + 24
    sec0 = opt + 96 + 128  # first section header (PE32, 16 data dirs)
    out = {
        "plain": base,
        "pe32plus": simple_pe(seed=8, pe32plus=True),
        "dll": simple_pe(seed=9, dll=True),
        "salign_800": patch(base, opt + 32, "<I", 0x800),
        "salign_0": patch(base, opt + 32, "<I", 0),
        "falign_1000": patch(base, opt + 36, "<I", 0x1000),
        "falign_100": patch(base, opt + 36, "<I", 0x100),
        "falign_0": patch(base, opt + 36, "<I", 0),
        "native_salign": patch(patch(base, opt + 68, "<H", 1), opt + 32, "<I", 0x10),
        "entry_in_header": patch(base, opt + 16, "<I", 0x40),
        "entry_unmapped": patch(base, opt + 16, "<I", 0x90000),
        "entry_in_rsrc": patch(base, opt + 16, "<I", 0x4010),
        "nsections_0": patch(base, e + 6, "<H", 0),
        "nsections_97": patch(base, e + 6, "<H", 97),
        "nsections_big": patch(base, e + 6, "<H", 0xFFFF),
        "opt_small": patch(base, e + 20, "<H", 0x50),
        "opt_no_dirs": patch(base, e + 20, "<H", 96 + 8),
        "ndatadirs_2": patch(base, opt + 92, "<I", 2),
        "ndatadirs_huge": patch(base, opt + 92, "<I", 0xFFFFFFFF),
        "lfanew_0": patch(base, 60, "<I", 0),
        "lfanew_far": patch(base, 60, "<I", 0x7FFFFFF0),
        "no_pe_sig": patch(base, e, "<4s", b"NE\0\0"),
        "truncated_hdr": base[:0x150],
        "sec_unaligned_ptr": patch(base, sec0 + 20, "<I", 0x410),
        "sec_ptr_fallback": patch(patch(base, opt + 36, "<I", 0x400), sec0 + 20, "<I", 0x600),
        "sec_past_eof": patch(base, sec0 + 40 + 20, "<I", 0x100000),
        "sec_truncated": base[:0x1C00],
        "sec_signbit": patch(base, sec0 + 8, "<I", 0x80001000),
        "sec_vsize_0": patch(base, sec0 + 8, "<I", 0),
        "sec_misaligned_va": patch(base, sec0 + 12, "<I", 0x1100),
        "sec_overlap": patch(base, sec0 + 40 + 12, "<I", 0x2000),
        "hdr_size_odd": patch(base, opt + 60, "<I", 0x300),
        "only_section_past_eof": patch(patch(base, e + 6, "<H", 1), sec0 + 20, "<I", 0x100000),
        "overlay": base + filler(3000, 99),
        "imp_dir_0": patch(base, opt + 96 + 8, "<II", 0, 0),
        "imp_dir_past_eof": patch(base, opt + 96 + 8, "<II", 0x3000, 0x100000),
        "res_dir_0": patch(base, opt + 96 + 16, "<II", 0, 0),
    }
    # Import tables with the names libclamav treats specially.
    for name, imports in {
        "imp_ordinals": [(b"oleaut32.dll", [2, 6, 302, 443, 1000]),
                         (b"wsock32.DLL", [1, 23, 151, 500, 100])],
        "imp_ext": [(b"driver.SYS", [b"IoCreateDevice"]), (b"ctl.ocx", [b"X"]),
                    (b"odd.name.dll", [b"F"]), (b"NOEXT", [b"G"]), (b"a.dllx", [b"H"])],
        "imp_badname": [(b"k.dll", [b"Good", b"Bad-Name"])],
        "imp_dotname": [(b"k.dll", [b"a.b", b"_x9"])],
        "imp_emptyname": [(b"k.dll", [b"", b"After"])],
        "imp_nofuncs": [(b"k.dll", []), (b"m.dll", [b"F"])],
        "imp_weird_dll": [(b"K\xe9RNEL.dll", [b"Func"])],
    }.items():
        for plus in (False, True):
            data, imp_dir = import_section(0x3000, imports, pe32plus=plus)
            text = Sec(b".text", 0x1000, 0x1000, filler(0x800, len(name)))
            spec = PESpec([text, Sec(b".idata", 0x2000, 0x2000, b"\0" * 0x1000 + data)],
                          entry=0x1004, pe32plus=plus,
                          data_dirs={1: (imp_dir[0] - 0x1000, imp_dir[1])})
            # The import section was laid out for 0x3000; it now sits at 0x2000
            # plus 0x1000 of padding, so the same RVAs hold.
            out[name + ("_64" if plus else "")] = build_pe(spec)
    # Version information in several shapes.
    rsrc, res_dir, _ = version_section(0x2000, {"A": "1", "LongerKey": "", "K": "value"})
    out["vi_shapes"] = build_pe(PESpec(
        [Sec(b".text", 0x1000, 0x1000, filler(0x400, 5)), Sec(b".rsrc", 0x2000, 0x1000, rsrc)],
        entry=0x1000, data_dirs={2: res_dir}))
    out["vi_no_magic"] = out["vi_shapes"].replace(struct.pack("<I", 0xFEEF04BD), b"\0\0\0\0")
    # Random bit flips in the headers of the plain sample.
    rng = random.Random(1234)
    for n in range(25):
        data = bytearray(base)
        for _ in range(3):
            data[rng.randrange(0x40, 0x300)] = rng.randrange(256)
        out[f"fuzz{n:02d}"] = bytes(data)
    # A PE with another PE (and a decoy "MZ") inside.
    inner = simple_pe(seed=21)
    out["embedded"] = base + b"MZ" + filler(500, 3) + inner
    return out


def _real_pes() -> list[Path]:
    """ClamAV's unpacked test PEs and Windows PEs that happen to be on this machine."""
    # (Not the packed or InstallShield ones: clamscan unpacks those and scans
    # what it finds as further PE files.)
    paths = [TESTFILES / "clam.exe"]
    found = [p for p in paths if p.is_file()]
    roots = [Path("/usr/lib"), Path("/usr/share"), Path("/root/.pyenv/versions")]
    extra: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for pattern in ("*.exe", "*.dll", "*.efi"):
            for path in sorted(root.rglob(pattern)):
                if TESTFILES in path.parents:
                    continue
                if path.is_file() and path.stat().st_size < 8 * 1024 * 1024:
                    extra.append(path)
                if len(extra) >= 40:
                    break
    # Drop duplicates by content.
    seen, unique = set(), []
    for path in found + extra:
        digest = hashlib.md5(path.read_bytes()).digest()
        if digest not in seen:
            seen.add(digest)
            unique.append(path)
    return unique[:45]


# -- what clamscan says ------------------------------------------------------

_SPLIT = re.compile(r"Checking realpath of (.+)$")


def _clamscan_debug(paths: list[Path], *dbs: Path, extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    cmd = [need_program("clamscan"), "--debug", "--no-summary"] + list(extra)
    for db in dbs:
        cmd += ["-d", str(db)]
    proc = subprocess.run(cmd + [str(p) for p in paths], capture_output=True, text=True,
                          errors="replace", timeout=600)
    per_file: dict[str, list[str]] = {}
    current = None
    for line in (proc.stderr + proc.stdout).splitlines():
        m = _SPLIT.search(line)
        if m:
            current = m.group(1)
            per_file[current] = []
        elif current is not None:
            per_file[current].append(line)
    return per_file


def _observed(lines: list[str]) -> dict:
    eps, mdb, imp, vi = [], Counter(), Counter(), set()
    for line in lines:
        if m := re.search(r"EntryPoint offset: 0x([0-9a-f]+)", line):
            eps.append(int(m.group(1), 16))
        elif m := re.search(r"MDB hashset: (\d+):([0-9a-f]{32})", line):
            mdb[(m.group(2), int(m.group(1)))] += 1
        elif m := re.search(r"IMP: ([0-9a-f]{32}):(\d+)", line):
            key = (m.group(1), int(m.group(2)))
            # With no import table libclamav prints whatever its buffer held, size 0.
            if key[1] or key[0] == hashlib.md5(b"").hexdigest():
                imp[key] += 1
        elif m := re.search(r"VersionInfo \(([0-9a-f]+)\)", line):
            vi.add(int(m.group(1), 16))
    return {"ep": sorted(eps), "mdb": mdb, "imp": imp, "vi": vi}


def _chain(data: bytes) -> list[memoryview]:
    """The file and the PEs clamscan finds nested in it."""
    view = memoryview(data)
    chain = [view]
    while len(chain) < MAX_CHAIN:
        offset = find_embedded_pe(chain[-1])
        if offset is None:
            break
        chain.append(chain[-1][offset:])
    return chain


def _expected(data: bytes) -> dict:
    eps, mdb, imp, vi = [], Counter(), Counter(), set()
    for obj in _chain(data):
        exe = parse_executable(obj, FileType.MSEXE)
        if exe is None:
            continue
        vi.update(exe.version_info_offsets)
        if "pe_header" not in exe.extra:
            continue  # the PE scanner's parse failed: it prints nothing
        eps.append(exe.extra["pe_header"].entry_point)
        for digest, size in section_hash_candidates(exe, obj, frozenset({"md5"})):
            mdb[(digest.hex(), size)] += 1
        for digest, size in import_hash_candidates(exe, obj, frozenset({"md5"})):
            imp[(digest.hex(), size)] += 1
    return {"ep": sorted(eps), "mdb": mdb, "imp": imp, "vi": vi}


@pytest.fixture(scope="module")
def wildcard_dbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("db")
    (d / "all.mdb").write_text("*:0123456789abcdef0123456789abcdef:Oracle.Mdb:73\n")
    (d / "all.imp").write_text("0123456789abcdef0123456789abcdef:*:Oracle.Imp:73\n")
    return d / "all.mdb", d / "all.imp"


def test_generated_pe_numbers_match_clamscan(tmp_path, wildcard_dbs):
    files = {}
    for name, data in _pe_variants().items():
        path = tmp_path / f"{name}.exe"
        path.write_bytes(data)
        files[str(path)] = data
    seen = _clamscan_debug([Path(p) for p in files], *wildcard_dbs)
    assert set(seen) == set(files)
    mismatches = {}
    for path, data in files.items():
        got, want = _observed(seen[path]), _expected(data)
        if got != want:
            mismatches[Path(path).name] = {k: (got[k], want[k]) for k in got if got[k] != want[k]}
    assert not mismatches, mismatches
    # The variants really exercise the numbers: most produce section hashes.
    assert sum(1 for d in files.values() if _expected(d)["mdb"]) > 40


def test_real_pe_numbers_match_clamscan(wildcard_dbs):
    paths = _real_pes()
    if not paths:
        pytest.fail(f"no PE file to test with: clamav-testfiles is missing ({TESTFILES})")
    seen = _clamscan_debug(paths, *wildcard_dbs)
    mismatches = {}
    for path in paths:
        got, want = _observed(seen[str(path)]), _expected(path.read_bytes())
        if got != want:
            mismatches[str(path)] = {k: (got[k], want[k]) for k in got if got[k] != want[k]}
    assert not mismatches, mismatches
    assert any(_expected(p.read_bytes())["imp"] for p in paths)


def test_broken_verdicts_match_clamscan(tmp_path, wildcard_dbs):
    files = {}
    for name, data in _pe_variants().items():
        path = tmp_path / f"{name}.exe"
        path.write_bytes(data)
        files[path] = any(e.broken for e in (parse_executable(o, FileType.MSEXE) for o in _chain(data))
                          if e is not None)
    for name, data in _elf_variants().items():
        path = tmp_path / f"{name}.elf"
        path.write_bytes(data)
        exe = parse_executable(data, FileType.ELF)
        files[path] = exe is not None and exe.broken
    for name, data in _macho_variants().items():
        path = tmp_path / f"{name}.macho"
        path.write_bytes(data)
        exe = parse_executable(data, FileType.MACHO)
        files[path] = exe is not None and exe.broken
    proc = subprocess.run([need_program("clamscan"), "--no-summary", "--alert-broken", "-d",
                           str(wildcard_dbs[0])] + [str(p) for p in files],
                          capture_output=True, text=True, timeout=600)
    reported = {line.split(": ")[0] for line in proc.stdout.splitlines()
                if line.endswith("Heuristics.Broken.Executable FOUND")}
    expected = {str(p) for p, broken in files.items() if broken}
    assert reported == expected
    assert len(expected) >= 10


# -- the matcher's view: offsets as .ndb signatures --------------------------


def _elf_variants() -> dict[str, bytes]:
    out = {}
    for is64 in (False, True):
        for big in (False, True):
            tag = f"{'64' if is64 else '32'}{'be' if big else 'le'}"
            out[f"elf{tag}"] = build_elf(is64=is64, big_endian=big, seed=len(out) + 40)
            out[f"elf{tag}_noentry"] = build_elf(is64=is64, big_endian=big, entry=0, seed=len(out) + 40)
            out[f"elf{tag}_unmapped"] = build_elf(is64=is64, big_endian=big, entry=0x900000,
                                                  seed=len(out) + 40)
    base = build_elf(seed=60)
    out["elf_twoseg"] = build_elf(seed=61, entry=0x601020,
                                  segments=[(0, 0x400000, 0x1000, 0x1000), (0x1000, 0x601000, 0x800, 0x2000)])
    out["elf_phnum_129"] = patch(base, 56, "<H", 129)
    out["elf_bad_phentsize"] = patch(base, 54, "<H", 40)
    out["elf_bad_shentsize"] = patch(base, 58, "<H", 40)
    out["elf_shnum_300"] = patch(base, 60, "<H", 300)
    out["elf_shnum_3000"] = patch(base, 60, "<H", 3000)
    out["elf_shoff_past_eof"] = patch(base, 40, "<Q", 0x100000)
    out["elf_phoff_past_eof"] = patch(base, 32, "<Q", 0x100000)
    out["elf_class3"] = base[:4] + b"\x03" + base[5:]
    out["elf_endian7"] = base[:5] + b"\x07" + base[6:]
    out["elf_short"] = base[:60]
    out["elf_no_sections"] = patch(base, 60, "<H", 0)
    return out


def _macho_variants() -> dict[str, bytes]:
    out = {}
    for is64 in (False, True):
        for big in (False, True):
            tag = f"{'64' if is64 else '32'}{'be' if big else 'le'}"
            cpu = (18 | 0x1000000) if is64 else 18
            out[f"macho{tag}"] = build_macho(is64=is64, big_endian=big, cpu=cpu, seed=len(out) + 70)
            out[f"macho{tag}_x86"] = build_macho(is64=is64, big_endian=big, cpu=7, seed=len(out) + 70)
    out["macho_unmapped_ep"] = build_macho(entry=0x9000, seed=80)
    out["macho_no_sections"] = build_macho(sections=[], seed=81)
    out["macho_odd_align"] = build_macho(sections=[(0x1000, 0x801, 0x1000, 40), (0x2000, 0x3, 0x2000, 2)],
                                         seed=82)
    out["macho_bad_align64"] = build_macho(is64=True, cpu=18 | 0x1000000,
                                           sections=[(0x1000, 0x801, 0x1000, 33)], seed=83)
    out["macho_ncmds_0"] = patch(build_macho(seed=84), 16, ">I", 0)
    out["macho_ncmds_2000"] = patch(build_macho(seed=85), 16, ">I", 2000)
    out["macho_nsects_300"] = build_macho(sections=[(0x1000, 8, 0x1000, 0)] * 3, seed=86)
    out["macho_nsects_300"] = patch(out["macho_nsects_300"], 28 + 8 + 40, ">I", 300)
    out["macho_cmds_past_eof"] = patch(build_macho(seed=87), 16, ">I", 900)
    out["macho_skip_cmds"] = build_macho(extra_cmds=[(0x22, b"\0" * 40), (0x80000028, b"\0" * 16)],
                                         seed=88)
    return out


def _sigs_for(name: str, data: bytes, target: int, exe, corpus: bytes) -> list[tuple[str, str]]:
    """(.ndb line's name, line) for our EP/Sx/SL/SEx/EOF numbers; the name says what it checks.

    Only bytes found once in all the test files make a signature, so a match
    can only come from the offset we computed."""
    sigs = []

    def body(offset: int) -> str | None:
        if 0 <= offset and offset + 12 <= len(data):
            chunk = data[offset:offset + 12]
            if corpus.count(chunk) == 1:
                return chunk.hex()
        return None

    ok = exe is not None and exe.header_ok
    if ok:
        if (h := body(exe.entry_point)) is not None:
            sigs.append(f"EP+0:{h}")
        if exe.entry_point >= 4 and (h := body(exe.entry_point - 4)) is not None:
            sigs.append(f"EP-4:{h}")
        for i, s in enumerate(exe.sections):
            if (h := body(s.raw_offset)) is not None:
                sigs.append(f"S{i}+0:{h}")
            if s.raw_size >= 12 and (h := body(s.raw_offset)) is not None:
                sigs.append(f"SE{i}:{h}")
        if exe.sections and (h := body(exe.sections[-1].raw_offset + 1)) is not None:
            sigs.append(f"SL+1:{h}")
    # EOF-n works only when libclamav has target info.
    if (h := body(len(data) - 12)) is not None:
        sigs.append(f"EOF-12:{h}" + ("" if ok else "#none"))
    out = []
    for n, sig in enumerate(sigs):
        expect = not sig.endswith("#none")
        offset, hexsig = sig.removesuffix("#none").split(":")
        sig_name = f"Exe.{name}.{n}.{'yes' if expect else 'no'}"
        out.append((sig_name, f"{sig_name}:{target}:{offset}:{hexsig}"))
    return out


def test_elf_macho_and_pe_offsets_match_clamscan(tmp_path):
    cases = []
    for name, data in _elf_variants().items():
        cases.append((name, data, 6, parse_executable(data, FileType.ELF)))
    for name, data in _macho_variants().items():
        cases.append((name, data, 9, parse_executable(data, FileType.MACHO)))
    for name, data in _pe_variants().items():
        if name != "embedded":
            cases.append((name, data, 1, parse_executable(data, FileType.MSEXE)))
    lines, expected = [], {}
    paths = []
    corpus = b"\n".join(data for _, data, _, _ in cases)
    for name, data, target, exe in cases:
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(path)
        sigs = _sigs_for(name, data, target, exe, corpus)
        lines += [line for _, line in sigs]
        expected[str(path)] = {n + ".UNOFFICIAL" for n, _ in sigs if n.endswith(".yes")}
    # clamscan 1.4.6 crashes (SIGSEGV) on an ELF or Mach-O file without
    # sections when any SL+n signature of its target is loaded: scan those
    # files in a run of their own, without SL+n signatures.
    no_sections = {str(tmp_path / name) for name, _, target, exe in cases
                   if target != 1 and exe is not None and exe.header_ok and not exe.sections}
    got: dict[str, set[str]] = {str(p): set() for p in paths}
    for group, sig_lines in (
        ([p for p in paths if str(p) not in no_sections], lines),
        ([p for p in paths if str(p) in no_sections], [x for x in lines if ":SL+" not in x]),
    ):
        assert group
        db = tmp_path / "offsets.ndb"
        db.write_text("\n".join(sig_lines) + "\n")
        proc = subprocess.run([need_program("clamscan"), "--no-summary", "--allmatch", "-d", str(db)]
                              + [str(p) for p in group], capture_output=True, text=True, timeout=600)
        assert proc.returncode in (0, 1), proc.stderr
        for line in proc.stdout.splitlines():
            if line.endswith(" FOUND"):
                path, _, sig = line[:-len(" FOUND")].rpartition(": ")
                got[path].add(sig)
    # Signatures may also match each other's bytes by chance only within one
    # file (same content); ours are 12 random bytes, so compare exactly.
    mismatches = {Path(p).name: (sorted(got[p] - expected[p]), sorted(expected[p] - got[p]))
                  for p in expected if got[p] != expected[p]}
    assert not mismatches, mismatches
    assert sum(len(v) for v in expected.values()) > 100


def test_universal_binary_slices_are_scanned_like_clamscan(tmp_path):
    from clammail.formats.macho import fat_slices

    slices = [build_macho(seed=90), build_macho(is64=True, cpu=18 | 0x1000000, seed=91)]
    fat = build_fat(slices)
    found, broken = fat_slices(fat)
    assert not broken and [fat[o:o + s] for o, s in found] == slices
    path = tmp_path / "fat.bin"
    path.write_bytes(fat)
    # An EP signature for each slice: clamscan scans the slices as Mach-O files.
    lines = []
    for n, data in enumerate(slices):
        exe = parse_executable(data, FileType.MACHO)
        lines.append(f"Fat.Slice{n}:9:EP+0:{data[exe.entry_point:exe.entry_point + 12].hex()}")
    db = tmp_path / "fat.ndb"
    db.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([need_program("clamscan"), "--no-summary", "--allmatch", "-d", str(db),
                           str(path)], capture_output=True, text=True, timeout=120)
    assert sorted(proc.stdout.split("FOUND")[:-1]) == sorted(
        f"{'' if n == 0 else chr(10)}{path}: Fat.Slice{n}.UNOFFICIAL " for n in range(2))
