"""Build archives and compressed files of every format the archive tests use.

Python's own modules write what they can (zip, tar, gzip, bzip2, xz, lzma);
Debian's tools write the rest (7z, cpio, genisoimage, gcab, jlha, arj,
bsdtar, zstd). RAR has no free writer, so `rar4_stored` and `rar5_stored`
write stored-method RAR archives by hand. Every builder takes the members as
(name, bytes) pairs and returns the archive's bytes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence

Members = Sequence[tuple[str, bytes]]

# Debian packages that provide the command-line writers (packaging/apt-packages.txt).
TOOLS = {
    "7z": "p7zip-full", "cpio": "cpio", "genisoimage": "genisoimage", "gcab": "gcab",
    "lha": "jlha-utils", "arj": "arj", "bsdtar": "libarchive-tools", "zstd": "zstd",
}


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


def _with_files(members: Members, run: Callable[[str, list[str]], str]) -> bytes:
    """Write the members into a fresh directory, let `run` build the archive there."""
    with tempfile.TemporaryDirectory(prefix="clammail-build-") as tmp:
        src = os.path.join(tmp, "src")
        os.mkdir(src)
        names = []
        for name, data in members:
            path = os.path.join(src, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
            names.append(name)
        out = run(src, names)
        with open(out, "rb") as fh:
            return fh.read()


def _tool(args: list[str], cwd: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


# -- zip -----------------------------------------------------------------

def zip_py(members: Members, method: int = zipfile.ZIP_DEFLATED, zip64: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            with zf.open(info, "w", force_zip64=zip64) as fh:
                fh.write(data)
    return buf.getvalue()


def zip_7z(members: Members, method: str = "deflate64", password: str | None = None,
           aes: bool = False) -> bytes:
    def run(src, names):
        out = os.path.join(src, "..", "out.zip")
        args = ["7z", "a", "-bd", "-tzip", f"-mm={method}", out]
        if password:
            args.insert(3, f"-p{password}")
            if aes:
                args.insert(3, "-mem=AES256")
        _tool(args + names, src)
        return out
    return _with_files(members, run)


# -- tar and single-stream compression --------------------------------

TAR_FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def tar_py(members: Members, fmt: str = "ustar", compression: str = "") -> bytes:
    buf = io.BytesIO()
    mode = "w:" + compression if compression else "w"
    with tarfile.open(fileobj=buf, mode=mode, format=TAR_FORMATS[fmt]) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_cli(members: Members, fmt: str = "v7") -> bytes:
    """GNU tar for the formats Python does not write (v7, oldgnu)."""
    def run(src, names):
        out = os.path.join(src, "..", "out.tar")
        _tool(["tar", f"--format={fmt}", "-cf", out] + names, src)
        return out
    return _with_files(members, run)


def xz_blocks(data: bytes, block_size: int) -> bytes:
    """An xz stream of several blocks (xz-utils; Python's lzma writes one block)."""
    return _tool(["xz", "-c", f"--block-size={block_size}"], tempfile.gettempdir(), stdin=data)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def bz(data: bytes) -> bytes:
    return bz2.compress(data)


def xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ)


def lzma_alone(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_ALONE)


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


# -- cpio ----------------------------------------------------------------

def cpio_cli(members: Members, fmt: str = "newc") -> bytes:
    """GNU cpio: odc, newc, crc, bin (binary in this machine's byte order)."""
    def run(src, names):
        out = os.path.join(src, "..", "out.cpio")
        with open(out, "wb") as fh:
            fh.write(_tool(["cpio", "-o", "--quiet", "-H", fmt], src, "\n".join(names).encode()))
        return out
    return _with_files(members, run)


def cpio_bin(members: Members, big_endian: bool = False) -> bytes:
    """The old binary cpio format, either byte order (GNU cpio writes only the native one)."""
    end = ">" if big_endian else "<"

    def word32(value: int) -> bytes:
        # Old binary cpio keeps 32-bit values as two 16-bit words, high word first.
        return struct.pack(end + "HH", value >> 16, value & 0xFFFF)

    out = bytearray()
    for ino, (name, data) in enumerate([*members, ("TRAILER!!!", b"")], 1):
        raw_name = name.encode() + b"\0"
        mode = 0o100644 if name != "TRAILER!!!" else 0
        out += struct.pack(end + "HHHHHHHH", 0o70707, 0, ino, mode, 0, 0, 1, 0)
        out += word32(1700000000) + struct.pack(end + "H", len(raw_name)) + word32(len(data))
        out += raw_name + b"\0" * (len(raw_name) % 2)
        out += data + b"\0" * (len(data) % 2)
    out += b"\0" * (-len(out) % 512)
    return bytes(out)


