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
    # A stricter argument format than the kind's own, as clamd checks it
    # (BytecodeMode, BytecodeSecurity): a regular expression, case-insensitive.
    pattern: str | None = None
    # clamd ignores the option with "WARNING: Ignoring deprecated option".
    deprecated: bool = False


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


# The log, as clamd.conf and clamav-milter.conf both name it (clamd 1.4.6's
# defaults, which clamav-milter shares).
_LOG_FILE = (
    Option("LogFile", S, None),
    Option("LogFileUnlock", B, False),
    Option("LogFileMaxSize", Z, 1048576),
    Option("LogTime", B, False),
    Option("LogSyslog", B, False),
    Option("LogFacility", S, "LOG_LOCAL6"),
    Option("LogVerbose", B, False),
    Option("LogRotate", B, False),
)

# Options of the daemon itself: sockets, logging, start-up, path scanning.
# Defaults are clamd 1.4.6's (`clamconf -g clamd.conf`); None means "disabled".
DAEMON_OPTIONS = _opts(
    *_LOG_FILE,
    Option("LogClean", B, False),
    Option("ExtendedDetectionInfo", B, False),
    Option("PidFile", S, None),
    Option("TemporaryDirectory", S, None),
    Option("DatabaseDirectory", S, "/var/lib/clamav"),
    Option("FailIfCvdOlderThan", N, None),
    Option("LocalSocket", S, None),
    Option("LocalSocketGroup", S, None),
    Option("LocalSocketMode", S, None),
    Option("FixStaleSocket", B, True),
    Option("TCPSocket", N, None),
    Option("TCPAddr", S, None, multiple=True),
    Option("MaxConnectionQueueLength", N, 200),
    Option("StreamMaxLength", Z, 100 * MB),
    Option("StreamMinPort", N, 1024),
    Option("StreamMaxPort", N, 2048),
    Option("MaxThreads", N, 10),
    Option("ReadTimeout", N, 120),
    Option("CommandReadTimeout", N, 30),
    Option("SendBufTimeout", N, 500),
    Option("MaxQueue", N, 100),
    Option("IdleTimeout", N, 30),
    Option("ExcludePath", Kind.REGEX, None, multiple=True),
    Option("MaxDirectoryRecursion", N, 15),
    Option("FollowDirectorySymlinks", B, False),
    Option("FollowFileSymlinks", B, False),
    Option("CrossFilesystems", B, True),
    Option("SelfCheck", N, 600),
    Option("ConcurrentDatabaseReload", B, True),
    Option("VirusEvent", Kind.COMMAND, None),
    Option("ExitOnOOM", B, False),
    Option("AllowAllMatchScan", B, True),
    Option("Foreground", B, False),
    Option("Debug", B, False),
    Option("LeaveTemporaryFiles", B, False),
    Option("User", S, None),
    Option("ExcludePUA", Kind.CATEGORY, None, multiple=True),
    Option("IncludePUA", Kind.CATEGORY, None, multiple=True),
    # Accepted and warned about: no engine feature behind them here.
    Option("PreludeEnable", B, False, applies=False),
    Option("PreludeAnalyzerName", S, None, applies=False),
    Option("GenerateMetadataJson", B, False, applies=False),
    Option("ForceToDisk", B, False, applies=False),
    Option("DisableCertCheck", B, False, applies=False),
    Option("StructuredMinCreditCardCount", N, 3, applies=False),
    Option("StructuredMinSSNCount", N, 3, applies=False),
    Option("StructuredSSNFormatNormal", B, True, applies=False),
    Option("StructuredSSNFormatStripped", B, False, applies=False),
    Option("StructuredCCOnly", B, False, applies=False),
    Option("BytecodeSecurity", S, "TrustSigned", applies=False,
           pattern=r"^(TrustSigned|Paranoid)$"),
    Option("BytecodeTimeout", N, 10000, applies=False),
    Option("BytecodeUnsigned", B, False, applies=False),
    Option("BytecodeMode", S, "Auto", applies=False,
           pattern=r"^(Auto|ForceJIT|ForceInterpreter|Test)$"),
    Option("OnAccessMountPath", S, None, multiple=True, applies=False),
    Option("OnAccessIncludePath", S, None, multiple=True, applies=False),
    Option("OnAccessExcludePath", S, None, multiple=True, applies=False),
    Option("OnAccessExcludeRootUID", B, None, applies=False),
    Option("OnAccessExcludeUID", N, None, multiple=True, applies=False),
    Option("OnAccessExcludeUname", S, None, multiple=True, applies=False),
    Option("OnAccessMaxFileSize", Z, 5 * MB, applies=False),
    Option("OnAccessDisableDDD", B, False, applies=False),
    Option("OnAccessPrevention", B, False, applies=False),
    Option("OnAccessExtraScanning", B, False, applies=False),
    Option("OnAccessCurlTimeout", N, 5000, applies=False),
    Option("OnAccessMaxThreads", N, 5, applies=False),
    Option("OnAccessRetryAttempts", N, 0, applies=False),
    Option("OnAccessDenyOnError", B, False, applies=False),
    Option("DevACOnly", B, None, applies=False),
    Option("DevACDepth", N, None, applies=False),
    Option("DevPerformance", B, None, applies=False),
    Option("DevLiblog", B, None, applies=False),
)

