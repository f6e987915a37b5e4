"""Archives and compressed files: which reader opens which format, and ClamAV's limits.

`unpack_archive` is the unpacker the registry gives every archive type. It
types the data again (the engine hands over bytes only), picks the reader
and applies ClamAV 1.4.6's rules for that format:

- zip (and the OOXML/ODF documents that are zips): `archive_zip`, ClamAV's
  own algorithm; gzip, bzip2, xz: `archive_streams`; ISO 9660:
  `archive_iso`; RAR with the RAR 1.5 and 2.0 methods: `rar`; tar, cpio,
  7z, other RAR 1.5-4.x and RAR 5, cab, LHA/LZH: libarchive
  (`archive_lib`); xar: `archive_xar`, ClamAV's algorithm.
- What happens to a member bigger than MaxFileSize or than what is left of
  MaxScanSize differs by format in ClamAV, and is copied per format in
  `_POLICIES` (measured with clamscan --gen-json, which lists what it
  extracted): cut to fit silently (cab, zip), cut with a heuristic (tar),
  skipped with a heuristic (7z, LHA, ISO, RAR), or the end of the archive
  (cpio, xar, and zip for MaxScanSize).
- Encrypted members: Heuristics.Encrypted.Zip / .7Zip / .RAR with
  AlertEncryptedArchive or AlertEncrypted.
- Broken or truncated input is never an error: what could be read is
  scanned, the rest is ignored, like clamscan.
- Formats ClamAV 1.4.6 does not open (zstd, bare lzma, ar, LZMA inside zip)
  are opened only with the clammail option ExtraArchiveFormats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from clammail.formats.filetypes import FileType, detect
from clammail.formats.zip import find_central_directory
from clammail.unpack import archive_streams as streams
from clammail.unpack import archive_zip as zipfmt
from clammail.unpack import rar
from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext

log = logging.getLogger(__name__)

EXTRA_OPTION = "ExtraArchiveFormats"
# tar members are copied in 512-byte blocks: a member cut to fit is cut there.
TAR_BLOCK = 512
_UNLIMITED = 1 << 62
# With MaxFileSize and MaxScanSize both off, ClamAV writes any amount to
# disk; clammail holds members in memory, so one member stops here.
MEMBER_CAP = 1 << 30


def unpack_archive(data, ctx: UnpackContext) -> Iterator[Extracted]:
    ftype = detect(data, extra_formats=bool(ctx.option(EXTRA_OPTION)))
    handler = _HANDLERS.get(ftype)
    if handler is None:
        ctx.debug(f"archive: no reader for {ftype.value}")
        return
    yield from handler(data, ctx)


# -- limits ---------------------------------------------------------------

class Limits:
    """MaxFileSize and MaxScanSize as one archive member sees them."""

    def __init__(self, ctx: UnpackContext):
        self.ctx = ctx
        self.file_limit: int | None = ctx.option("MaxFileSize") or None

    def scan_left(self) -> int | None:
        """Bytes left under MaxScanSize, None without that limit."""
        left = getattr(self.ctx, "scan_size_left", None)
        if left is not None:
            return left()
        # Older engines: max_object_size() is min(MaxFileSize, scan left).
        room = self.ctx.max_object_size()
        if self.file_limit is None or room < self.file_limit:
            return None if room >= _UNLIMITED else room
        return None

    def room(self) -> int:
        """The most a member may have and still be scanned whole."""
        limits = [limit for limit in (self.file_limit, self.scan_left()) if limit is not None]
        return min([*limits, MEMBER_CAP])

    def exceeded(self, size: int) -> str | None:
        """Which limit a member of `size` bytes breaks; MaxScanSize wins, as in ClamAV."""
        left = self.scan_left()
        if left is not None and size > left:
            return "MaxScanSize"
        if self.file_limit is not None and size > self.file_limit:
            return "MaxFileSize"
        return None

    def alert(self, limit: str) -> None:
        """A member left out (or cut) for `limit`, and the archive goes on."""
        report = getattr(self.ctx, "limit_exceeded", None)
        if report is not None:
            report(limit)
        elif self.ctx.option("AlertExceedsMax"):
            self.ctx.alert(f"Heuristics.Limits.Exceeded.{limit}")


def _alert_encrypted(ctx: UnpackContext, name: str) -> None:
    # clamd's AlertEncrypted means both AlertEncryptedArchive and AlertEncryptedDoc.
    if ctx.option("AlertEncryptedArchive") or ctx.option("AlertEncrypted"):
        ctx.alert(name)


def _extras(ctx: UnpackContext) -> bool:
    try:
        return bool(ctx.option(EXTRA_OPTION))
    except KeyError:
        return False


# -- zip ------------------------------------------------------------------

def _zip(data, ctx: UnpackContext) -> Iterator[Extracted]:
    coff = find_central_directory(data, ctx.check)
    if coff is None:
        ctx.debug("zip: no central directory, nothing extracted (as ClamAV)")
        return
    try:
        records = zipfmt.index_central_directory(
            data, coff, lambda: _alert_encrypted(ctx, "Heuristics.Encrypted.Zip"), ctx.check)
    except zipfmt.ZipError:
        ctx.alert("Heuristics.Zip.OverlappingFiles")
        return
    limits = Limits(ctx)
    extras = _extras(ctx)
    entries = unzipped = 0
    for record in zipfmt.unique(records):
        entries += 1
        for child in _zip_entry(data, record, limits, extras):
            unzipped += 1
            yield child
    # ClamAV walks the local headers too when the central directory let it
    # extract a quarter of its entries or fewer (but at least one).
    if 0 < unzipped <= entries // 4:
        for record in zipfmt.walk_local_headers(data, ctx.check):
            yield from _zip_entry(data, record, limits, extras)


def zip_single_entry(data, offset: int, ctx: UnpackContext) -> Iterator[Extracted]:
    """The one entry whose local header is at `offset` (zip data inside another file)."""
    record, _consumed, _encrypted = zipfmt.parse_local(data, offset, None)
    if record is not None:
        yield from _zip_entry(data, record, Limits(ctx), _extras(ctx))


def _zip_entry(data, record: zipfmt.Record, limits: Limits, extras: bool) -> Iterator[Extracted]:
    limits.ctx.check()
    if record.encrypted:
        return  # no password to try
    if record.method == zipfmt.STORED and record.csize < record.usize:
        # ClamAV first tries such an entry as deflate data, then stored.
        inflated = zipfmt.Record(record.name, record.offset, record.header_size, record.csize,
                                 record.usize, zipfmt.DEFLATED, record.flags)
        yield from _zip_extract(data, inflated, limits, extras)
    yield from _zip_extract(data, record, limits, extras)


def _zip_extract(data, record: zipfmt.Record, limits: Limits, extras: bool) -> Iterator[Extracted]:
    file_limit, scan_left = limits.file_limit, limits.scan_left()
    # ClamAV decompresses up to MaxFileSize and keeps that much; only then
    # does the member meet MaxScanSize.
    cap = file_limit or (scan_left if scan_left is not None else MEMBER_CAP)
    try:
        out, more = zipfmt.decompress(record, data, min(cap, MEMBER_CAP), extras)
    except (zipfmt.Unsupported, zipfmt.Corrupt) as exc:
        limits.ctx.debug(f"zip: {record.name}: not extracted ({exc})")
        return
    if more and file_limit is not None and file_limit <= MEMBER_CAP:
        # Cut where ClamAV's write loop stopped: exactly at MaxFileSize for
        # stored data, at a whole 8 KiB output buffer for compressed data.
        if record.method != zipfmt.STORED:
            out = out[:file_limit // zipfmt.OUTPUT_CHUNK * zipfmt.OUTPUT_CHUNK]
    elif more:
        raise LimitExceeded("MaxScanSize" if scan_left is not None and cap == scan_left
                            else "MaxFileSize")
    if scan_left is not None and len(out) > scan_left:
        raise LimitExceeded("MaxScanSize")  # ClamAV skips it and stops the zip
    if out:
        yield Extracted(out, name=record.name, compressed_size=record.csize)


# -- single streams -------------------------------------------------------

def _stream(decoder: Callable, extra: bool = False):
    def unpack(data, ctx: UnpackContext) -> Iterator[Extracted]:
        if extra and not _extras(ctx):
            return
        limits = Limits(ctx)
        room = limits.room()
        result = decoder(data, room)
        if result is None:
            return
        out, more = result
        if more:
            raise LimitExceeded(limits.exceeded(room + 1) or "MaxFileSize")
        if out:
            yield Extracted(out)
    return unpack


# -- libarchive formats ---------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """What a format does with a member over a size limit (see the module doc)."""

    formats: tuple[str, ...]
    oversize: str  # "cut", "cut-alert", "skip" or "stop"
    block: int = 1  # "cut-alert" cuts at a multiple of this
    encrypted: str | None = None  # the heuristic for encrypted members
    extra: bool = False  # only with ExtraArchiveFormats


_POLICIES: dict[FileType, Policy] = {
    FileType.POSIX_TAR: Policy(("tar",), "cut-alert", TAR_BLOCK),
    FileType.OLD_TAR: Policy(("tar",), "cut-alert", TAR_BLOCK),
    FileType.CPIO_OLD: Policy(("cpio",), "stop"),
    FileType.CPIO_ODC: Policy(("cpio",), "stop"),
    FileType.CPIO_NEWC: Policy(("cpio",), "stop"),
    FileType.CPIO_CRC: Policy(("cpio",), "stop"),
    FileType.SEVENZIP: Policy(("7zip",), "skip", encrypted="Heuristics.Encrypted.7Zip"),
    FileType.RAR: Policy(("rar", "rar5"), "skip", encrypted="Heuristics.Encrypted.RAR"),
    FileType.MSCAB: Policy(("cab",), "cut"),
    FileType.LHA_LZH: Policy(("lha",), "skip"),
    FileType.AR: Policy(("ar",), "skip", extra=True),
}


def archive_members(data, ftype: FileType, ctx: UnpackContext) -> Iterator[Extracted]:
    """The members of an archive of type `ftype` found inside another file."""
    yield from _HANDLERS[ftype](data, ctx)


def _libarchive(policy: Policy):
    def unpack(data, ctx: UnpackContext) -> Iterator[Extracted]:
        if policy.extra and not _extras(ctx):
            return
        yield from _libarchive_members(data, ctx, policy)
    return unpack


def _libarchive_members(data, ctx: UnpackContext, policy: Policy) -> Iterator[Extracted]:
    from clammail.unpack.archive_lib import ArchiveBroken, ArchiveReader, LibarchiveMissing

    limits = Limits(ctx)
    try:
        reader = ArchiveReader(data, policy.formats, filters=False)
    except LibarchiveMissing as exc:
        log.warning("archives are not opened: %s", exc)
        return
    except ArchiveBroken as exc:
        _broken(ctx, policy, str(exc))
        return
    with reader:
        try:
            for entry in reader.entries():
                ctx.check()
                if entry.encrypted:
                    if policy.encrypted:
                        _alert_encrypted(ctx, policy.encrypted)
                    if policy.formats == ("7zip",):
                        return  # ClamAV's 7z reader stops at the first encrypted member
                    continue
                if not entry.regular:
                    continue
                child = _member(reader, entry, limits, policy)
                if child is not None:
                    yield child
        except ArchiveBroken as exc:
            _broken(ctx, policy, str(exc))


def _broken(ctx: UnpackContext, policy: Policy, message: str) -> None:
    ctx.debug(f"archive {policy.formats[0]}: {message}")
    if policy.encrypted and "encrypted" in message.lower():
        _alert_encrypted(ctx, policy.encrypted)


def _member(reader, entry, limits: Limits, policy: Policy) -> Extracted | None:
    room = limits.room()
    if policy.oversize in ("skip", "stop") and entry.size is not None and entry.size > room:
        return _oversized(limits, policy, entry.size)
    if entry.size is not None:
        # The header's size is what the member has: some libarchive readers
        # (3.6's xar) have returned data twice.
        out, _more, error = reader.read(min(room, entry.size))
        more = entry.size > room
    else:
        out, more, error = reader.read(room)
    if error:
        limits.ctx.debug(f"archive {policy.formats[0]}: {entry.name}: {error}")
    if more:
        if policy.oversize == "cut":
            pass  # kept as cut, silently
        elif policy.oversize == "cut-alert":
            out = out[:len(out) // policy.block * policy.block]
            limits.alert(limits.exceeded(room + 1) or "MaxFileSize")
        else:
            return _oversized(limits, policy, room + 1)
    if not out:
        return None
    return Extracted(out, name=entry.name, encrypted=entry.encrypted)


def _oversized(limits: Limits, policy: Policy, size: int) -> None:
    limit = limits.exceeded(size) or "MaxFileSize"
    if policy.oversize == "stop":
        raise LimitExceeded(limit)
    limits.alert(limit)
    return None


def _rar(data, ctx: UnpackContext) -> Iterator[Extracted]:
    """RAR: old compression methods by clammail's reader, the rest by libarchive."""
    archive = rar.read_rar4(data)
    if rar.wants_own_reader(archive):
        yield from rar.own_members(data, archive, ctx)
    else:
        yield from _libarchive_members(data, ctx, _POLICIES[FileType.RAR])


