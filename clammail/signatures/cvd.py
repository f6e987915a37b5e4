"""Database containers: .cvd (signed), .cld (signed, patched by freshclam), .cud (unsigned).

Layout (libclamav cvd.c): a 512-byte header, blank-padded,

    ClamAV-VDB:BUILD_TIME:VERSION:SIGNATURES:FLEVEL:MD5:DSIG:BUILDER:STIME

then a tar archive (gzip-compressed unless it starts with "COPYING") of
plain database files plus NAME.info, which lists every file with its size
and SHA256 and, in signed containers, ends with a DSIG line.

What clamd 1.4.6 checks (found by experiment), and so do we:
* .cvd: the MD5 of everything after the header equals MD5, and DSIG is
  ClamAV's RSA signature of that MD5 (`verify_md5_signature`); a .cld's
  header MD5 and DSIG are not checked (freshclam patched its content);
* the .info's header line matches the container header (version,
  signatures, FLEVEL, build seconds); in .cvd/.cld the .info carries its own
  signature (`verify_info_signature`, a PSS-style scheme over SHA256);
* each loaded file is listed in the .info with its exact size and SHA256.
* .cud content is not verified at all and its names are unofficial.

The verifiers are written from the description in libclamav dsig.c; the
keys are parameters so tests can sign with their own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from clammail.signatures.common import SignatureError

HEADER_SIZE = 512
TAR_BLOCK = 512


@dataclass(frozen=True)
class RsaKey:
    n: int
    e: int


# ClamAV's published public keys (libclamav dsig.c and readdb.c).
CLAMAV_CVD_KEY = RsaKey(
    int("1186409955516453426030700016584531897515277744120277437465994057432431426074641447"
        "6736106064065584474976078889002228342492276248891756555100246777110966959818941043"
        "4699034532232228621591089508178591428456220796841621637175567590476666928698770143"
        "328137383952820383197532047771780196576957695822641224262693037"),
    100001027,
)
CLAMAV_INFO_KEY = RsaKey(
    int("1108889498304854547365955610662719492392894179179504762059165869741358104332271591"
        "2172496806525381055880964520618400224333320534660299233983755341740679502866829909"
        "6799557343913926683783612212052043966310901051516412708572770803107343209516537005"
        "0894171741916872394250789070290470270758745162169105075430785038339986520379846417"
        "8537392211402786481359824461197231102895415093770394216666324484593935762408468516"
        "8266331921408266679234948220458053478099328484548458869717064243605586678627758760"
        "7205943770336538020910169773857751547693508546945527999411314597799408461832848215"
        "1013142393373316337519977244732747977"),
    100002049,
)


class ContainerKind:
    CVD = "cvd"
    CLD = "cld"
    CUD = "cud"


def kind_of(path: str) -> str | None:
    lower = path.lower()
    for kind in (ContainerKind.CVD, ContainerKind.CLD, ContainerKind.CUD):
        if lower.endswith("." + kind):
            return kind
    return None


# -- header -------------------------------------------------------------------


@dataclass(frozen=True)
class CvdHeader:
    build_time: str  # as written, e.g. "26 Nov 2026 02-57 +0000"
    version: int
    signatures: int
    flevel: int
    md5: str
    dsig: str
    builder: str
    stime: int  # build time in seconds since the epoch (0 in old files)

    def format(self) -> bytes:
        text = (f"ClamAV-VDB:{self.build_time}:{self.version}:{self.signatures}:{self.flevel}:"
                f"{self.md5}:{self.dsig}:{self.builder}:{self.stime}")
        return text.encode("latin-1").ljust(HEADER_SIZE, b" ")


def c_strtok(line: str, field: int, delims: str = ":") -> str | None:
    """libclamav cli_strtok: runs of delimiters separate fields; an empty last field is None."""
    count = 0
    i = 0
    while i < len(line) and count != field:
        if line[i] in delims:
            count += 1
            while i + 1 < len(line) and line[i + 1] in delims:
                i += 1
        i += 1
    if i >= len(line):
        return None
    j = i
    while j < len(line) and line[j] not in delims:
        j += 1
    return line[i:j] if j > i else None


def _atoi(text: str) -> int:
    from clammail.signatures.hashsigs import c_atoi

    return c_atoi(text.encode("latin-1"))


def parse_header_line(line: str) -> CvdHeader:
    """cl_cvdparse."""
    if not line.startswith("ClamAV-VDB:"):
        raise SignatureError("not a CVD file (no ClamAV-VDB header)")
    fields = []
    for number, what in enumerate(("build time", "version", "number of signatures",
                                   "functionality level", "MD5", "digital signature",
                                   "builder name"), 1):
        value = c_strtok(line, number)
        if value is None:
            raise SignatureError(f"broken CVD header: no {what}")
        fields.append(value)
    stime = c_strtok(line, 8)
    return CvdHeader(fields[0], _atoi(fields[1]), _atoi(fields[2]), _atoi(fields[3]),
                     fields[4], fields[5], fields[6], _atoi(stime) if stime else 0)


def read_header(raw: bytes) -> CvdHeader:
    """The header of a container (cli_cvdverify: all 512 bytes must be there)."""
    if len(raw) < HEADER_SIZE:
        raise SignatureError("broken or not a CVD file: can't read the 512-byte header")
    text = raw[:HEADER_SIZE].split(b"\0", 1)[0].rstrip(b" \n").decode("latin-1")
    return parse_header_line(text)


def peek_header(path: str) -> CvdHeader:
    """cl_cvdhead: the first header line, as the directory loader reads it."""
    with open(path, "rb") as fh:
        raw = fh.read(HEADER_SIZE)
    if not raw:
        raise SignatureError("can't read the CVD header", path)
    text = raw.split(b"\0", 1)[0]
    for stop in (b"\n", b"\r"):
        text = text.split(stop, 1)[0]
    try:
        return parse_header_line(text.rstrip(b" \r\n").decode("latin-1"))
    except SignatureError as exc:
        raise exc.located(path) from None


# -- signatures -----------------------------------------------------------------

_DIGITS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
_DIGIT_VALUE = {c: i for i, c in enumerate(_DIGITS)}


def decode_number(text: str) -> int:
    """ClamAV's signature encoding: base 64 digits, least significant first."""
    value = 0
    for position, char in enumerate(text):
        digit = _DIGIT_VALUE.get(char)
        if digit is None:
            raise SignatureError("digital signature has an invalid character")
        value |= digit << (6 * position)
    return value