# Old names clamd still reads and maps onto their replacements (with a warning
# when they change something): old name -> (new name, value is inverted).
RENAMED_OPTIONS = _opts(
    Option("AlgorithmicDetection", B, True),
    Option("BlockMax", B, False),
    Option("PhishingAlwaysBlockSSLMismatch", B, False),
    Option("PhishingAlwaysBlockCloak", B, False),
    Option("PartitionIntersection", B, False),
    Option("OLE2BlockMacros", B, False),
    Option("ArchiveBlockEncrypted", B, False),
)
RENAMED_TO = {
    "AlgorithmicDetection": "HeuristicAlerts",
    "BlockMax": "AlertExceedsMax",
    "PhishingAlwaysBlockSSLMismatch": "AlertPhishingSSLMismatch",
    "PhishingAlwaysBlockCloak": "AlertPhishingCloak",
    "PartitionIntersection": "AlertPartitionIntersection",
    "OLE2BlockMacros": "AlertOLE2Macros",
    "ArchiveBlockEncrypted": "AlertEncrypted",
}

# Options clamd 1.4.6 still knows only to say it ignores them.
DEPRECATED_OPTIONS = _opts(*(
    Option(name, kind, None, deprecated=True, applies=False)
    for name, kind in (
        ("DetectBrokenExecutables", B), ("MailMaxRecursion", N), ("ArchiveMaxScanSize", Z),
        ("ArchiveMaxRecursion", N), ("ArchiveMaxFiles", N), ("ArchiveMaxCompressionRatio", N),
        ("ArchiveBlockMax", B), ("ArchiveLimitMemoryUsage", B), ("MailFollowURLs", B),
        ("AllowSupplementaryGroups", B), ("ScanOnAccess", B),
    )
))

CLAMD_OPTIONS: dict[str, Option] = {
    **ENGINE_OPTIONS, **DAEMON_OPTIONS, **RENAMED_OPTIONS, **DEPRECATED_OPTIONS,
}
"""Every option clamd 1.4.6 reads from clamd.conf, by name."""

DAEMON_DEFAULTS: dict[str, object] = {
    name: ([] if o.multiple else o.default) for name, o in CLAMD_OPTIONS.items()
    if not o.deprecated
}


def _in_section(section: str, *options: Option) -> tuple[Option, ...]:
    return tuple(Option(o.name, o.kind, o.default, o.multiple, o.applies, section, o.pattern,
                        o.deprecated) for o in options)


# What the milter and the proxy share, with clamav-milter's names and defaults:
# the service (log, user, pid file), the backends, and clammail's additions
# (a Prometheus endpoint on host:port, one summary line per message, how often
# a failed backend is PINGed, how long messages in flight get on SIGTERM).
_SERVICE = (
    Option("User", S, None),
    Option("PidFile", S, None),
    Option("Foreground", B, False),
    *_LOG_FILE,
    Option("ClamdSocket", S, None, multiple=True),
    Option("ReadTimeout", N, 120),
    Option("RejectMsg", S, None),
    Option("ReportHostname", S, None),
    Option("MetricsListen", S, None),
    Option("LogMessageSummary", B, True),
    Option("ClamdProbeInterval", N, 10),
    Option("ShutdownTimeout", N, 30),
)