def _xar(data, ctx: UnpackContext) -> Iterator[Extracted]:
    """xar: the TOC, then each extent it names (`archive_xar`, ClamAV's reader)."""
    from clammail.unpack import archive_xar as xar

    header = xar.read_header(data)
    if header is None:
        return
    limits = Limits(ctx)
    toc = xar.read_toc(data, header, limits.room())
    if toc is None:
        return
    if toc:
        yield Extracted(toc, name=None)
    for extent in xar.extents(toc):
        ctx.check()
        room = limits.room()
        try:
            out = xar.extract(data, header, extent, room, limits.file_limit)
        except xar.HeapUnreadable:
            ctx.debug(f"xar: extent at heap offset {extent.offset} is outside the file")
            return
        if out is None:
            ctx.debug(f"xar: extent at heap offset {extent.offset} does not decompress")
            continue
        if len(out) > room:
            # ClamAV writes the whole member, and its scan of an oversized
            # file ends the archive.
            raise LimitExceeded(limits.exceeded(len(out)) or "MaxFileSize")
        if out:
            yield Extracted(out)  # ClamAV gives xar members no name


# -- ISO 9660 -------------------------------------------------------------

def _iso(data, ctx: UnpackContext) -> Iterator[Extracted]:
    from clammail.unpack import archive_iso as iso

    offset = iso.find_descriptor(data)
    if offset is not None:
        yield from iso_members(data, offset, ctx)


