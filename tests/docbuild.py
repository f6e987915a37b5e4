"""Builders for test documents: OLE2 (compound files) with VBA projects, RTF, PDF, OneNote.

Nothing here is used by clammail itself; tests write these files, scan them
with clamscan and with clammail, and compare. The OLE2 writer follows
MS-CFB version 3 (512-byte sectors, a mini stream for streams under 4096
bytes); the VBA project follows MS-OVBA (a compressed `dir` stream and
module streams whose source starts at MODULEOFFSET). A OneNote section
follows MS-ONESTORE as far as ClamAV looks: the 1024-byte header and
FileDataStoreObjects (without the file node lists that would make it a
document OneNote itself opens).
"""

from __future__ import annotations

import random
import struct
import zlib

SECTOR = 512
MINI = 64
CUTOFF = 4096
FREE, END, FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD

# A tree node: (name, bytes) is a stream, (name, [nodes]) a storage.


def build_ole2(tree: list, clsid: bytes = b"\0" * 16) -> bytes:
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "children": []}]

    def add(nodes, parent):
        for name, content in nodes:
            index = len(entries)
            if isinstance(content, list):
                entries.append({"name": name, "type": 1, "children": []})
                parent["children"].append(index)
                add(content, entries[index])
            else:
                entries.append({"name": name, "type": 2, "data": bytes(content), "children": []})
                parent["children"].append(index)

    add(tree, entries[0])
    mini_stream = bytearray()
    minifat: list[int] = []
    big: list[tuple[int, bytes]] = []
    for index, entry in enumerate(entries):
        if entry["type"] != 2:
            continue
        data = entry["data"]
        if len(data) < CUTOFF:
            if not data:
                entry["start"], entry["size"] = END, 0
                continue
            first = len(minifat)
            count = -(-len(data) // MINI)
            minifat += [first + k + 1 for k in range(count - 1)] + [END]
            entry["start"], entry["size"] = first, len(data)
            mini_stream += data + b"\0" * (count * MINI - len(data))
        else:
            big.append((index, data))
    dir_sectors = -(-len(entries) // 4)
    minifat_sectors = -(-len(minifat) * 4 // SECTOR) if minifat else 0
    ministream_sectors = -(-len(mini_stream) // SECTOR)
    big_sectors = [-(-len(d) // SECTOR) for _, d in big]
    payload = dir_sectors + minifat_sectors + ministream_sectors + sum(big_sectors)
    fat_sectors = 1
    while fat_sectors * 128 < payload + fat_sectors:
        fat_sectors += 1
    assert fat_sectors <= 109, "test builder: file too large"
    fat = [FATSECT] * fat_sectors
    next_sector = fat_sectors

    def chain(count):
        nonlocal next_sector
        start = next_sector
        for k in range(count):
            fat.append(start + k + 1 if k < count - 1 else END)
        next_sector += count
        return start

    dir_start = chain(dir_sectors)
    minifat_start = chain(minifat_sectors) if minifat_sectors else END
    ministream_start = chain(ministream_sectors) if ministream_sectors else END
    for (index, data), count in zip(big, big_sectors, strict=True):
        entries[index]["start"] = chain(count)
        entries[index]["size"] = len(data)
    entries[0]["start"], entries[0]["size"] = ministream_start, len(mini_stream)
    fat += [FREE] * (fat_sectors * 128 - len(fat))

    directory = bytearray()
    for entry in entries:
        kids = entry["children"]
        entry["child"] = kids[0] if kids else FREE
        for a, b in zip(kids, kids[1:], strict=False):
            entries[a]["right"] = b
    for entry in entries:
        name = entry["name"].encode("utf-16-le") + b"\0\0"
        record = name.ljust(64, b"\0") + struct.pack(
            "<HBBIII16sIQQII", len(name), entry["type"], 1, FREE, entry.get("right", FREE),
            entry["child"], clsid if entry["type"] == 5 else b"\0" * 16, 0, 0, 0,
            entry.get("start", END if entry["type"] != 1 else 0), entry.get("size", 0),
        ) + b"\0" * 4
        directory += record
    directory += (b"\0" * 64 + struct.pack("<HBBIII16sIQQII", 0, 0, 0, FREE, FREE, FREE,
                                           b"\0" * 16, 0, 0, 0, 0, 0) + b"\0" * 4) * (
        dir_sectors * 4 - len(entries))

    header = bytearray(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16)
    header += struct.pack("<HHHHH6sIIIIIIIII", 0x3E, 3, 0xFFFE, 9, 6, b"\0" * 6, 0, fat_sectors,
                          dir_start, 0, CUTOFF, minifat_start, minifat_sectors, END, 0)
    header += b"".join(struct.pack("<I", k) for k in range(fat_sectors))
    header += struct.pack("<I", FREE) * (109 - fat_sectors)
    body = bytearray()
    body += b"".join(struct.pack("<I", v) for v in fat)
    body += directory
    if minifat_sectors:
        mf = b"".join(struct.pack("<I", v) for v in minifat)
        body += mf.ljust(minifat_sectors * SECTOR, b"\xff")
    body += bytes(mini_stream).ljust(ministream_sectors * SECTOR, b"\0")
    for (_, data), count in zip(big, big_sectors, strict=True):
        body += data.ljust(count * SECTOR, b"\0")
    return bytes(header) + bytes(body)


# -- MS-OVBA ------------------------------------------------------------------


def ovba_compress(data: bytes) -> bytes:
    """A valid compressed container using literal tokens only (chunks of up to 4096 bytes)."""
    out = bytearray(b"\x01")
    for start in range(0, max(len(data), 1), 4096):
        chunk = data[start: start + 4096]
        if len(chunk) == 4096:
            # A raw (uncompressed) chunk: exactly 4096 bytes.
            out += struct.pack("<H", (4096 + 2 - 3) | 0x3000) + chunk
            continue
        body = bytearray()
        for k in range(0, len(chunk), 8):
            body.append(0)
            body += chunk[k: k + 8]
        out += struct.pack("<H", (len(body) + 2 - 3) | 0x3000 | 0x8000) + body
    return bytes(out)


def _record(rid: int, data: bytes) -> bytes:
    return struct.pack("<HI", rid, len(data)) + data


def vba_dir_stream(modules: list[tuple[str, int]], project: str = "VBAProject") -> bytes:
    """The decompressed `dir` stream for modules given as (name, source offset)."""
    out = bytearray()
    out += _record(0x0001, struct.pack("<I", 1))
    out += _record(0x0002, struct.pack("<I", 0x409))
    out += _record(0x0014, struct.pack("<I", 0x409))
    out += _record(0x0003, struct.pack("<H", 1252))
    out += _record(0x0004, project.encode())
    out += _record(0x0005, b"") + _record(0x0040, b"")
    out += _record(0x0006, b"") + _record(0x003D, b"")
    out += _record(0x0007, struct.pack("<I", 0))
    out += _record(0x0008, struct.pack("<I", 0))
    out += struct.pack("<HIIH", 0x0009, 4, 1, 0)
    out += _record(0x000C, b"") + _record(0x003C, b"")
    out += _record(0x000F, struct.pack("<H", len(modules)))
    out += _record(0x0013, struct.pack("<H", 0xFFFF))
    for name, offset in modules:
        out += _record(0x0019, name.encode())
        out += _record(0x0047, name.encode("utf-16-le"))
        out += _record(0x001A, name.encode()) + _record(0x0032, name.encode("utf-16-le"))
        out += _record(0x001C, b"") + _record(0x0048, b"")
        out += _record(0x0031, struct.pack("<I", offset))
        out += _record(0x001E, struct.pack("<I", 0))
        out += _record(0x002C, struct.pack("<H", 0xFFFF))
        out += _record(0x0021, b"")
        out += _record(0x002B, b"")
    out += _record(0x0010, b"")
    return bytes(out)


# Stands in for the compiled p-code that precedes the source in real files
# (and keeps the module streams from being typed as text).
PCODE = bytes(random.Random(3).randrange(256) for _ in range(512))


def vba_storage(modules: dict[str, str], performance_cache: bytes = PCODE) -> list:
    """The `VBA` storage for {module name: source}; the source follows an optional p-code cache."""
    streams = [("_VBA_PROJECT", b"\xcc\x61\xff\xff\x00\x00\x00")]
    offsets = []
    for name, source in modules.items():
        offsets.append((name, len(performance_cache)))
        streams.append((name, performance_cache + ovba_compress(source.encode("latin-1"))))
    streams.append(("dir", ovba_compress(vba_dir_stream(offsets))))
    return streams


def word_document_with_macros(modules: dict[str, str], extra: list | None = None) -> bytes:
    word = struct.pack("<HH", 0xA5EC, 0xC1) + b"\0" * 60
    tree = [("WordDocument", word), ("1Table", b"\0" * 16)]
    tree.append(("Macros", [("VBA", vba_storage(modules)), ("PROJECT", b'ID="{0}"\r\n')]))
    return build_ole2(tree + (extra or []))


def ole10native(payload: bytes, name: str = "file.bin") -> bytes:
    inner = (struct.pack("<H", 2) + name.encode() + b"\0" + b"C:\\" + name.encode() + b"\0"
             + struct.pack("<HH", 0, 3) + struct.pack("<I", len(name) + 4)
             + b"C:\\" + name.encode() + b"\0" + struct.pack("<I", len(payload)) + payload)
    return struct.pack("<I", len(inner)) + inner


def mso_stream(payload: bytes) -> bytes:
    """An "MSO" stream: a 4-byte size, then the zlib-compressed payload."""
    return struct.pack("<I", len(payload)) + zlib.compress(payload)


# -- RTF ----------------------------------------------------------------------


def rtf_with_object(blob: bytes, classname: str = "Package", space: str = " ") -> bytes:
    header = (struct.pack("<II", 0x0501, 2) + struct.pack("<I", len(classname) + 1)
              + classname.encode() + b"\0" + struct.pack("<II", 0, 0) + struct.pack("<I", len(blob)))
    hexdata = (header + blob).hex()
    lines = "\n".join(hexdata[k: k + 64] for k in range(0, len(hexdata), 64))
    return (b"{\\rtf1\\ansi{\\fonttbl{\\f0 Times;}}\\pard Hello\\par"
            b"{\\object\\objemb{\\*\\objclass " + classname.encode() + b"}{\\*\\objdata"
            + space.encode() + lines.encode() + b"}}}")


# -- PDF ----------------------------------------------------------------------


def pdf_file(objects: list[bytes], trailer_extra: bytes = b"", xref: bool = True) -> bytes:
    """A PDF with these object bodies (numbered from 1); object 1 should be the catalog."""
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    if xref:
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        for off in offsets:
            out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, trailer_extra, start)
    return bytes(out)


def pdf_stream(data: bytes, dictionary: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(data), dictionary) + data + b"\nendstream"


# -- OneNote -----------------------------------------------------------------

ONENOTE_MAGIC = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3")  # guidFileType of .one
_ONESTORE_FORMAT = bytes.fromhex("3fdd9a101b91f549a5d01791edc8aed8")  # guidFileFormat
FILE_DATA_STORE = bytes.fromhex("e716e3bd65261145a4c48d4d0b7a9eac")  # guidHeader
_FILE_DATA_FOOTER = bytes.fromhex("22a7fb71790f0b4abb13899256426b24")  # guidFooter


def onenote_header(total_length: int, seed: int = 1) -> bytes:
    """The 1024-byte MS-ONESTORE header (2.3.1) of a .one section."""
    rng = random.Random(seed)
    version = struct.pack("<IIII", 0x2A, 0x2A, 0x2A, 0x2A)
    head = ONENOTE_MAGIC + rng.randbytes(16) + b"\0" * 16 + _ONESTORE_FORMAT + version
    head = bytearray(head.ljust(1024, b"\0"))
    struct.pack_into("<Q", head, 196, total_length)  # cbExpectedFileLength
    return bytes(head)


def file_data_store(payload: bytes, length: int | None = None, footer: bool = True) -> bytes:
    """A FileDataStoreObject (2.6.13): header GUID, cbLength, 12 reserved bytes,
    the data padded to 8 bytes, the footer GUID. `length` overrides cbLength."""
    cb = len(payload) if length is None else length
    padded = payload + b"\0" * (-len(payload) % 8)
    return FILE_DATA_STORE + struct.pack("<QIQ", cb, 0, 0) + padded + (_FILE_DATA_FOOTER if footer else b"")


def onenote_section(objects: list[bytes], filler: bytes = b"", seed: int = 1) -> bytes:
    """A .one file: the header, `filler`, then the given objects in order."""
    body = filler + b"".join(objects)
    return onenote_header(1024 + len(body), seed) + body


# -- scanning both ways -------------------------------------------------------


def ndb_line(name: str, target: int, text: bytes) -> str:
    return f"{name}:{target}:*:{text.hex()}"


def clammail_scan(databases, paths, options=None, allmatch=False) -> dict[str, list[str]]:
    """clammail's answers for `paths`, in process."""
    from clammail.engine import Engine, ScanOptions
    from clammail.signatures.loader import load_database

    db = load_database([str(d) for d in databases])
    engine = Engine(db, ScanOptions.from_mapping(options or {}))
    results = {}
    for path in paths:
        result = engine.scan_file(str(path), allmatch=allmatch)
        results[str(path)] = list(result.detections)
    return results