# The milter: every option clamav-milter 1.4.6 reads from clamav-milter.conf
# (common/optparser.c, OPT_MILTER), with its defaults. Kinds differ from
# clamd.conf's for some names (LogClean is Off/Basic/Full here), hence a
# table of its own.
_ACTION = r"^(Accept|Reject|Defer|Blackhole|Quarantine)$"
MILTER_OPTIONS = _opts(*_in_section(
    "milter",
    *_SERVICE,
    Option("MilterSocket", S, None),
    Option("MilterSocketGroup", S, None),
    Option("MilterSocketMode", S, None),
    Option("FixStaleSocket", B, True),
    Option("Chroot", S, None),
    Option("TemporaryDirectory", S, None),
    # clamav-milter accepts it and runs a thread per MTA connection anyway.
    Option("MaxThreads", N, 10),
    Option("LocalNet", S, None, multiple=True),
    Option("AllowList", S, None),
    Option("Whitelist", S, None),  # AllowList's old name, still read
    Option("SkipAuthenticated", S, None),
    Option("MaxFileSize", Z, 100 * MB),
    Option("OnClean", S, "Accept", pattern=_ACTION),
    Option("OnInfected", S, "Quarantine", pattern=_ACTION),
    Option("OnFail", S, "Defer", pattern=r"^(Accept|Reject|Defer)$"),
    Option("AddHeader", S, "No", pattern=r"^(No|Replace|Yes|Add)$"),
    Option("VirusAction", S, None),
    Option("LogInfected", S, "Off"),  # Off, Basic or Full: checked by the milter
    Option("LogClean", S, "Off"),
    Option("SupportMultipleRecipients", B, False),
), *_in_section("milter", *(
    Option(name, kind, None, deprecated=True, applies=False)
    for name, kind in (
        ("ArchiveBlockEncrypted", B), ("DatabaseDirectory", S), ("Debug", B),
        ("DetectBrokenExecutables", B), ("LeaveTemporaryFiles", B), ("LocalSocket", S),
        ("MailFollowURLs", B), ("MaxScanSize", Z), ("MaxFiles", N), ("MaxRecursion", N),
        ("PhishingSignatures", B), ("ScanArchive", B), ("ScanHTML", B), ("ScanMail", B),
        ("ScanOLE2", B), ("ScanPE", B), ("StreamMaxLength", Z), ("TCPAddr", S),
        ("TCPSocket", N), ("AllowSupplementaryGroups", B),
    )
)))

# The SMTP content-filter proxy: the YAML file's `proxy` section. Names follow
# clamav-milter's where the meaning is the same (ClamdSocket, OnInfected,
# RejectMsg, AddHeader ...); config/clammail.yaml documents every key.
PROXY_OPTIONS = _opts(*_in_section(
    "proxy",
    *_SERVICE,
    Option("Listen", S, "127.0.0.1:10025"),
    Option("Hostname", S, None),
    Option("MaxConnections", N, 100),
    Option("MaxMessageSize", Z, 25 * MB),
    Option("ClientTimeout", N, 300),
    Option("NextHop", S, "127.0.0.1:10026"),
    Option("NextHopStartTLS", S, "No", pattern=r"^(No|Yes|Required)$"),
    Option("NextHopTLSVerify", B, False),
    Option("NextHopUser", S, None),
    Option("NextHopPassword", S, None),
    Option("NextHopTimeout", N, 300),
    Option("OnClean", S, "Accept", pattern=_ACTION),
    Option("OnInfected", S, "Reject",
           pattern=r"^(Accept|Reject|Defer|Blackhole|Quarantine|Strip)$"),
    Option("OnFail", S, "Defer", pattern=r"^(Accept|Reject|Defer)$"),
    Option("AddHeader", S, "Replace", pattern=r"^(No|Replace|Yes|Add)$"),
    Option("SubjectTag", S, None),
    Option("QuarantineDirectory", S, "/var/lib/clammail/quarantine"),
    Option("DKIMVerify", B, True),
    Option("AuthservID", S, None),
    Option("ARCSealKey", S, None),
    Option("ARCSelector", S, None),
    Option("ARCDomain", S, None),
    Option("DKIMSign", S, None, multiple=True),
    Option("DNSRecordsFile", S, None),
))


@dataclass(frozen=True)
class OptionTable:
    """The options one configuration file may hold, and their old names."""

    file: str  # what the file is called in messages: "clamd.conf", "clamav-milter.conf"
    options: dict[str, Option]
    renamed: dict[str, str]

    def defaults(self) -> dict[str, object]:
        return {name: ([] if o.multiple else o.default) for name, o in self.options.items()
                if not o.deprecated}


CLAMD_TABLE = OptionTable("clamd.conf", CLAMD_OPTIONS, RENAMED_TO)
MILTER_TABLE = OptionTable("clamav-milter.conf", MILTER_OPTIONS, {})
PROXY_TABLE = OptionTable("the proxy section", PROXY_OPTIONS, {})