def encode_number(value: int) -> str:
    digits = []
    while value:
        digits.append(_DIGITS[value & 63])
        value >>= 6
    return "".join(digits) or _DIGITS[0]


def _recover(dsig: str, length: int, key: RsaKey) -> bytes:
    """cli_decodesig: the signed message, which must fit `length` bytes."""
    plain = pow(decode_number(dsig), key.e, key.n)
    if plain >> (8 * length):
        raise SignatureError("digital signature does not verify (message too large)")
    return plain.to_bytes(length, "big")


def verify_md5_signature(md5_hex: str, dsig: str, key: RsaKey = CLAMAV_CVD_KEY) -> None:
    """cli_versig: DSIG must decode, with the public key, to the 16 MD5 bytes."""
    if len(md5_hex) != 32 or not md5_hex[:1].isalnum():
        raise SignatureError("malformed MD5 for signature verification")
    if _recover(dsig, 16, key).hex() != md5_hex:
        raise SignatureError("digital signature does not verify")


_HASH_LEN = 32
_SALT_LEN = 32
_PAD_LEN = 256  # 2048-bit keys
_BLOCK_LEN = _PAD_LEN - _HASH_LEN - 1


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def verify_info_signature(sha256: bytes, dsig: str, key: RsaKey = CLAMAV_INFO_KEY) -> None:
    """cli_versig2: EM = maskedDB || H || 0xbc, DB = zeros || 0x01 || salt(32),
    H = SHA256(8 zero bytes || sha256 || salt)."""
    encoded = _recover(dsig, _PAD_LEN, key)
    if encoded[-1] != 0xBC:
        raise SignatureError("digital signature of the .info does not verify")
    masked, digest = encoded[:_BLOCK_LEN], encoded[_BLOCK_LEN:_BLOCK_LEN + _HASH_LEN]
    data = bytearray(a ^ b for a, b in zip(masked, _mgf1(digest, _BLOCK_LEN), strict=True))
    data[0] &= 0x7F
    one = data.find(b"\x01")
    if one < 0 or len(data) - (one + 1) != _SALT_LEN:
        raise SignatureError("digital signature of the .info does not verify")
    salt = bytes(data[one + 1:])
    if hashlib.sha256(b"\0" * 8 + sha256 + salt).digest() != digest:
        raise SignatureError("digital signature of the .info does not verify")


