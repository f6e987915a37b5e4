"""File typing: which ClamAV file type (CL_TYPE_*) an object is.

The type chooses the unpacker, decides which body signatures apply (their
target type) and feeds the `Container:` and `Intermediates:` conditions of
logical signatures. Detection follows ClamAV's order: magic bytes at fixed
offsets first (its built-in file-type table), then a look at the content for
text, HTML and mail that do not start with a fixed magic.
"""

from __future__ import annotations

import enum
import re
import struct

from clammail.formats.zip import (
    CENTRAL_MAGIC,
    CENTRAL_SIZE,
    LOCAL_MAGIC,
    LOCAL_SIZE,
    find_central_directory,
)


class FileType(enum.Enum):
    """ClamAV's file types; the value is the name ClamAV uses (CL_TYPE_...)."""

    ANY = "CL_TYPE_ANY"
    TEXT_ASCII = "CL_TYPE_TEXT_ASCII"
    TEXT_UTF8 = "CL_TYPE_TEXT_UTF8"
    TEXT_UTF16LE = "CL_TYPE_TEXT_UTF16LE"
    TEXT_UTF16BE = "CL_TYPE_TEXT_UTF16BE"
    BINARY_DATA = "CL_TYPE_BINARY_DATA"
    IGNORED = "CL_TYPE_IGNORED"
    # executables
    MSEXE = "CL_TYPE_MSEXE"
    ELF = "CL_TYPE_ELF"
    MACHO = "CL_TYPE_MACHO"
    MACHO_UNIBIN = "CL_TYPE_MACHO_UNIBIN"
    JAVA = "CL_TYPE_JAVA"
    # archives and compressed data
    ZIP = "CL_TYPE_ZIP"
    ZIPSFX = "CL_TYPE_ZIPSFX"
    RAR = "CL_TYPE_RAR"
    RARSFX = "CL_TYPE_RARSFX"
    SEVENZIP = "CL_TYPE_7Z"
    SEVENZIPSFX = "CL_TYPE_7ZSFX"
    ARJ = "CL_TYPE_ARJ"
    ARJSFX = "CL_TYPE_ARJSFX"
    GZ = "CL_TYPE_GZ"
    BZ = "CL_TYPE_BZ"
    XZ = "CL_TYPE_XZ"
    LZMA = "CL_TYPE_LZMA"
    ZSTD = "CL_TYPE_ZSTD"
    POSIX_TAR = "CL_TYPE_POSIX_TAR"
    OLD_TAR = "CL_TYPE_OLD_TAR"
    CPIO_OLD = "CL_TYPE_CPIO_OLD"
    CPIO_ODC = "CL_TYPE_CPIO_ODC"
    CPIO_NEWC = "CL_TYPE_CPIO_NEWC"
    CPIO_CRC = "CL_TYPE_CPIO_CRC"
    MSCAB = "CL_TYPE_MSCAB"
    CABSFX = "CL_TYPE_CABSFX"
    MSCHM = "CL_TYPE_MSCHM"
    MSSZDD = "CL_TYPE_MSSZDD"
    ISO9660 = "CL_TYPE_ISO9660"
    LHA_LZH = "CL_TYPE_LHA_LZH"
    AR = "CL_TYPE_AR"
    ALZ = "CL_TYPE_ALZ"
    EGG = "CL_TYPE_EGG"
    XAR = "CL_TYPE_XAR"
    DMG = "CL_TYPE_DMG"
    SIS = "CL_TYPE_SIS"
    NULSFT = "CL_TYPE_NULSFT"
    AUTOIT = "CL_TYPE_AUTOIT"
    ISHIELD_MSI = "CL_TYPE_ISHIELD_MSI"
    # mail and encodings
    MAIL = "CL_TYPE_MAIL"
    MHTML = "CL_TYPE_MHTML"
    UUENCODED = "CL_TYPE_UUENCODED"
    BINHEX = "CL_TYPE_BINHEX"
    TNEF = "CL_TYPE_TNEF"
    # documents
    MSOLE2 = "CL_TYPE_MSOLE2"
    OOXML_WORD = "CL_TYPE_OOXML_WORD"
    OOXML_PPT = "CL_TYPE_OOXML_PPT"
    OOXML_XL = "CL_TYPE_OOXML_XL"
    OOXML_HWP = "CL_TYPE_OOXML_HWP"
    XML_WORD = "CL_TYPE_XML_WORD"
    XML_XL = "CL_TYPE_XML_XL"
    XML_HWP = "CL_TYPE_XML_HWP"
    HWP3 = "CL_TYPE_HWP3"
    HWPOLE2 = "CL_TYPE_HWPOLE2"
    PDF = "CL_TYPE_PDF"
    XDP = "CL_TYPE_XDP"
    PS = "CL_TYPE_PS"
    RTF = "CL_TYPE_RTF"
    HTML = "CL_TYPE_HTML"
    HTML_UTF16 = "CL_TYPE_HTML_UTF16"
    SCRIPT = "CL_TYPE_SCRIPT"
    SCRENC = "CL_TYPE_SCRENC"
    SWF = "CL_TYPE_SWF"
    LNK = "CL_TYPE_LNK"
    ONENOTE = "CL_TYPE_ONENOTE"
    # graphics
    GRAPHICS = "CL_TYPE_GRAPHICS"
    GIF = "CL_TYPE_GIF"
    PNG = "CL_TYPE_PNG"
    JPEG = "CL_TYPE_JPEG"
    TIFF = "CL_TYPE_TIFF"
    RIFF = "CL_TYPE_RIFF"
    # disk images
    MBR = "CL_TYPE_MBR"
    GPT = "CL_TYPE_GPT"
    APM = "CL_TYPE_APM"
    PART_HFSPLUS = "CL_TYPE_PART_HFSPLUS"
    UDF = "CL_TYPE_UDF"
    CRYPTFF = "CL_TYPE_CRYPTFF"
    INTERNAL = "CL_TYPE_INTERNAL"

    @classmethod
    def from_name(cls, name: str) -> FileType:
        """The type for a ClamAV name such as ``CL_TYPE_ZIP``; ValueError if unknown."""
        return cls(name)


