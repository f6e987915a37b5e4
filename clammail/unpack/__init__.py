"""Which unpacker opens which file type, and which clamd.conf switch turns it off.

Unpackers are imported on first use: a family whose module is missing or
whose library is not installed simply is not opened (its objects are still
matched as they are), and the reason is logged once.
"""

from __future__ import annotations

import importlib
import logging

from clammail.formats.filetypes import FileType as T
from clammail.unpack.base import Unpacker

log = logging.getLogger(__name__)

# file type -> (module, function, the clamd.conf option that enables it; None:
# always on, as libclamav decodes uuencoded files whatever the options say)
_REGISTRY: dict[T, tuple[str, str, str | None]] = {
    T.MAIL: ("clammail.unpack.mail", "unpack_mail", "ScanMail"),
    T.MHTML: ("clammail.unpack.mail", "unpack_mail", "ScanMail"),
    T.UUENCODED: ("clammail.unpack.mail", "unpack_uuencoded", None),
    T.BINHEX: ("clammail.unpack.mail", "unpack_binhex", "ScanArchive"),
    T.TNEF: ("clammail.unpack.tnef", "unpack_tnef", "ScanMail"),
    **{
        t: ("clammail.unpack.archive", "unpack_archive", "ScanArchive")
        for t in (
            T.ZIP, T.RAR, T.SEVENZIP, T.GZ, T.BZ, T.XZ, T.LZMA, T.ZSTD, T.POSIX_TAR,
            T.OLD_TAR, T.CPIO_OLD, T.CPIO_ODC, T.CPIO_NEWC, T.CPIO_CRC, T.MSCAB,
            T.ISO9660, T.LHA_LZH, T.AR, T.XAR,
        )
    },
    # Formats libarchive does not read: clammail's own readers.
    T.ARJ: ("clammail.unpack.arj", "unpack_arj", "ScanArchive"),
    T.MSSZDD: ("clammail.unpack.szdd", "unpack_szdd", "ScanArchive"),
    T.MSCHM: ("clammail.unpack.chm", "unpack_chm", "ScanArchive"),
    T.SIS: ("clammail.unpack.sis", "unpack_sis", "ScanArchive"),
    T.OOXML_WORD: ("clammail.unpack.archive", "unpack_archive", "ScanArchive"),
    T.OOXML_PPT: ("clammail.unpack.archive", "unpack_archive", "ScanArchive"),
    T.OOXML_XL: ("clammail.unpack.archive", "unpack_archive", "ScanArchive"),
    T.OOXML_HWP: ("clammail.unpack.archive", "unpack_archive", "ScanArchive"),
    T.MSOLE2: ("clammail.unpack.ole2", "unpack_ole2", "ScanOLE2"),
    T.PDF: ("clammail.unpack.pdf", "unpack_pdf", "ScanPDF"),
    T.HTML: ("clammail.unpack.html", "unpack_html", "ScanHTML"),
    T.RTF: ("clammail.unpack.rtf", "unpack_rtf", "ScanOLE2"),
    T.ONENOTE: ("clammail.unpack.onenote", "unpack_onenote", "ScanOneNote"),
    # PE files embedded in PE files; the slices of a universal Mach-O binary
    # (which clamd opens whatever its options: ScanArchive is the nearest switch).
    T.MSEXE: ("clammail.unpack.executable", "unpack_pe", "ScanPE"),
    T.MACHO_UNIBIN: ("clammail.unpack.executable", "unpack_macho_fat", "ScanArchive"),
    # Installers found inside PE files (clammail.unpack.embedded).
    T.NULSFT: ("clammail.unpack.nsis", "unpack_nsis", "ScanArchive"),
    T.AUTOIT: ("clammail.unpack.autoit", "unpack_autoit", "ScanArchive"),
    T.ISHIELD_MSI: ("clammail.unpack.ishield", "unpack_ishield_msi", "ScanArchive"),
}

_loaded: dict[tuple[str, str], Unpacker | None] = {}


def unpacker_for(ftype: T) -> tuple[Unpacker, str | None] | None:
    """The unpacker for a type and the option that switches it, or None."""
    entry = _REGISTRY.get(ftype)
    if entry is None:
        return None
    module, function, switch = entry
    key = (module, function)
    if key not in _loaded:
        try:
            _loaded[key] = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            log.warning("no unpacker for %s: %s", ftype.value, exc)
            _loaded[key] = None
    fn = _loaded[key]
    return (fn, switch) if fn is not None else None


def preload_unpackers() -> None:
    """Import every unpacker module now: a daemon calls this before it forks
    its workers, so that they share these modules' pages instead of each
    importing its own copy on first use."""
    import pkgutil

    for ftype in _REGISTRY:
        unpacker_for(ftype)
    package = importlib.import_module(__name__)
    for module in pkgutil.walk_packages(package.__path__, prefix=f"{__name__}."):
        try:
            importlib.import_module(module.name)
        except ImportError as exc:  # an optional library: its unpacker said why already
            log.debug("cannot preload %s: %s", module.name, exc)