def sign_md5(md5_hex: str, d: int, key: RsaKey) -> str:
    """Make a cli_versig signature (for tests and building containers)."""
    return encode_number(pow(int(md5_hex, 16), d, key.n))


def sign_info(sha256: bytes, d: int, key: RsaKey, salt: bytes) -> str:
    """Make a cli_versig2 signature (for tests and building containers)."""
    digest = hashlib.sha256(b"\0" * 8 + sha256 + salt).digest()
    data = b"\0" * (_BLOCK_LEN - _SALT_LEN - 1) + b"\x01" + salt
    masked = bytes(a ^ b for a, b in zip(data, _mgf1(digest, _BLOCK_LEN), strict=True))
    masked = bytes([masked[0] & 0x7F]) + masked[1:]
    encoded = masked + digest + b"\xbc"
    return encode_number(pow(int.from_bytes(encoded, "big"), d, key.n))


# -- the tar stream ---------------------------------------------------------------


class _Stream:
    """Reads the tar, decompressing on the fly; counts what it delivered."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        raw.seek(HEADER_SIZE)
        start = raw.read(7)
        raw.seek(HEADER_SIZE)
        # clamd: plain tar if it begins with the COPYING member, else gzip.
        self._file = raw if start == b"COPYING" else gzip.GzipFile(fileobj=raw, mode="rb")

    def read(self, size: int) -> bytes:
        try:
            return self._file.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise SignatureError(f"broken compressed data: {exc}") from None


@dataclass
class Member:
    name: str
    size: int
    read: Callable[[int], bytes]  # reads at most n bytes of this member


def _octal(field: bytes) -> int | None:
    """sscanf("%o"): optional blanks, then octal digits; None if there are none."""
    text = field.split(b"\0", 1)[0].lstrip(b" \t\n\v\f\r")
    digits = b""
    for char in text:
        if 48 <= char <= 55:
            digits += bytes([char])
        else:
            break
    return int(digits, 8) if digits else None


def iter_members(raw: io.BufferedIOBase) -> Iterator[Member]:
    """The files of the container's tar, as cli_tgzload walks them."""
    stream = _Stream(raw)
    while True:
        block = stream.read(TAR_BLOCK)
        if not block:
            return
        if len(block) != TAR_BLOCK:
            raise SignatureError("incomplete tar block")
        if block[0] == 0:
            return
        name = block[:100].split(b"\0", 1)[0].decode("latin-1")
        if "/" in name:
            raise SignatureError("slash separators are not allowed in a CVD")
        kind = block[156:157]
        if kind == b"5":
            raise SignatureError("directories are not supported in a CVD")
        if kind not in (b"0", b"\0"):
            raise SignatureError(f"unknown tar entry type {kind!r}")
        size = _octal(block[124:136])
        if size is None:
            raise SignatureError("invalid size in tar header")
        remaining = [size]

        def read(n: int, remaining=remaining) -> bytes:
            n = min(n, remaining[0])
            if n <= 0:
                return b""
            data = stream.read(n)
            remaining[0] -= len(data)
            if len(data) < n:
                raise SignatureError("truncated container member")
            return data

        yield Member(name, size, read)
        while remaining[0] > 0:  # skip what the consumer did not read
            read(min(remaining[0], 1 << 20))
        pad = (-size) % TAR_BLOCK
        if pad and len(stream.read(pad)) != pad:
            raise SignatureError("incomplete tar block")


# -- the .info file -------------------------------------------------------------


@dataclass
class InfoFile:
    header: CvdHeader
    files: dict[str, tuple[int, bytes]]  # name -> (size, sha256)