def iso_members(data, offset: int, ctx: UnpackContext) -> Iterator[Extracted]:
    """The files of the ISO image whose primary volume descriptor is at `offset`."""
    from clammail.unpack import archive_iso as iso

    limits = Limits(ctx)
    for tree, entry in iso.iso_files(data, offset, ctx.check):
        limit = limits.exceeded(entry.size)
        if limit:
            limits.alert(limit)
            continue
        out = tree.read(entry, entry.size)
        if out:
            yield Extracted(out, name=entry.name)


_HANDLERS: dict[FileType, Callable[[object, UnpackContext], Iterator[Extracted]]] = {
    FileType.ZIP: _zip,
    FileType.OOXML_WORD: _zip,
    FileType.OOXML_PPT: _zip,
    FileType.OOXML_XL: _zip,
    FileType.OOXML_HWP: _zip,
    FileType.GZ: _stream(streams.gunzip),
    FileType.BZ: _stream(streams.bunzip2),
    FileType.XZ: _stream(streams.unxz),
    FileType.LZMA: _stream(streams.unlzma, extra=True),
    FileType.ZSTD: _stream(streams.unzstd, extra=True),
    FileType.ISO9660: _iso,
    FileType.XAR: _xar,
    FileType.RAR: _rar,
    **{ftype: _libarchive(policy) for ftype, policy in _POLICIES.items()
       if ftype not in (FileType.XAR, FileType.RAR)},
}