# -- 7z, iso, cab, lha, arj, ar, xar ------------------------------------

def sevenzip(members: Members, method: str = "lzma", password: str | None = None,
             encrypt_headers: bool = False, solid: bool = True) -> bytes:
    def run(src, names):
        out = os.path.join(src, "..", "out.7z")
        args = ["7z", "a", "-bd", "-t7z", f"-m0={method}", f"-ms={'on' if solid else 'off'}"]
        if password:
            args.append(f"-p{password}")
            if encrypt_headers:
                args.append("-mhe=on")
        _tool(args + [out] + names, src)
        return out
    return _with_files(members, run)


def iso(members: Members, joliet: bool = False, rock_ridge: bool = False) -> bytes:
    def run(src, names):
        out = os.path.join(src, "..", "out.iso")
        args = ["genisoimage", "-quiet", "-o", out]
        if joliet:
            args.append("-J")
        if rock_ridge:
            args.append("-R")
        _tool(args + [src], src)
        return out
    return _with_files(members, run)


def cab(members: Members, mszip: bool = False) -> bytes:
    def run(src, names):
        out = os.path.join(src, "..", "out.cab")
        _tool(["gcab", "-c"] + (["-z"] if mszip else []) + [out] + names, src)
        return out
    return _with_files(members, run)


def lha(members: Members, method: int = 5, header_level: int = 2) -> bytes:
    """jLHA: method 5, 6 or 7 (-lh5-, -lh6-, -lh7-), 0 for stored (-lh0-)."""
    def run(src, names):
        out = os.path.join(src, "..", "out.lzh")
        # jlha reads the header level only right after the command letter, and
        # takes the digit after `o<method>` as part of the method.
        flags = f"a{header_level}q" + (f"o{method}" if method else "z")
        _tool(["jlha", flags, out] + names, src)  # jlha-utils: lhasa's `lha` cannot write
        return out
    return _with_files(members, run)


def arj(members: Members, method: int = 1) -> bytes:
    def run(src, names):
        out = os.path.join(src, "..", "out.arj")
        _tool(["arj", "a", "-y", f"-m{method}", out] + names, src)
        return out
    return _with_files(members, run)


def ar(members: Members) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + b"\n" * (len(data) % 2)
    return bytes(out)


XAR_ENCODINGS = {
    "none": ("application/octet-stream", lambda d: d),
    "gzip": ("application/x-gzip", zlib.compress),
    "bzip2": ("application/x-bzip2", bz2.compress),
    "xz": ("application/x-xz", lambda d: lzma.compress(d, lzma.FORMAT_XZ)),
    "lzma": ("application/x-lzma", lambda d: lzma.compress(d, lzma.FORMAT_ALONE)),
}


def xar(members: Members, encoding: str = "gzip") -> bytes:
    """A xar laid out as libarchive writes it, byte for byte the same every run."""
    style, encode = XAR_ENCODINGS[encoding]
    heap, files = bytearray(b"\0" * 20), []  # the heap starts with the TOC's sha1
    for number, (name, data) in enumerate(members, 1):
        packed = encode(data)
        files.append(
            f'  <file id="{number}">\n   <name>{name}</name>\n   <type>file</type>\n'
            f"   <mode>0644</mode>\n   <data>\n    <length>{len(packed)}</length>\n"
            f"    <offset>{len(heap)}</offset>\n    <size>{len(data)}</size>\n"
            f'    <encoding style="{style}"/>\n   </data>\n  </file>\n')
        heap += packed
    toc = ('<?xml version="1.0" encoding="UTF-8"?>\n<xar>\n <toc>\n'
           "  <creation-time>2026-01-01T00:00:00</creation-time>\n"
           '  <checksum style="sha1">\n   <offset>0</offset>\n   <size>20</size>\n  </checksum>\n'
           + "".join(files) + " </toc>\n</xar>\n").encode()
    packed_toc = zlib.compress(toc)
    header = b"xar!" + struct.pack(">HHQQI", 28, 1, len(packed_toc), len(toc), 1)
    return header + packed_toc + bytes(heap)