def parse_info(data: bytes, signed: bool, key: RsaKey = CLAMAV_INFO_KEY) -> InfoFile:
    """cli_loadinfo: header line, NAME:SIZE:SHA256 lines, then DSIG unless unsigned."""
    digest = hashlib.sha256()
    header = None
    files: dict[str, tuple[int, bytes]] = {}
    found_dsig = False
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, 1):
        raw = raw.split(b"\0", 1)[0]
        if signed and raw.startswith(b"DSIG:"):
            found_dsig = True
            try:
                verify_info_signature(digest.digest(), raw[5:].rstrip(b"\r").decode("latin-1"),
                                      key)
            except SignatureError as exc:
                raise SignatureError(f".info: {exc.reason}", None, number) from None
            break
        digest.update(raw + b"\n")
        line = raw.rstrip(b"\r\n").decode("latin-1")
        if line.startswith("ClamAV-VDB:"):
            if header is not None:
                raise SignatureError(".info has two header lines", None, number)
            try:
                header = parse_header_line(line)
            except SignatureError as exc:
                raise SignatureError(f".info: {exc.reason}", None, number) from None
            continue
        if header is None:
            raise SignatureError(".info: incorrect file format (no header line)", None, number)
        parts = line.split(":", 3)
        if len(parts) != 3:
            raise SignatureError(".info: malformed line", None, number)
        name, size, sha = parts
        if not size.isdigit():
            raise SignatureError(".info: invalid value in the size field", None, number)
        try:
            sha_bytes = bytes.fromhex(sha)
        except ValueError:
            sha_bytes = b""
        if len(sha) != 64 or len(sha_bytes) != 32:
            raise SignatureError(".info: malformed SHA256 string", None, number)
        files.setdefault(name, (int(size), sha_bytes))
    if signed and not found_dsig:
        raise SignatureError(".info: digital signature not found")
    if header is None:
        raise SignatureError(".info: no header line")
    return InfoFile(header, files)


# -- reading a whole container ----------------------------------------------------


@dataclass
class Container:
    path: str
    kind: str
    header: CvdHeader
    info: InfoFile


MemberLoader = Callable[[Member], bool]  # loads one member; True if it read it


def open_container(path: str, cvd_key: RsaKey = CLAMAV_CVD_KEY,
                   info_key: RsaKey = CLAMAV_INFO_KEY) -> tuple[Container, io.BufferedReader]:
    """Verify a container's header, signature and .info; returns it with the open file."""
    kind = kind_of(path)
    if kind is None:
        raise SignatureError("not a .cvd, .cld or .cud file", path)
    fh = open(path, "rb")
    try:
        try:
            header = read_header(fh.read(HEADER_SIZE))
            if kind == ContainerKind.CVD:
                _verify_body(fh, header, cvd_key)
            fh.seek(0)
            info = None
            for member in iter_members(fh):
                if member.name.lower().endswith(".info"):
                    data = _read_all(member)
                    info = parse_info(data, signed=kind != ContainerKind.CUD, key=info_key)
                    break
            if info is None:
                raise SignatureError("malformed database: no .info file in the container")
            ih = info.header
            if (ih.version, ih.signatures, ih.flevel, ih.stime) != (
                    header.version, header.signatures, header.flevel, header.stime):
                raise SignatureError("corrupted CVD header: it does not match the .info")
            if not info.files:
                raise SignatureError("malformed database: the .info lists no files")
        except SignatureError as exc:
            raise exc.located(path) from None
        fh.seek(0)
        return Container(path, kind, header, info), fh
    except BaseException:
        fh.close()
        raise


def _verify_body(fh: io.BufferedReader, header: CvdHeader, key: RsaKey) -> None:
    """cli_cvdverify: the MD5 of what follows the header, and its signature."""
    md5 = hashlib.md5()
    while chunk := fh.read(1 << 20):
        md5.update(chunk)
    if md5.hexdigest() != header.md5[:32]:
        raise SignatureError("can't verify database integrity: MD5 mismatch")
    try:
        verify_md5_signature(md5.hexdigest(), header.dsig, key)
    except SignatureError as exc:
        raise SignatureError(f"can't verify database integrity: {exc.reason}") from None


