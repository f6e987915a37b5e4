"""Reading clamd.conf (and clamav-milter.conf) as clamd 1.4.6 reads it.

One option per line: a name, blanks, a value (optionally in double quotes).
Lines starting with '#' and lines of two characters or fewer are skipped; a
line starting with "Example" stops the start. Names are case-sensitive. For
an option given twice the first value wins, except for options that may be
repeated (TCPAddr, ExcludePath ...), which collect every value.

Errors carry clamd's own wording plus the file and the line, so an
administrator sees exactly what clamd would have said and where.
clamav-milter.conf has the same syntax (ClamAV's common option parser) and
another table of options (`MILTER_TABLE`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from clammail.config.options import (
    CLAMD_TABLE,
    ENGINE_OPTIONS,
    Kind,
    Option,
    OptionTable,
)

# clamd reads lines with fgets() into a 512-byte buffer.
MAX_LINE = 511
SIZE_LIMIT = 0xFFFFFFFF  # "All options expressing a size are limited to max 4GB"

_NUMBER = re.compile(r"^[0-9]+$")
_SIZE = re.compile(r"^([0-9]+)([KMG]?)$", re.IGNORECASE)
_BOOL = re.compile(r"^(yes|true|1|no|false|0)$", re.IGNORECASE)


class ConfigError(Exception):
    """A configuration that stops the start: clamd's message, the file and the line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        if self.line is None:
            return f"{self.message} in {self.path}"
        return f"{self.message} at {self.path}:{self.line}"


@dataclass
class Config:
    """Option values by name, with the defaults of the table filled in."""

    table: OptionTable = CLAMD_TABLE
    values: dict[str, object] = field(default_factory=dict)
    given: set[str] = field(default_factory=set)  # names set by the file
    warnings: list[str] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        for name, value in self.table.defaults().items():
            self.values.setdefault(name, list(value) if isinstance(value, list) else value)

    def __getitem__(self, name: str):
        return self.values[name]

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def engine_options(self) -> dict[str, object]:
        """The values the engine takes (ScanOptions.from_mapping)."""
        return {name: self.values[name] for name in ENGINE_OPTIONS}


def parse_value(option: Option, text: str) -> object:
    """A value of the option's kind, or ValueError with clamd's wording."""
    name = option.name
    if option.pattern and not re.match(option.pattern, text, re.IGNORECASE):
        raise ValueError(f"Incorrect argument format for option {name}")
    if option.kind is Kind.BOOL:
        if not _BOOL.match(text):
            raise ValueError(f"Incorrect argument format for option {name}")
        return text.lower() in ("yes", "true", "1")
    if option.kind is Kind.NUMBER:
        if not _NUMBER.match(text):
            raise ValueError(f"Incorrect argument format for option {name}")
        return int(text)
    if option.kind is Kind.SIZE:
        match = _SIZE.match(text)
        if not match:
            raise ValueError(f"Incorrect argument format for option {name}")
        factor = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match.group(2).upper()]
        # clamd resets values over 4 GB to 4 GB (with a warning, see read_clamd_conf).
        return min(int(match.group(1)) * factor, SIZE_LIMIT)
    if option.kind is Kind.REGEX:
        try:
            re.compile(text)
        except re.error as exc:
            raise ValueError(f"Incorrect regular expression for option {name}: {exc}") from None
    return text


def split_line(raw: str) -> tuple[str, str] | None:
    """(name, value) of one line, None for a skipped line; ValueError for a broken one."""
    line = raw.lstrip(" \t") if raw.strip(" \t") else raw
    stripped = line.rstrip("\n")
    if len(line) <= 2 or line.startswith("#"):
        return None
    if line.startswith("Example"):
        raise ValueError("example")
    parts = re.split(r"[ \t]", stripped, maxsplit=1)
    if len(parts) < 2:
        raise ValueError("Missing argument for option")
    name, value = parts[0], parts[1].strip(" \t\r")
    if not value:
        raise ValueError("Missing argument for option")
    if value.startswith('"'):
        end = value.rfind('"')
        if end == 0:
            raise ValueError(f"Missing closing parenthesis in option {name}")
        value = value[1:end]
        if not value:
            raise ValueError(f"Empty argument for option {name}")
    return name, value


def read_clamd_conf(path: str, table: OptionTable = CLAMD_TABLE) -> Config:
    """Parse a clamd.conf file; ConfigError on the first problem, as clamd stops."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"Can't open the config file: {exc.strerror}", path) from None
    return parse_clamd_conf(text, path, table)


def parse_clamd_conf(text: str, path: str = "<clamd.conf>",
                     table: OptionTable = CLAMD_TABLE) -> Config:
    config = Config(table=table, source=path)
    for number, raw in enumerate(text.splitlines(keepends=True), 1):
        try:
            item = split_line(raw)
        except ValueError as exc:
            if str(exc) == "example":
                raise ConfigError("Please edit the example config file", path) from None
            raise ConfigError(str(exc), path, number) from None
        if item is None:
            continue
        name, value = item
        set_option(config, name, value, path, number)
    return config


def set_option(config: Config, name: str, value: object, path: str, line: int | None) -> None:
    """Give an option a value (text from clamd.conf, or typed from YAML), clamd's rules."""
    option = config.table.options.get(name)
    where = f" at {path}:{line}" if line is not None else f" in {path}"
    if option is None:
        raise ConfigError(f"Parse error: Unknown option {name}", path, line)
    if option.deprecated:
        config.warnings.append(f"Ignoring deprecated option {name}{where}")
        return
    try:
        parsed = parse_value(option, value) if isinstance(value, str) else check_typed(option, value)
    except ValueError as exc:
        raise ConfigError(str(exc), path, line) from None
    if name in config.table.renamed:
        new = config.table.renamed[name]
        config.warnings.append(
            f'Using deprecated option "{name}"{where}: please use "{new}" instead'
        )
        if name not in config.given and new not in config.given:
            config.values[new] = parsed
        config.given.add(name)
        return
    if not option.applies:
        config.warnings.append(f"Option {name}{where} does not apply to clammail: ignored")
    if option.multiple:
        if name not in config.given:
            config.values[name] = []
        config.values[name].append(parsed)
    elif name in config.given:
        return  # clamd keeps the first value
    else:
        config.values[name] = parsed
    config.given.add(name)


def check_typed(option: Option, value: object) -> object:
    """A value that came typed (from YAML): the same checks as for text."""
    if isinstance(value, bool):
        if option.kind is not Kind.BOOL:
            raise ValueError(f"Incorrect argument format for option {option.name}")
        return value
    if isinstance(value, int) and option.kind in (Kind.STRING, Kind.REGEX, Kind.COMMAND,
                                                  Kind.CATEGORY):
        return parse_value(option, str(value))
    if isinstance(value, int):
        if option.kind not in (Kind.NUMBER, Kind.SIZE) or value < 0:
            raise ValueError(f"Incorrect argument format for option {option.name}")
        return min(value, SIZE_LIMIT) if option.kind is Kind.SIZE else value
    raise ValueError(f"Incorrect argument format for option {option.name}")