# The numeric target types of .ndb signatures and the Target: field of .ldb
# signatures (ClamAV documentation, "Target Types"). 3 and 7 are matched on
# normalized HTML and normalized text, not on the raw bytes.
class Target(enum.IntEnum):
    ANY = 0
    PE = 1
    OLE2 = 2
    HTML = 3
    MAIL = 4
    GRAPHICS = 5
    ELF = 6
    TEXT = 7
    UNUSED = 8
    MACHO = 9
    PDF = 10
    FLASH = 11
    JAVA = 12
    INTERNAL = 13
    OTHER = 14  # unrecognised binary data, in a second pass


MAX_TARGET = 14  # ClamAV 1.4 accepts target numbers up to 14 (CLI_MTARGETS - 1)

# The raw bytes of an object of this type are matched against signatures of
# this target (and of target 0). Types not listed only see target 0; text is
# matched as target 7 only in its normalized form (clammail.engine.textnorm).
RAW_TARGET: dict[FileType, Target] = {
    FileType.MSEXE: Target.PE,
    FileType.MSOLE2: Target.OLE2,
    FileType.HTML: Target.HTML,
    FileType.MAIL: Target.MAIL,
    FileType.GRAPHICS: Target.GRAPHICS,
    FileType.GIF: Target.GRAPHICS,
    FileType.PNG: Target.GRAPHICS,
    FileType.JPEG: Target.GRAPHICS,
    FileType.TIFF: Target.GRAPHICS,
    FileType.ELF: Target.ELF,
    FileType.MACHO: Target.MACHO,
    FileType.MACHO_UNIBIN: Target.MACHO,
    FileType.PDF: Target.PDF,
    FileType.SWF: Target.FLASH,
    FileType.JAVA: Target.JAVA,
}

ARCHIVE_TYPES = frozenset(
    {
        FileType.ZIP, FileType.RAR, FileType.SEVENZIP, FileType.ARJ, FileType.GZ,
        FileType.BZ, FileType.XZ, FileType.LZMA, FileType.ZSTD, FileType.POSIX_TAR,
        FileType.OLD_TAR, FileType.CPIO_OLD, FileType.CPIO_ODC, FileType.CPIO_NEWC,
        FileType.CPIO_CRC, FileType.MSCAB, FileType.MSCHM, FileType.ISO9660,
        FileType.LHA_LZH, FileType.AR, FileType.ALZ, FileType.EGG, FileType.XAR,
        FileType.DMG, FileType.SIS, FileType.MSSZDD,
    }
)

