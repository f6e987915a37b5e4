"""PDF: decoded streams, embedded files and JavaScript, the objects libclamav extracts.

Follows libclamav's pdf.c in what it hands on for scanning (each extracted
object is a new object for the engine):

* objects are found by scanning for "N G obj" ... "endobj", not through the
  xref table (a broken or looping xref changes nothing); objects inside
  object streams (/Type/ObjStm) are found too;
* a stream is extracted when it has no filter, or when it carries one of the
  names libclamav always dumps (FlateDecode, DCTDecode, ASCIIHexDecode,
  ASCII85Decode, /EmbeddedFile, /JavaScript, /OpenAction, /Launch); images
  other than JPEG are not;
* filters: FlateDecode (with PNG/TIFF predictors), ASCIIHexDecode,
  ASCII85Decode, LZWDecode, RunLengthDecode, in chain order; a filter that
  fails leaves what was decoded before it;
* a non-stream object with /JavaScript gives the text of its /JS strings;
  one with /OpenAction or /Launch is handed on as it is;
* encryption with the standard handler and an empty user password (RC4,
  revisions 2-4) is decrypted; a PDF that needs a password is reported as
  Heuristics.Encrypted.PDF when AlertEncryptedDoc is on. AES-encrypted
  content is not decrypted here (a known difference).

Output sizes are bounded by `ctx.max_object_size()`; the object count by
libclamav's own limit (64 Ki objects).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from clammail.unpack.base import Extracted, UnpackContext

MAX_OBJECTS = 64 * 1024
_OBJ = re.compile(rb"(?<![0-9])(\d{1,10})[\x00\t\n\f\r ]+(\d{1,5})[\x00\t\n\f\r ]+obj")
_NAME = re.compile(rb"/([A-Za-z0-9#._+-]+)")
_WS = b"\x00\t\n\f\r "
_FILTER_NAMES = {
    b"FlateDecode": "flate", b"Fl": "flate", b"ASCIIHexDecode": "ahx", b"AHx": "ahx",
    b"ASCII85Decode": "a85", b"A85": "a85", b"LZWDecode": "lzw", b"LZW": "lzw",
    b"RunLengthDecode": "rl", b"RL": "rl", b"DCTDecode": "dct", b"DCT": "dct",
    b"JPXDecode": "jpx", b"CCITTFaxDecode": "fax", b"CCF": "fax", b"JBIG2Decode": "jbig2",
    b"Crypt": "crypt",
}
# Names that make libclamav extract an object whatever its filters (DUMP_MASK).
_ALWAYS_DUMP = {b"FlateDecode", b"Fl", b"DCTDecode", b"DCT", b"ASCIIHexDecode", b"AHx",
                b"ASCII85Decode", b"A85", b"EmbeddedFile", b"JavaScript", b"OpenAction",
                b"Launch"}
_PASSWORD_PAD = bytes.fromhex(
    "28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")


@dataclass
class PdfObject:
    number: int
    generation: int
    body: bytes  # between "obj" and "endobj"
    dictionary: bytes  # up to "stream" (the whole body when there is no stream)
    stream: bytes | None
    raw_stream: bytes | None = None  # up to "endstream", end-of-line kept


def unpack_pdf(data: bytes | memoryview, ctx: UnpackContext) -> Iterator[Extracted]:
    data = bytes(data)
    limit = ctx.max_object_size()
    objects = find_objects(data, ctx)
    crypt = _encryption(data, objects)
    if crypt is not None and crypt.key is None and ctx.option("AlertEncryptedDoc"):
        ctx.alert("Heuristics.Encrypted.PDF")
    queue = list(objects)
    seen_objstm = 0
    while queue:
        obj = queue.pop(0)
        ctx.check()
        names = set(_NAME.findall(obj.dictionary))
        if obj.stream is not None:
            if b"Image" in names and not names & {b"DCTDecode", b"DCT"}:
                continue
            filters = _filters(obj.dictionary)
            if filters and not names & _ALWAYS_DUMP and b"ObjStm" not in names:
                continue
            raw = obj.stream
            if not filters and obj.raw_stream is not None and _declared_length(obj.dictionary) is None:
                # Without a usable /Length libclamav keeps the end-of-line before "endstream".
                raw = obj.raw_stream
            if crypt is not None and crypt.key is not None and b"XRef" not in names:
                raw = crypt.decrypt(obj.number, obj.generation, raw)
            decoded = decode_stream(raw, filters, _decode_parms(obj.dictionary), limit)
            if b"ObjStm" in names and seen_objstm < MAX_OBJECTS:
                inner = _objects_in_stream(decoded, obj.dictionary)
                seen_objstm += len(inner)
                queue.extend(inner)
            if filters and not names & _ALWAYS_DUMP:
                continue
            if decoded:
                yield Extracted(decoded, name=f"pdf-obj-{obj.number}-{obj.generation}")
        elif b"JavaScript" in names:
            script = _javascript(obj, crypt)
            if script:
                yield Extracted(script[:limit], name=f"pdf-js-{obj.number}")
        elif names & {b"OpenAction", b"Launch"}:
            yield Extracted(obj.body[:limit], name=f"pdf-obj-{obj.number}-{obj.generation}")


def find_objects(data: bytes, ctx: UnpackContext) -> list[PdfObject]:
    objects: list[PdfObject] = []
    pos = 0
    while len(objects) < MAX_OBJECTS:
        m = _OBJ.search(data, pos)
        if m is None:
            break
        if len(objects) & 0xFF == 0:
            ctx.check()
        start = m.end()
        end = data.find(b"endobj", start)
        stream_at = data.find(b"stream", start, end if end >= 0 else len(data))
        stream = raw_stream = None
        if stream_at >= 0 and data[stream_at - 3: stream_at] != b"end":
            dictionary = data[start:stream_at]
            body_start = stream_at + 6
            if data[body_start: body_start + 2] == b"\r\n":
                body_start += 2
            elif data[body_start: body_start + 1] in (b"\n", b"\r"):
                body_start += 1
            stream_end = data.find(b"endstream", body_start)
            if stream_end < 0:
                stream_end = end if end >= 0 else len(data)
            raw_stream = data[body_start:stream_end]
            stream = _trim_eol(raw_stream)
            if end < stream_end:
                end = data.find(b"endobj", stream_end)
        else:
            dictionary = data[start: end if end >= 0 else len(data)]
        if end < 0:
            end = len(data)
        objects.append(PdfObject(int(m.group(1)), int(m.group(2)) & 0xFF, data[start:end],
                                 dictionary, stream, raw_stream))
        pos = max(end, m.end())
    return objects


def _declared_length(dictionary: bytes) -> int | None:
    """A direct /Length as libclamav reads it: the value must be followed by a delimiter."""
    m = re.search(rb"/Length[\x00\t\n\f\r ]+(\d+)(?![\x00\t\n\f\r ]+\d+[\x00\t\n\f\r ]+R)[/>\r\n]", dictionary)
    return int(m.group(1)) if m else None


def _trim_eol(stream: bytes) -> bytes:
    if stream.endswith(b"\r\n"):
        return stream[:-2]
    if stream.endswith((b"\n", b"\r")):
        return stream[:-1]
    return stream


def _filters(dictionary: bytes) -> list[str]:
    m = re.search(rb"/(?:Filter|F)[\x00\t\n\f\r ]*(\[[^\]]*\]|/[A-Za-z0-9]+)", dictionary)
    if m is None:
        return []
    return [_FILTER_NAMES.get(name, "unknown") for name in _NAME.findall(m.group(1))]


def _decode_parms(dictionary: bytes) -> dict[str, int]:
    m = re.search(rb"/(?:DecodeParms|DP)[\x00\t\n\f\r ]*(\[?<<.*?>>)", dictionary, re.S)
    parms: dict[str, int] = {}
    if m is None:
        return parms
    for key, value in re.findall(rb"/(Predictor|Colors|BitsPerComponent|Columns|EarlyChange)"
                                 rb"[\x00\t\n\f\r ]+(\d+)", m.group(1)):
        parms[key.decode()] = int(value)
    return parms


def decode_stream(raw: bytes, filters: list[str], parms: dict[str, int], limit: int) -> bytes:
    out = raw
    for name in filters:
        try:
            if name == "flate":
                out = _predict(_inflate(out, limit), parms)
            elif name == "ahx":
                out = ascii_hex_decode(out)
            elif name == "a85":
                out = ascii85_decode(out)
            elif name == "lzw":
                out = _predict(lzw_decode(out, limit, parms.get("EarlyChange", 1)), parms)
            elif name == "rl":
                out = run_length_decode(out, limit)
            else:
                break  # images and unknown filters: handed on as they are
        except (ValueError, zlib.error):
            break
    return out[:limit]


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        return inflater.decompress(data, limit)
    except zlib.error:
        # A raw deflate stream or a damaged header: try without the zlib wrapper.
        try:
            return zlib.decompressobj(-15).decompress(data[2:], limit)
        except zlib.error as exc:
            raise ValueError("bad flate stream") from exc


def ascii_hex_decode(data: bytes) -> bytes:
    end = data.find(b">")
    digits = bytes(b for b in (data if end < 0 else data[:end]) if b in _HEXDIGITS)
    if len(digits) % 2:
        digits += b"0"
    return bytes.fromhex(digits.decode())


_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def ascii85_decode(data: bytes) -> bytes:
    end = data.find(b"~>")
    if end >= 0:
        data = data[:end]
    if data.startswith(b"<~"):
        data = data[2:]
    out = bytearray()
    group: list[int] = []
    for byte in data:
        if byte in _WS:
            continue
        if byte == 0x7A and not group:  # z
            out += b"\0\0\0\0"
            continue
        if not 33 <= byte <= 117:
            raise ValueError("bad ascii85 digit")
        group.append(byte - 33)
        if len(group) == 5:
            value = 0
            for digit in group:
                value = value * 85 + digit
            out += (value & 0xFFFFFFFF).to_bytes(4, "big")
            group.clear()
    if group:
        count = len(group)
        group += [84] * (5 - count)
        value = 0
        for digit in group:
            value = value * 85 + digit
        out += (value & 0xFFFFFFFF).to_bytes(4, "big")[: count - 1]
    return bytes(out)


def lzw_decode(data: bytes, limit: int, early: int = 1) -> bytes:
    out = bytearray()
    table = [bytes([k]) for k in range(256)] + [b"", b""]
    width, bits, nbits = 9, 0, 0
    previous: bytes | None = None
    for byte in data:
        bits = bits << 8 | byte
        nbits += 8
        while nbits >= width:
            nbits -= width
            code = bits >> nbits & ((1 << width) - 1)
            if code == 256:
                table = table[:258]
                width, previous = 9, None
                continue
            if code == 257:
                return bytes(out)
            if previous is None:
                entry = table[code] if code < len(table) else b""
            elif code < len(table):
                entry = table[code]
                table.append(previous + entry[:1])
            elif code == len(table):
                entry = previous + previous[:1]
                table.append(entry)
            else:
                raise ValueError("bad lzw code")
            out += entry
            if len(out) >= limit:
                return bytes(out[:limit])
            previous = entry
            if len(table) + early >= 1 << width and width < 12:
                width += 1
    return bytes(out)


def run_length_decode(data: bytes, limit: int) -> bytes:
    out = bytearray()
    pos = 0
    while pos < len(data) and len(out) < limit:
        length = data[pos]
        pos += 1
        if length == 128:
            break
        if length < 128:
            out += data[pos: pos + length + 1]
            pos += length + 1
        else:
            if pos >= len(data):
                break
            out += data[pos: pos + 1] * (257 - length)
            pos += 1
    return bytes(out[:limit])


def _predict(data: bytes, parms: dict[str, int]) -> bytes:
    predictor = parms.get("Predictor", 1)
    if predictor < 2:
        return data
    colors = parms.get("Colors", 1)
    bpc = parms.get("BitsPerComponent", 8)
    columns = parms.get("Columns", 1)
    bpp = max(1, colors * bpc // 8)
    row_len = (colors * bpc * columns + 7) // 8
    if predictor == 2:
        out = bytearray(data)
        if bpc == 8:
            for row in range(0, len(out), row_len):
                for k in range(row + bpp, min(row + row_len, len(out))):
                    out[k] = (out[k] + out[k - bpp]) & 0xFF
        return bytes(out)
    out = bytearray()
    prior = bytearray(row_len)
    pos = 0
    while pos < len(data):
        kind = data[pos]
        row = bytearray(data[pos + 1: pos + 1 + row_len])
        pos += 1 + row_len
        row += b"\0" * (row_len - len(row))
        for k in range(row_len):
            left = row[k - bpp] if k >= bpp else 0
            up = prior[k]
            corner = prior[k - bpp] if k >= bpp else 0
            if kind == 1:
                row[k] = (row[k] + left) & 0xFF
            elif kind == 2:
                row[k] = (row[k] + up) & 0xFF
            elif kind == 3:
                row[k] = (row[k] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                row[k] = (row[k] + pred) & 0xFF
        out += row
        prior = row
    return bytes(out)


def _objects_in_stream(decoded: bytes, dictionary: bytes) -> list[PdfObject]:
    """The objects of an object stream: pairs of number and offset, then the bodies."""
    first = re.search(rb"/First[\x00\t\n\f\r ]+(\d+)", dictionary)
    count = re.search(rb"/N[\x00\t\n\f\r ]+(\d+)", dictionary)
    if first is None or count is None:
        return []
    start = int(first.group(1))
    numbers = [int(n) for n in re.findall(rb"\d+", decoded[:start])]
    pairs = list(zip(numbers[0::2], numbers[1::2], strict=False))[: int(count.group(1))]
    result = []
    for index, (number, offset) in enumerate(pairs):
        begin = start + offset
        end = start + pairs[index + 1][1] if index + 1 < len(pairs) else len(decoded)
        if begin > len(decoded) or end < begin:
            continue
        body = decoded[begin:end]
        result.append(PdfObject(number, 0, body, body, None))
    return result


def _javascript(obj: PdfObject, crypt) -> bytes:
    out = bytearray()
    for m in re.finditer(rb"/JS[\x00\t\n\f\r ]*\(", obj.body):
        text = _literal_string(obj.body, m.end())
        if crypt is not None and crypt.key is not None:
            text = crypt.decrypt(obj.number, obj.generation, text)
        out += text
    return bytes(out)


def _literal_string(data: bytes, pos: int) -> bytes:
    """A PDF literal string from just after its '(' (escapes resolved, nesting kept)."""
    out = bytearray()
    depth = 1
    while pos < len(data):
        byte = data[pos]
        pos += 1
        if byte == 0x5C and pos < len(data):
            nxt = data[pos]
            pos += 1
            mapped = {0x6E: 10, 0x72: 13, 0x74: 9, 0x62: 8, 0x66: 12}.get(nxt)
            if mapped is not None:
                out.append(mapped)
            elif 0x30 <= nxt <= 0x37:
                digits = bytes([nxt])
                while len(digits) < 3 and pos < len(data) and 0x30 <= data[pos] <= 0x37:
                    digits += data[pos: pos + 1]
                    pos += 1
                out.append(int(digits, 8) & 0xFF)
            elif nxt in (0x0A, 0x0D):
                continue
            else:
                out.append(nxt)
            continue
        if byte == 0x28:
            depth += 1
        elif byte == 0x29:
            depth -= 1
            if not depth:
                break
        out.append(byte)
    return bytes(out)


# -- encryption ----------------------------------------------------------------


class _Crypt:
    def __init__(self, key: bytes | None, method: str):
        self.key = key
        self.method = method

    def decrypt(self, number: int, generation: int, data: bytes) -> bytes:
        if self.key is None or self.method != "rc4":
            return data
        seed = self.key + number.to_bytes(4, "little")[:3] + generation.to_bytes(2, "little")
        key = hashlib.md5(seed).digest()[: min(len(self.key) + 5, 16)]
        return rc4(key, data)


def _encryption(data: bytes, objects: list[PdfObject]) -> _Crypt | None:
    m = re.search(rb"/Encrypt[\x00\t\n\f\r ]*(?:(\d+)[\x00\t\n\f\r ]+(\d+)[\x00\t\n\f\r ]+R|(<<))",
                  data)
    if m is None:
        return None
    if m.group(3):
        dictionary = data[m.start(3): m.start(3) + 4096]
    else:
        number = int(m.group(1))
        found = [o for o in objects if o.number == number]
        if not found:
            return _Crypt(None, "unknown")
        dictionary = found[-1].dictionary
    if b"/Standard" not in dictionary:
        return _Crypt(None, "unknown")
    version = _int(dictionary, b"V", 0)
    revision = _int(dictionary, b"R", 0)
    length = _int(dictionary, b"Length", 40) // 8 if version > 1 else 5
    permissions = _int(dictionary, b"P", 0, signed=True)
    owner = _string(dictionary, b"O")
    user = _string(dictionary, b"U")
    file_id = re.search(rb"/ID[\x00\t\n\f\r ]*\[[\x00\t\n\f\r ]*(<[0-9A-Fa-f\s]*>|\()", data)
    first_id = b""
    if file_id is not None:
        token = file_id.group(1)
        if token.startswith(b"<"):
            first_id = ascii_hex_decode(token[1:])
        else:
            first_id = _literal_string(data, file_id.end())
    if owner is None or user is None or revision not in (2, 3, 4):
        return _Crypt(None, "unknown")
    method = "rc4"
    if version == 4 and re.search(rb"/CFM[\x00\t\n\f\r ]*/AESV2", dictionary):
        method = "aes"
    metadata = not re.search(rb"/EncryptMetadata[\x00\t\n\f\r ]*false", dictionary)
    digest = hashlib.md5(_PASSWORD_PAD + owner[:32] + (permissions & 0xFFFFFFFF).to_bytes(4, "little")
                         + first_id + (b"" if metadata or revision < 4 else b"\xff\xff\xff\xff"))
    key = digest.digest()
    if revision >= 3:
        for _ in range(50):
            key = hashlib.md5(key[:length]).digest()
    key = key[:length]
    if revision == 2:
        ok = rc4(key, _PASSWORD_PAD) == user[:32]
    else:
        check = rc4(key, hashlib.md5(_PASSWORD_PAD + first_id).digest())
        for i in range(1, 20):
            check = rc4(bytes(b ^ i for b in key), check)
        ok = check[:16] == user[:16]
    return _Crypt(key if ok else None, method)


def _int(dictionary: bytes, key: bytes, default: int, signed: bool = False) -> int:
    m = re.search(rb"/" + key + rb"[\x00\t\n\f\r ]+(-?\d+)", dictionary)
    return int(m.group(1)) if m else default


def _string(dictionary: bytes, key: bytes) -> bytes | None:
    m = re.search(rb"/" + key + rb"[\x00\t\n\f\r ]*(<|\()", dictionary)
    if m is None:
        return None
    if m.group(1) == b"<":
        end = dictionary.find(b">", m.end())
        return ascii_hex_decode(dictionary[m.end(): end if end >= 0 else None])
    return _literal_string(dictionary, m.end())


def rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray(len(data))
    i = j = 0
    for k, byte in enumerate(data):
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out[k] = byte ^ s[(s[i] + s[j]) & 0xFF]
    return bytes(out)