def verify_cvd_file(path: str, key: RsaKey = CLAMAV_CVD_KEY) -> CvdHeader:
    """Header, MD5 and signature of a .cvd (as checked when it is a .cld's twin)."""
    with open(path, "rb") as fh:
        try:
            header = read_header(fh.read(HEADER_SIZE))
            _verify_body(fh, header, key)
        except SignatureError as exc:
            raise exc.located(path) from None
    return header


def _read_all(member: Member, limit: int = 1 << 30) -> bytes:
    if member.size > limit:
        raise SignatureError(f"container member {member.name} is too large")
    return member.read(member.size)


class HashingMember(Member):
    """A member whose bytes are hashed as they are read, to check them against the .info."""

    def __init__(self, member: Member) -> None:
        self.digest = hashlib.sha256()
        self.count = 0
        inner = member.read

        def read(n: int) -> bytes:
            data = inner(n)
            self.digest.update(data)
            self.count += len(data)
            return data

        super().__init__(member.name, member.size, read)


def load_members(container: Container, fh: io.BufferedReader,
                 wanted: Callable[[str], bool], load: MemberLoader) -> None:
    """Second pass of cli_tgzload: load each database member and check it against the .info."""
    try:
        for member in iter_members(fh):
            if not wanted(member.name):
                continue
            listed = container.info.files.get(member.name)
            hashing = HashingMember(member)
            read_it = load(hashing)
            if listed is None:
                raise SignatureError(f"file {member.name} not found in .info")
            if read_it and hashing.count:
                while hashing.count < member.size:  # the loader may stop early
                    if not hashing.read(1 << 20):
                        break
                size, sha = listed
                if size != hashing.count:
                    raise SignatureError(f"file {member.name} not correctly loaded (size)")
                if hashing.digest.digest() != sha:
                    raise SignatureError(f"invalid checksum for file {member.name}")
    except SignatureError as exc:
        raise exc.located(container.path) from None


# -- building ---------------------------------------------------------------------


def _tar_member(name: str, data: bytes, mtime: int) -> bytes:
    header = bytearray(TAR_BLOCK)
    header[:len(name)] = name.encode("latin-1")
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = f"{len(data):011o}\0".encode()
    header[136:148] = f"{mtime:011o}\0".encode()
    header[156:157] = b"0"
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    return bytes(header) + data + b"\0" * ((-len(data)) % TAR_BLOCK)


def build_container(files: dict[str, bytes], name: str, version: int, signatures: int,
                    stime: int, build_time: str = "", flevel: int = 216, builder: str = "clammail",
                    sign: tuple[int, RsaKey, int, RsaKey] | None = None,
                    compress: bool = True, copying: bytes = b"ClamAV databases\n") -> bytes:
    """A container in the format clamd reads. `sign` = (cvd d, cvd key, info d, info key);
    without it the result is an unsigned .cud (MD5 and DSIG fields "X")."""
    import time

    if not build_time:
        build_time = time.strftime("%d %b %Y %H-%M %z", time.gmtime(stime))
    head = CvdHeader(build_time, version, signatures, flevel, "X", "X", builder, stime)
    info_lines = [head.format().rstrip(b" ").decode("latin-1")]
    for fname, data in files.items():
        info_lines.append(f"{fname}:{len(data)}:{hashlib.sha256(data).hexdigest()}")
    info = "".join(line + "\n" for line in info_lines).encode("latin-1")
    if sign is not None:
        cvd_d, cvd_key, info_d, info_key = sign
        salt = hashlib.sha256(info).digest()
        info += f"DSIG:{sign_info(hashlib.sha256(info).digest(), info_d, info_key, salt)}\n".encode()
    # sigtool's order: COPYING, the .info, the databases. An uncompressed
    # container must start with COPYING (that is how clamd tells it apart).
    tar = _tar_member("COPYING", copying, stime)
    tar += _tar_member(f"{name}.info", info, stime)
    for fname, data in files.items():
        tar += _tar_member(fname, data, stime)
    tar += b"\0" * (TAR_BLOCK * 2)
    body = gzip.compress(tar, mtime=stime) if compress else tar
    if sign is not None:
        md5 = hashlib.md5(body).hexdigest()
        head = CvdHeader(build_time, version, signatures, flevel, md5,
                         sign_md5(md5, cvd_d, cvd_key), builder, stime)
    return head.format() + body