# (offset, magic, type) checked in this order; the first hit wins. These are
# the fixed-offset entries of ClamAV's built-in file-type table.
_MAGIC: list[tuple[int, bytes, FileType]] = [
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", FileType.GRAPHICS),  # JPEG 2000
    (0, b"\x1f\x8b", FileType.GZ),
    (0, b"#@~^", FileType.SCRENC),
    (0, b"%!PS-Adobe-", FileType.PS),
    (0, b"(This file must be converted with BinHex 4.0)", FileType.BINHEX),
    (0, b">From ", FileType.MAIL),
    (0, b"BZh", FileType.BZ),
    (0, b"GIF", FileType.GIF),
    (0, b"ITSF", FileType.MSCHM),
    (0, b"MZ", FileType.MSEXE),
    (0, b"PK\x03\x04", FileType.ZIP),
    (0, b"PK00PK\x03\x04", FileType.ZIP),
    (0, b"RIFF", FileType.RIFF),
    (0, b"RIFX", FileType.RIFF),
    (0, b"Rar!", FileType.RAR),
    (0, b"SZDD", FileType.MSSZDD),
    (0, b"\x60\xea", FileType.ARJ),
    (0, b"begin ", FileType.UUENCODED),
    (0, b"\x78\x9f\x3e\x22", FileType.TNEF),
    (0, b"\x7fELF", FileType.ELF),
    (0, b"\x89PNG", FileType.PNG),
    (0, b"\xb6\xb9\xac\xae\xfe\xff\xff\xff", FileType.CRYPTFF),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", FileType.MSOLE2),
    (0, b"\xff\xd8\xff", FileType.JPEG),
    (0, b"{\\rt", FileType.RTF),
    (257, b"ustar", FileType.POSIX_TAR),
    (0, b"\xce\xfa\xed\xfe", FileType.MACHO),
    (0, b"\xcf\xfa\xed\xfe", FileType.MACHO),
    (0, b"\xfe\xed\xfa\xce", FileType.MACHO),
    (0, b"\xfe\xed\xfa\xcf", FileType.MACHO),
    (0, b"\xca\xfe\xba\xbe", FileType.MACHO),  # universal binary or Java class: see _refine
    (0, b"7z\xbc\xaf\x27\x1c", FileType.SEVENZIP),
    (0, b"070701", FileType.CPIO_NEWC),
    (0, b"070702", FileType.CPIO_CRC),
    (0, b"070707", FileType.CPIO_ODC),
    (0, b"\x71\xc7", FileType.CPIO_OLD),
    (0, b"\xc7\x71", FileType.CPIO_OLD),
    (0, b"%PDF-", FileType.PDF),
    (0, b"ZWS", FileType.SWF),
    (0, b"CWS", FileType.SWF),
    (0, b"FWS", FileType.SWF),
    (0, b"MSCF\x00\x00\x00\x00", FileType.MSCAB),
    (0, b"xar!", FileType.XAR),
    (0, b"\xfd7zXZ\x00", FileType.XZ),
    (0, b"II*\x00", FileType.TIFF),
    (0, b"MM\x00*", FileType.TIFF),
    (0, b"L\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00F", FileType.LNK),
    (0, b"EGGA", FileType.EGG),
    (0, b"ALZ\x01", FileType.ALZ),
    (0, bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3"), FileType.ONENOTE),
    # Not in ClamAV 1.4.6's table: typed only with ExtraArchiveFormats.
    (0, b"\x28\xb5\x2f\xfd", FileType.ZSTD),
    (0, b"!<arch>\n", FileType.AR),
    (0, b"\x5d\x00\x00", FileType.LZMA),
]
EXTRA_FORMAT_TYPES = frozenset({FileType.ZSTD, FileType.AR, FileType.LZMA})


def _magic_matchers(table) -> list:
    """The table as few compiled matchers, first entry winning as in a loop
    over it: one alternation per run of offset-0 magics, a plain check for
    each magic at another offset. (A Python loop over the table cost ~20 us
    per object; typing runs for every object and every line a mail parser
    tries.)"""
    matchers: list = []
    run: list[tuple[bytes, FileType]] = []

    def close_run():
        if run:
            types = {f"t{i}": ftype for i, (_, ftype) in enumerate(run)}
            pattern = re.compile(
                b"|".join(b"(?P<t%d>%s)" % (i, re.escape(m)) for i, (m, _) in enumerate(run))
            )
            matchers.append((pattern, types))
            run.clear()

    for offset, magic, ftype in table:
        if offset == 0:
            run.append((magic, ftype))
        else:
            close_run()
            matchers.append((offset, magic, ftype))
    close_run()
    return matchers


_MATCHERS = {
    extra: _magic_matchers([e for e in _MAGIC if extra or e[2] not in EXTRA_FORMAT_TYPES])
    for extra in (False, True)
}


def _magic_type(head: bytes, extra_formats: bool) -> FileType | None:
    for matcher in _MATCHERS[extra_formats]:
        if len(matcher) == 2:
            found = matcher[0].match(head)
            if found is not None:
                return matcher[1][found.lastgroup]
        elif head.startswith(matcher[1], matcher[0]):
            return matcher[2]
    return None

# What typing looks at: the first kilobyte, like libclamav's magic buffer
# (CL_FILE_MBUFF_SIZE). Content further in does not change the type.
TYPING_WINDOW = 1024

# Mail, HTML and a few others are recognised by patterns that may sit
# anywhere in the typing window (ClamAV's "type 1" file-type signatures).
# Their case variants are exactly the ones ClamAV lists: "<HtMl>" is not HTML.
_HTML_TAGS = re.compile(
    rb"<(?:A |a )[^\0]*?(?:[hH][rR](?:EF|ef))"
    rb"|<(?:HEAD>|HTML>|Head>|Html>|IFRAME|IMG|Img|OBJECT|Object|SCRIPT|Script|TABLE"
    rb"|head>|html>|iframe|img|object|script|table)",
    re.DOTALL,
)
_HTML_ASP = b"<%@ LANGUAGE ="
# "Mail file": a From:/MIME-Version:/Message-Id:/Received: header starting
# within the first 1024 (2048 for Received) bytes, followed within a couple
# of kilobytes by a Content-Type: header.
_MAIL_PAIRS = re.compile(
    rb"\n(?:[Ff]rom: [^\0]{0,1024}?\n(?:[Mm][Ii][Mm][Ee]-[Vv]ersion: |[Cc]ontent-[Tt]ype: )"
    rb"|[Mm][Ii][Mm][Ee]-[Vv]ersion: [^\0]{0,2048}?\n[Cc]ontent-[Tt]ype: "
    rb"|[Mm]essage-[Ii]d: [^\0]{0,1024}?\n[Cc]ontent-[Tt]ype: "
    rb"|[Rr]eceived: [^\0]{0,2048}?\n[Cc]ontent-[Tt]ype: )",
    re.DOTALL,
)
# "MHTML file": MIME-Version: at the start or on a line of its own, followed
# within a kilobyte by a Content-Type: line. It outranks "Mail file" (clamd
# types a text file matching both as MHTML, which target-4 signatures skip).
_MHTML_PAIR = re.compile(
    rb"(?:^|\n)[Mm][Ii][Mm][Ee]-[Vv]ersion: [^\0]{0,1024}?\n[Cc]ontent-[Tt]ype: ", re.DOTALL
)
_MAIL_AT_START = (
    b"Date: ", b"Delivered-To: ", b"Delivery-date: ", b"Envelope-to: ", b"For: ",
    b"From ", b"From: ", b"Hi. This is the qmail-send", b"Message-ID: ",
    b"Message-Id: ", b"Received: ", b"Return-Path: ", b"Return-path: ",
    b"Subject: ", b"To: ", b"X-Apparently-To: ", b"X-EVS", b"X-Envelope-From: ",
    b"X-Original-To: ", b"X-Real-To: ", b"X-Sieve: ", b"X-Symantec-", b"X-UIDL: ",
    b"v:\nReceived: ", b"v:\r\nReceived: ", b"Received-SPF: ",
)
_SIS_UID = b"\x19\x04\x00\x10"
_LHA = re.compile(rb"^..-l[hz][0-9a-z]-", re.DOTALL)

TEXT_TYPES = frozenset(
    {FileType.TEXT_ASCII, FileType.TEXT_UTF8, FileType.TEXT_UTF16LE, FileType.TEXT_UTF16BE}
)


def detect(data: bytes | memoryview, extra_formats: bool = False) -> FileType:
    """The ClamAV file type of `data` from its first kilobyte. With
    `extra_formats`, also the archive types ClamAV 1.4.6 does not know."""
    head = bytes(data[:TYPING_WINDOW])
    ftype = _magic_type(head, extra_formats)
    if ftype is not None:
        if ftype is FileType.ZIP and len(data) > 70:  # ClamAV: bread > 2 * (SIZEOF_LH + 5)
            # OOXML documents are zips typed by the names inside (ClamAV's cli_filetype2).
            return _zip_document_type(data) or ftype
        return _refine(head, ftype)
    if _LHA.match(head):
        return FileType.LHA_LZH
    if len(data) > 0x8006 and bytes(data[0x8001:0x8006]) == b"CD001":
        return FileType.ISO9660
    if head.startswith(_MAIL_AT_START):
        return FileType.MAIL
    ftype = text_type(head)
    if ftype is FileType.BINARY_DATA:
        # Tar formats without "ustar" at 257 (v7): a valid header checksum,
        # checked before the type-1 signatures (ClamAV's is_tar).
        tar = _tar_type(head)
        if tar is not None:
            return tar
    if ftype is FileType.BINARY_DATA or _TYPE1_HINT.search(head):
        found = _type1_in_head(head)
    else:
        # Text holds none of the other signatures: only the markup ones can
        # match, and of those the larger CL_TYPE_* wins: MHTML over MAIL over HTML.
        found = _markup_type(head)
    if found is not None:
        # A self-extractor's magic found after the markup hides it: ClamAV
        # drops SFX types from typing and the object keeps its text type.
        return ftype if found in _SFX_ARCHIVES else found
    if ftype is FileType.TEXT_ASCII:
        # Mail headers further in are found by the raw scan of ASCII text,
        # which then parses it as mail: clammail types it so here. (MIME
        # headers anywhere in other text and in binary data: see
        # clammail.unpack.embedded.)
        found = _markup_type(bytes(data[:3072]), html=False)
    return found or ftype


def _markup_type(window: bytes, html: bool = True) -> FileType | None:
    # (The literal test first: the regex alone costs ~30 us per object.)
    if b"ersion: " in window and _MHTML_PAIR.search(window):
        return FileType.MHTML
    if _MAIL_PAIRS.search(window):
        return FileType.MAIL
    if html and (window.startswith(_HTML_ASP) or _HTML_TAGS.search(window)):
        return FileType.HTML
    return None


# -- type-1 signatures in the typing window --------------------------------
# libclamav matches its "type-1" file-type signatures over the first
# kilobyte of text and binary data (cli_determine_fmap_type). Each match, in
# the order the matcher reports them (where its last part starts), replaces
# the type found so far when its CL_TYPE_* number is larger, or when it is
# CL_TYPE_MSEXE or a type from CL_TYPE_SFX on, whatever came before. The
# self-extractor types that may end up on top are then thrown away, which
# leaves the object its text or binary type: an HTML file whose script holds
# "PK\x03\x04" is UTF-16 text to ClamAV, not HTML.

# The types that take part, in libclamav's enum order (cli_file_t).
_CLAMAV_ORDER = {t: n for n, t in enumerate((
    FileType.MSEXE, FileType.SIS, FileType.PDF, FileType.MBR, FileType.HTML, FileType.MAIL,
    # CL_TYPE_SFX and every type after it replace whatever was found before.
    FileType.ZIPSFX, FileType.RARSFX, FileType.SEVENZIPSFX, FileType.CABSFX, FileType.ARJSFX,
    FileType.NULSFT, FileType.AUTOIT, FileType.ISHIELD_MSI, FileType.XDP, FileType.MHTML,
))}
_FIRST_SFX = _CLAMAV_ORDER[FileType.ZIPSFX]
_SFX_ARCHIVES = frozenset(
    {FileType.ZIPSFX, FileType.RARSFX, FileType.SEVENZIPSFX, FileType.CABSFX, FileType.ARJSFX})
_MARKUP_TYPES = frozenset({FileType.HTML, FileType.MAIL, FileType.MHTML})
# Literals one of which every signature below holds: a head without any of
# them (nearly every text) costs one search.
_TYPE1_HINT = re.compile(
    rb"PK\x03\x04|Rar!\x1a\x07\x00|MSCF\x00{4}|7z\xbc\xaf\x27\x1c|\x60\xea"
    rb"|\xef\xbe\xad\xdeNullsoftInst|AU3!EA0|InstallShield\x00|PE\x00\x00|<xdp:xdp|%[Pp][Dd][Ff]-"
    rb"|\x19\x04\x00\x10|\x55\xaa"
)
# (type, a literal every match holds, pattern): a match is reported where its
# last part starts (the groups named late*), else where it starts.
_TYPE1_SIGNATURES: list[tuple[FileType, bytes, re.Pattern]] = [
    (FileType.ZIPSFX, b"PK\x03\x04", re.compile(rb"PK\x03\x04")),
    (FileType.RARSFX, b"Rar!", re.compile(rb"Rar!\x1a\x07\x00")),
    (FileType.CABSFX, b"MSCF", re.compile(rb"MSCF\x00{4}")),
    (FileType.SEVENZIPSFX, b"7z", re.compile(rb"7z\xbc\xaf\x27\x1c")),
    (FileType.ARJSFX, b"\x60\xea", re.compile(rb"(?=\x60\xea.{7}[\x00-\x02]\x02)", re.DOTALL)),
    (FileType.NULSFT, b"NullsoftInst", re.compile(rb"\xef\xbe\xad\xdeNullsoftInst")),
    (FileType.AUTOIT, b"AU3!EA0", re.compile(
        rb"\xa3\x48\x4b\xbe\x98\x6c\x4a\xa9\x99\x4c\x53\x0a\x86\xd6\x48\x7dAU3!EA0[56]")),
    (FileType.ISHIELD_MSI, b"InstallShield", re.compile(
        rb"InstallShield\x00.{292}\x06\x00{7}.{8}\x00{4}\x01", re.DOTALL)),
    (FileType.XDP, b"<xdp:xdp", re.compile(rb"<xdp:xdp")),
    (FileType.PDF, b"%", re.compile(rb"%(?:PDF|pdf)-.\.")),
    (FileType.HTML, b"<", re.compile(
        rb"^<%@ LANGUAGE =|<(?:A |a ).*?(?P<late>[hH][rR](?:EF|ef))"
        rb"|<(?:HEAD>|HTML>|Head>|Html>|IFRAME|IMG|Img|OBJECT|Object|SCRIPT|Script|TABLE"
        rb"|head>|html>|iframe|img|object|script|table)", re.DOTALL)),
    (FileType.MAIL, b": ", re.compile(
        rb"\n(?:[Ff]rom: .{0,1024}?(?P<late>\n(?:[Mm][Ii][Mm][Ee]-[Vv]ersion: |[Cc]ontent-[Tt]ype: ))"
        rb"|[Mm][Ii][Mm][Ee]-[Vv]ersion: .{0,2048}?(?P<late2>\n[Cc]ontent-[Tt]ype: )"
        rb"|[Mm]essage-[Ii]d: .{0,1024}?(?P<late3>\n[Cc]ontent-[Tt]ype: )"
        rb"|[Rr]eceived: .{0,2048}?(?P<late4>\n[Cc]ontent-[Tt]ype: ))"
        rb"|Delivered-To:.{0,256}?(?P<late5>Received:)", re.DOTALL)),
    (FileType.MHTML, b"ersion: ", re.compile(
        rb"(?:^|\n)[Mm][Ii][Mm][Ee]-[Vv]ersion: .{0,1024}?(?P<late>\n[Cc]ontent-[Tt]ype: )",
        re.DOTALL)),
]


def _type1_in_head(head: bytes) -> FileType | None:
    """The type libclamav's type-1 signatures give the typing window, or None."""
    reports: list[tuple[int, FileType]] = []
    for ftype, literal, pattern in _TYPE1_SIGNATURES:
        if literal not in head:
            continue
        for match in pattern.finditer(head):
            late = [match.start(g) for g in match.groupdict() if match.start(g) >= 0]
            reports.append((late[0] if late else match.start(), ftype))
    # MZ, 60 to 300 bytes, PE\0\0: reported where PE\0\0 starts.
    pe = head.find(b"PE\0\0", 62)
    while pe >= 0:
        if head.find(b"MZ", max(0, pe - 302), pe - 60) >= 0:
            reports.append((pe, FileType.MSEXE))
        pe = head.find(b"PE\0\0", pe + 1)
    if head[510:512] == b"\x55\xaa":
        reports.append((510, FileType.MBR))
    if _SIS_UID in head[8:24]:
        reports.append((head.index(_SIS_UID, 8), FileType.SIS))
    found, rank = None, -1
    for _at, ftype in sorted(reports, key=lambda r: r[0]):
        n = _CLAMAV_ORDER[ftype]
        if n > rank or n >= _FIRST_SFX or ftype is FileType.MSEXE:
            found, rank = ftype, n
    return found


def contains_html(data: bytes | memoryview) -> bool:
    """Whether HTML markers occur anywhere: ClamAV's raw scan of an ASCII text
    file re-types it as HTML when they do, even past the typing window."""
    return _HTML_TAGS.search(data) is not None


def _refine(head: bytes, ftype: FileType) -> FileType:
    if ftype is FileType.MACHO and head.startswith(b"\xca\xfe\xba\xbe"):
        # ClamAV's "cafebabe0000002?" / "cafebabe0000003?": a Java class file.
        if len(head) >= 8 and head[4:7] == b"\0\0\0" and 0x20 <= head[7] <= 0x3F:
            return FileType.JAVA
        return FileType.MACHO_UNIBIN
    if ftype is FileType.LZMA:
        # A bare LZMA stream has only a weak magic: check the header fields.
        if len(head) < 13 or head[0] >= 225:
            return text_type(head)
    return ftype


# Byte classes of libclamav's text detection (after file(1)'s ascmagic):
# T appears in plain ASCII text, I in ISO-8859 text, X in other extended
# ASCII, F never in text.
_F, _T, _I, _X = 0, 1, 2, 3
_TEXT_CLASS = bytes(
    [_F] * 7 + [_T, _T, _T, _T, _F, _T, _T, _F, _F]  # 0x00-0x0f: BEL BS HT LF FF CR
    + [_F] * 11 + [_T] + [_F] * 4  # 0x10-0x1f: ESC
    + [_T] * 95 + [_F]  # 0x20-0x7f: DEL is not text
    + [_X] * 5 + [_T] + [_X] * 26  # 0x80-0x9f: NEL is text
    + [_I] * 96  # 0xa0-0xff
)
_NOT_ASCII = bytes(i for i in range(256) if _TEXT_CLASS[i] == _F)


def text_type(head: bytes) -> FileType:
    """ASCII, UTF-8, UTF-16 text or binary data, decided as libclamav does."""
    if head.translate(None, _NOT_ASCII) == head:
        return FileType.TEXT_ASCII
    if _is_utf8(head):
        return FileType.TEXT_UTF8
    utf16 = _utf16_kind(head)
    if utf16 is not None:
        return utf16
    return FileType.BINARY_DATA


def _is_utf8(buf: bytes) -> bool:
    """Valid UTF-8 (a sequence cut at the end counts) with at least one
    multi-byte character and no control characters."""
    got_one = False
    i, n = 0, len(buf)
    while i < n:
        b = buf[i]
        if b < 0x80:
            if _TEXT_CLASS[b] != _T:
                return False
        elif not b & 0x40:
            return False
        else:
            following = next((k for k, bit in enumerate((0x20, 0x10, 0x08, 0x04, 0x02), 1)
                              if not b & bit), None)
            if following is None:
                return False
            for _ in range(following):
                i += 1
                if i >= n:
                    return got_one
                if buf[i] & 0xC0 != 0x80:
                    return False
            got_one = True
        i += 1
    return got_one


def _utf16_kind(buf: bytes) -> FileType | None:
    """libclamav's UTF-16 test. Without a byte-order mark it reads big-endian
    and fails only on a code unit below 128 that is not a text character, so
    mostly-ASCII data with a stray control byte comes out as UTF-16BE."""
    if len(buf) < 2:
        return None
    if buf[0] == 0xFF and buf[1] == 0xFE:
        big, bom = False, True
    elif buf[0] == 0xFE and buf[1] == 0xFF:
        big, bom = True, True
    else:
        big, bom = True, False
    bad = 0
    for i in range(2, len(buf) - 1, 2):
        c = (buf[i] << 8 | buf[i + 1]) if big else (buf[i + 1] << 8 | buf[i])
        if c == 0xFFFE:
            return None
        if c < 128 and _TEXT_CLASS[c] != _T:
            if not bom:
                return None
            bad += 1
    if bom and bad >= len(buf) // 2:
        return None
    return FileType.TEXT_UTF16BE if big else FileType.TEXT_UTF16LE


# -- typing that needs a look inside an archive -------------------------
# - A zip is an OOXML document (CL_TYPE_OOXML_WORD / _PPT / _XL / _HWP) when
#   one of its first three local headers names "word/", "ppt/", "xl/" or
#   "Contents/content.hpf"; or when one of them names another file typical
#   of such documents ("[Content_Types].xml", "docProps/", "_rels/.rels",
#   "mimetype", ...) and the central directory lists one of those four.
#   That is ClamAV 1.4.6's cli_filetype2 and cli_ooxml_filetype. ODF files
#   (first entry "mimetype") stay CL_TYPE_ZIP, as in ClamAV.
# - Binary data whose first 512 bytes are a tar header with a valid checksum
#   is a tar file (CL_TYPE_OLD_TAR, or CL_TYPE_POSIX_TAR with the GNU magic),
#   which catches the tar formats without "ustar" at offset 257 (ClamAV's
#   is_tar, from file(1)).

_NAME_WINDOW = 22  # the longest name compared
_DOCUMENT_ROOTS = (
    (b"xl/", FileType.OOXML_XL),
    (b"ppt/", FileType.OOXML_PPT),
    (b"word/", FileType.OOXML_WORD),
    (b"Contents/content.hpf", FileType.OOXML_HWP),
)
_LIKELY = (
    b"BinData", b"mimetype", b"Contents", b"docProps/", b"customXml/", b"version.xml",
    b"settings.xml", b"_.rels/.rels", b"[ContentTypes].xml", b"[Content_Types].xml",
    b"Preview/PrvText.txt", b"META-INF/container.xml",
)
# ClamAV looks at most at 32 local header magics while typing.
_MAX_MAGICS = 32
_HEADERS_LOOKED_AT = 3


def _zip_document_type(data) -> FileType | None:
    """The OOXML type of a zip, or None when it is a plain zip."""
    likely = False
    looked_at = 0
    pos = 0
    for _ in range(_MAX_MAGICS):
        pos = _find(data, LOCAL_MAGIC, pos)
        if pos < 0:
            break
        name_at = pos + LOCAL_SIZE
        pos += 1
        if len(data) - name_at <= _NAME_WINDOW:
            break
        name = bytes(data[name_at:name_at + _NAME_WINDOW])
        for prefix, ftype in _DOCUMENT_ROOTS:
            if name.startswith(prefix):
                return ftype
        likely = likely or name.startswith(_LIKELY)
        looked_at += 1
        if looked_at >= _HEADERS_LOOKED_AT:
            break
    if likely:
        return _central_directory_type(data)
    return None


def _find(data, needle: bytes, start: int) -> int:
    if hasattr(data, "find"):
        return data.find(needle, start)
    return bytes(data).find(needle, start)


def _central_directory_type(data) -> FileType | None:
    coff = find_central_directory(data)
    if coff is None:
        return None
    size = len(data)
    while coff + CENTRAL_SIZE <= size and bytes(data[coff:coff + 4]) == CENTRAL_MAGIC:
        flen, elen, clen = struct.unpack_from("<HHH", data, coff + 28)
        start = coff + CENTRAL_SIZE
        if size - start <= flen:
            break
        name = bytes(data[start:start + min(flen, 255)])
        for prefix, ftype in _DOCUMENT_ROOTS:
            if name.startswith(prefix):
                return ftype
        coff = start + flen + elen + clen
    return None


def _tar_type(head: bytes) -> FileType | None:
    """CL_TYPE_OLD_TAR / CL_TYPE_POSIX_TAR for a valid tar header, else None."""
    if len(head) < 512:
        return None
    recorded = _octal(head[148:156])
    if recorded is None:
        return None
    total = sum(head[:512]) - sum(head[148:156]) + ord(" ") * 8
    if total != recorded:
        return None
    if head[257:265] == b"ustar  \0":  # GNU tar's magic (file(1)'s TMAGIC)
        return FileType.POSIX_TAR
    return FileType.OLD_TAR


def _octal(field: bytes) -> int | None:
    """file(1)'s from_oct: spaces, octal digits, then only a space or NUL."""
    i = 0
    while i < len(field) and field[i:i + 1].isspace():
        i += 1
    if i == len(field) or not 0x30 <= field[i] <= 0x37:
        return None
    value = 0
    while i < len(field) and 0x30 <= field[i] <= 0x37:
        value = value * 8 + field[i] - 0x30
        i += 1
    if i < len(field) and field[i] and not field[i:i + 1].isspace():
        return None
    return value