def bsdtar(members: Members, fmt: str, *options: str) -> bytes:
    """libarchive's writer: xar, 7zip, cpio variants, iso9660, ...; `options` as bsdtar's --options."""
    def run(src, names):
        out = os.path.join(src, "..", "out.bin")
        extra = ["--options", ",".join(options)] if options else []
        _tool(["bsdtar", "--format", fmt, *extra, "-cf", out] + names, src)
        return out
    return _with_files(members, run)


# -- RAR, stored method, written by hand ---------------------------------

def _rar4_block(head_type: int, flags: int, body: bytes, add_size: int | None = None) -> bytes:
    if add_size is not None:
        flags |= 0x8000
    size = 7 + len(body) + (4 if add_size is not None else 0)
    rest = struct.pack("<BHH", head_type, flags, size)
    if add_size is not None:
        rest += struct.pack("<I", add_size)
    rest += body
    return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest


def rar4_stored(members: Members, encrypted: bool = False) -> bytes:
    """A RAR 4 archive whose files are stored (method 0x30); `encrypted` sets the file flag."""
    out = bytearray(b"Rar!\x1a\x07\x00")
    out += _rar4_block(0x73, 0, b"\0" * 6)
    for name, data in members:
        raw = name.encode()
        body = struct.pack("<IBIIBBHI", len(data), 3, zlib.crc32(data), 0x58210000, 29, 0x30,
                           len(raw), 0o100644) + raw
        out += _rar4_block(0x74, 0x04 if encrypted else 0, body, add_size=len(data))
        out += data
    out += _rar4_block(0x7B, 0x4000, b"")
    return bytes(out)


def _vint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _rar5_block(fields: bytes) -> bytes:
    size = _vint(len(fields))
    return struct.pack("<I", zlib.crc32(size + fields)) + size + fields


def rar5_stored(members: Members) -> bytes:
    """A RAR 5 archive whose files are stored (compression method 0)."""
    out = bytearray(b"Rar!\x1a\x07\x01\x00")
    out += _rar5_block(_vint(1) + _vint(0) + _vint(0))  # main archive header
    for name, data in members:
        raw = name.encode()
        file_fields = (_vint(0x04) + _vint(len(data)) + _vint(0o100644) + struct.pack("<I", zlib.crc32(data))
                       + _vint(0) + _vint(1) + _vint(len(raw)) + raw)
        header = _vint(2) + _vint(0x02) + _vint(len(data)) + file_fields
        out += _rar5_block(header) + data
    out += _rar5_block(_vint(5) + _vint(0) + _vint(0))  # end of archive
    return bytes(out)


# -- differential runs -----------------------------------------------------

def hdb_line(data: bytes, name: str) -> str:
    import hashlib

    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"


def run_both(tmp_path, files: dict[str, bytes], signatures: list[str], *flags: str,
             allmatch: bool = False, clamscan_cache: bool = True):
    """Write `files` and an .hdb of `signatures`, scan them with clamscan and clammail.

    Returns (clamscan results, clammail results) as {file name: [names]}.
    Member contents should be unique per file: clamscan's clean cache spans
    the files of one run, and an object seen clean in one file is skipped
    in the next; or pass clamscan_cache=False.
    """
    from conftest import clammail_results, clamscan_results

    folder = tmp_path / "files"
    folder.mkdir(exist_ok=True)
    paths = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    db = tmp_path / "archive-test.hdb"
    db.write_text("".join(signatures) or "00000000000000000000000000000000:1:Never\n")
    oracle_flags = flags if clamscan_cache else (*flags, "--disable-cache")
    _, theirs, err1 = clamscan_results([db], paths, *oracle_flags, allmatch=allmatch)
    _, ours, err2 = clammail_results([db], paths, *flags, allmatch=allmatch)
    assert "Traceback" not in err2, err2

    def short(results):
        return {os.path.basename(path): sorted(names) for path, names in results.items()}

    return short(theirs), short(ours)
