"""The one table of options: clamd.conf names, types and clamd 1.4.6's defaults.

Everything that reads configuration (clamd.conf, the YAML file, the engine's
scan options) looks names up here, so a name, a type and a default exist in
exactly one place. Defaults are those of `man clamd.conf` for clamd 1.4.6.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    BOOL = "BOOL"
    STRING = "STRING"
    SIZE = "SIZE"  # bytes; 'k'/'K' and 'm'/'M' suffixes
    NUMBER = "NUMBER"
    REGEX = "REGEX"
    COMMAND = "COMMAND"
    CATEGORY = "CATEGORY"


@dataclass(frozen=True)
class Option:
    name: str
    kind: Kind
    default: object
    multiple: bool = False  # may be given more than once (TCPAddr, ExcludePath ...)
    applies: bool = True  # False: accepted for compatibility, warned about, ignored
    section: str = "daemon"  # YAML section: daemon, milter or proxy


MB = 1024 * 1024


def _opts(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


B, S, Z, N = Kind.BOOL, Kind.STRING, Kind.SIZE, Kind.NUMBER

# Options that change what the engine does with a scanned object.
ENGINE_OPTIONS = _opts(
    Option("MaxScanTime", Z, 120000),
    Option("MaxScanSize", Z, 400 * MB),
    Option("MaxFileSize", Z, 100 * MB),
    Option("MaxRecursion", N, 17),
    Option("MaxFiles", N, 10000),
    Option("MaxEmbeddedPE", Z, 40 * MB),
    Option("MaxHTMLNormalize", Z, 40 * MB),
    Option("MaxHTMLNoTags", Z, 8 * MB),
    Option("MaxScriptNormalize", Z, 20 * MB),
    Option("MaxZipTypeRcg", Z, 1 * MB),
    Option("MaxPartitions", Z, 50),
    Option("MaxIconsPE", Z, 100),
    Option("MaxRecHWP3", N, 16),
    Option("PCREMatchLimit", N, 10000),
    Option("PCRERecMatchLimit", N, 2000),
    Option("PCREMaxFileSize", Z, 100 * MB),
    Option("AlertExceedsMax", B, False),
    Option("AlertEncrypted", B, False),
    Option("AlertEncryptedArchive", B, False),
    Option("AlertEncryptedDoc", B, False),
    Option("AlertBrokenExecutables", B, False),
    Option("AlertBrokenMedia", B, False),
    Option("AlertOLE2Macros", B, False),
    Option("AlertPhishingSSLMismatch", B, False),
    Option("AlertPhishingCloak", B, False),
    Option("AlertPartitionIntersection", B, False),
    Option("HeuristicAlerts", B, True),
    Option("HeuristicScanPrecedence", B, False),
    Option("ScanPE", B, True),
    Option("ScanELF", B, True),
    Option("ScanMail", B, True),
    Option("ScanPartialMessages", B, False),
    Option("ScanHTML", B, True),
    Option("ScanOLE2", B, True),
    Option("ScanPDF", B, True),
    Option("ScanSWF", B, True),
    Option("ScanXMLDOCS", B, True),
    Option("ScanHWP3", B, True),
    Option("ScanOneNote", B, True),
    Option("ScanArchive", B, True),
    Option("ScanImage", B, True),
    Option("ScanImageFuzzyHash", B, True),
    Option("PhishingSignatures", B, True),
    Option("PhishingScanURLs", B, True),
    Option("StructuredDataDetection", B, False),
    Option("DisableCache", B, False),
    Option("CacheSize", N, 65536),
    Option("DetectPUA", B, False),
    Option("OfficialDatabaseOnly", B, False),
    Option("Bytecode", B, True),
    # clammail's own: also open the formats and methods ClamAV 1.4.6 leaves
    # closed (zstd, bare lzma, ar, LZMA inside zip). Off: ClamAV's verdicts.
    Option("ExtraArchiveFormats", B, False),
)

ENGINE_DEFAULTS: dict[str, object] = {name: o.default for name, o in ENGINE_OPTIONS.items()}
