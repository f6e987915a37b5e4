"""What every signature-format loader shares: errors, options, names, FLEVEL.

A loader reads one file's text and returns plain records; it raises
`SignatureError` for the first malformed line, naming the file and the line,
so a database is either loaded whole or not at all (clamd does the same:
"Problem parsing database at line N", then "Malformed database").
"""

from __future__ import annotations

from dataclasses import dataclass

from clammail import FLEVEL


class SignatureError(Exception):
    """A database that cannot be loaded: which file, which line, and why."""

    def __init__(self, reason: str, path: str | None = None, line: int | None = None):
        self.reason = reason
        self.path = path
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<signatures>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.reason}"

    def located(self, path: str, line: int | None = None) -> SignatureError:
        """The same error with the file (and line) filled in where missing."""
        return SignatureError(
            self.reason, self.path or path, self.line if self.line is not None else line
        )


@dataclass(frozen=True)
class LoadOptions:
    """What clamd's engine options change in loading (clamd.conf names)."""

    detect_pua: bool = False  # DetectPUA: also load .hdu .hsu .ndu .ldu ...
    official_only: bool = False  # OfficialDatabaseOnly
    bytecode: bool = True  # Bytecode (we cannot run bytecode: files are skipped either way)
    flevel: int = FLEVEL
    # ExcludePUA / IncludePUA: PUA categories as clamd.conf gives them
    # ("ExcludePUA NetTool"), to leave out, or the only ones to load, when
    # DetectPUA is on. Which signature names a category covers is the
    # loader's to decide, as libclamav's cli_chkpua() does.
    exclude_pua: tuple[str, ...] = ()
    include_pua: tuple[str, ...] = ()


UNOFFICIAL_SUFFIX = ".UNOFFICIAL"


def display_name(name: str, official: bool) -> str:
    """The name clamd reports: signatures not from a signed .cvd/.cld get .UNOFFICIAL."""
    return name if official else name + UNOFFICIAL_SUFFIX


def flevel_applies(min_level: int | None, max_level: int | None, flevel: int = FLEVEL) -> bool:
    """Whether a signature with these optional engine levels is loaded by this engine."""
    if min_level is not None and flevel < min_level:
        return False
    if max_level is not None and flevel > max_level:
        return False
    return True


def parse_flevel_fields(fields: list[str]) -> tuple[int | None, int | None]:
    """The optional trailing `min_flevel[:max_flevel]` fields of a signature line."""
    lo = hi = None
    if fields and fields[0] != "":
        if not fields[0].isdigit():
            raise SignatureError(f"invalid minimum engine level {fields[0]!r}")
        lo = int(fields[0])
    if len(fields) > 1 and fields[1] != "":
        if not fields[1].isdigit():
            raise SignatureError(f"invalid maximum engine level {fields[1]!r}")
        hi = int(fields[1])
    return lo, hi


def scan_decimal(text: str, pos: int) -> tuple[int, int] | None:
    """C's `sscanf("%u")` reading at `pos`: blanks, a sign, decimal digits.
    (signed value, end position), or None where sscanf converts nothing;
    callers apply their C type's wrap-around."""
    n = len(text)
    while pos < n and text[pos] in " \t\n\v\f\r":
        pos += 1
    negative = False
    if pos < n and text[pos] in "+-":
        negative = text[pos] == "-"
        pos += 1
    start = pos
    while pos < n and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    if pos == start:
        return None
    value = int(text[start:pos])
    return (-value if negative else value), pos
