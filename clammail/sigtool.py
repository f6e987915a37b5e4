"""`clammail sigtool`: inspect signature databases like ClamAV's sigtool.

  --info FILE          header and verification of a .cvd/.cld/.cud
  --list-sigs[=FILE]   signature names in a database file, container or directory
  --unpack FILE        extract a container into the current directory
  --md5/--sha1/--sha256 [FILES]   hash signatures (HASH:SIZE:NAME) for files,
                       or the digest of standard input
"""

from __future__ import annotations

import hashlib
import os
import sys

from clammail.signatures.common import SignatureError
from clammail.signatures.cvd import (
    HEADER_SIZE,
    ContainerKind,
    iter_members,
    kind_of,
    open_container,
    peek_header,
)
from clammail.signatures.loader import database_extension, is_database_file

USAGE = """usage: clammail sigtool OPTION
  --info=FILE, -i FILE       print database (.cvd/.cld/.cud) information
  --list-sigs[=FILE], -l     list signature names (default: /var/lib/clamav)
  --unpack=FILE, -u FILE     unpack a .cvd/.cld/.cud into the current directory
  --md5 [FILES]              MD5 signatures for FILES, or the MD5 of stdin
  --sha1 [FILES]             SHA1 signatures for FILES, or the SHA1 of stdin
  --sha256 [FILES]           SHA256 signatures for FILES, or the SHA256 of stdin
"""

DEFAULT_DATABASE = "/var/lib/clamav"


def _error(text: str) -> int:
    sys.stderr.write(f"ERROR: {text}\n")
    return 1


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 1
    option, value = argv[0], None
    if option.startswith("--") and "=" in option:
        option, value = option.split("=", 1)
    elif option.startswith("-l") and len(option) > 2:
        option, value = "-l", option[2:]
    rest = argv[1:]
    if option in ("--info", "-i", "--unpack", "-u"):
        target = value if value is not None else (rest[0] if rest else None)
        if target is None:
            return _error(f"{option} needs a file")
        return info(target) if option in ("--info", "-i") else unpack(target)
    if option in ("--list-sigs", "-l"):
        return list_sigs(value if value is not None else (rest[0] if rest else DEFAULT_DATABASE))
    if option in ("--md5", "--sha1", "--sha256"):
        files = ([value] if value else []) + rest
        return hash_sigs(option[2:], files)
    sys.stderr.write(f"clammail sigtool: unknown option {argv[0]}\n{USAGE}")
    return 1


# -- --md5 / --sha1 / --sha256 ---------------------------------------------------


def hash_sigs(algorithm: str, files: list[str]) -> int:
    if not files:
        digest = hashlib.new(algorithm)
        while chunk := sys.stdin.buffer.read(1 << 20):
            digest.update(chunk)
        print(digest.hexdigest())
        return 0
    status = 0
    for path in files:
        try:
            digest, size = hashlib.new(algorithm), 0
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            sys.stderr.write(f"hashsig: {exc.strerror}\n")
            status = _error(f"hashsig: Can't access file {path}")
            continue
        print(f"{digest.hexdigest()}:{size}:{os.path.basename(path)}")
    return status


# -- --info ------------------------------------------------------------------------


def info(path: str) -> int:
    try:
        header = peek_header(path)
    except (SignatureError, OSError):
        return _error(f"cvdinfo: Can't read/parse CVD header of {path}")
    print(f"File: {path}")
    print(f"Build time: {header.build_time.replace('-', ':')}")
    print(f"Version: {header.version}")
    print(f"Signatures: {header.signatures}")
    print(f"Functionality level: {header.flevel}")
    print(f"Builder: {header.builder}")
    kind = kind_of(path)
    if kind == ContainerKind.CUD:
        print("Verification: Unsigned container")
        return 0
    if kind is None:
        return _error("cvdinfo: not a .cvd, .cld or .cud file")
    if kind == ContainerKind.CVD:
        print(f"MD5: {header.md5}")
        print(f"Digital signature: {header.dsig}")
    try:
        _container, fh = open_container(path)
        fh.close()
    except (SignatureError, OSError) as exc:
        sys.stderr.write(f"{getattr(exc, 'reason', exc)}\n")
        return _error("cvdinfo: Verification: Can't verify database integrity")
    print("Verification OK.")
    return 0


# -- --unpack ----------------------------------------------------------------------


def unpack(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            if len(fh.read(HEADER_SIZE)) != HEADER_SIZE:
                return _error(f"unpack: {path} is not a database container")
            fh.seek(0)
            for member in iter_members(fh):
                with open(member.name, "wb") as out:
                    while chunk := member.read(1 << 20):
                        out.write(chunk)
    except (SignatureError, OSError) as exc:
        return _error(f"unpack: Can't unpack file {path}: {getattr(exc, 'reason', exc)}")
    return 0


# -- --list-sigs -------------------------------------------------------------------


def list_sigs(path: str) -> int:
    try:
        if os.path.isdir(path):
            names = []
            for entry in sorted(os.listdir(path)):
                if is_database_file(entry):
                    names.extend(_names_in_file(os.path.join(path, entry)))
        else:
            names = _names_in_file(path)
    except (SignatureError, OSError) as exc:
        return _error(f"listdb: {getattr(exc, 'reason', exc)}")
    if names is None:
        return _error(f"listdb: Invalid filename {path}")
    for name in names:
        print(name)
    return 0


def _names_in_file(path: str) -> list[str] | None:
    if kind_of(path) is not None:
        names: list[str] = []
        with open(path, "rb") as fh:
            for member in iter_members(fh):
                if is_database_file(member.name):
                    data = member.read(member.size)
                    names.extend(_names_in_text(member.name, data) or [])
        return sorted(names)
    with open(path, "rb") as fh:
        return _names_in_text(path, fh.read())


def _names_in_text(name: str, data: bytes) -> list[str] | None:
    """Signature names of one plain database, as sigtool lists them."""
    ext = database_extension(os.path.basename(name))
    field, sep = {
        ".hdb": (2, ":"), ".hsb": (2, ":"), ".hdu": (2, ":"), ".hsu": (2, ":"),
        ".mdb": (2, ":"), ".msb": (2, ":"), ".mdu": (2, ":"), ".msu": (2, ":"),
        ".imp": (2, ":"), ".fp": (2, ":"), ".sfp": (2, ":"),
        ".ndb": (0, ":"), ".ndu": (0, ":"), ".ldb": (0, ";"), ".ldu": (0, ";"),
    }.get(ext or "", (None, None))
    if field is None:
        return None
    names = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(sep)
        if len(parts) > field:
            names.append(parts[field].split(" (Clam)")[0])
    return names
