"""PDF: clammail against clamscan on generated files (filters, chains, object streams, hostile input)."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from conftest import CLAM_TEST_FILE_SIG, TESTFILES, clamscan_results
from docbuild import clammail_scan, ndb_line, pdf_file, pdf_stream

import clammail.engine  # noqa: F401  (the engine first: clammail.unpack imports it back)
from clammail.unpack.pdf import ascii85_decode, lzw_decode, run_length_decode

PAYLOAD = b"MZ" + b"\x90" * 64 + b"clammail-pdf-payload" + bytes(range(256)) * 3
PAYLOAD_HDB = f"{hashlib.md5(PAYLOAD).hexdigest()}:{len(PAYLOAD)}:Pdf.Payload"

ENCODERS = {
    "FlateDecode": zlib.compress,
    "ASCIIHexDecode": lambda d: d.hex().encode() + b">",
    "ASCII85Decode": lambda d: base64.a85encode(d) + b"~>",
    "LZWDecode": lambda d: lzw_encode(d),
    "RunLengthDecode": lambda d: run_length_encode(d),
}


def lzw_encode(data: bytes) -> bytes:
    """A plain LZW encoder (9-12 bit codes, EarlyChange 1) for the tests."""
    table = {bytes([k]): k for k in range(256)}
    codes = [256]
    width_codes = []
    current = b""
    next_code = 258
    for byte in data:
        candidate = current + bytes([byte])
        if candidate in table:
            current = candidate
            continue
        codes.append(table[current])
        table[candidate] = next_code
        next_code += 1
        current = bytes([byte])
        if next_code >= 4094:
            codes.append(256)
            table = {bytes([k]): k for k in range(256)}
            next_code = 258
    codes.append(table[current])
    codes.append(257)
    # Widths follow the decoder's table size, which lags the encoder's by one entry.
    size, width = 258, 9
    bits = nbits = 0
    out = bytearray()
    for index, code in enumerate(codes):
        bits = bits << width | code
        nbits += width
        while nbits >= 8:
            nbits -= 8
            out.append(bits >> nbits & 0xFF)
        if code == 256:
            size, width = 258, 9
            continue
        if index > 0 and codes[index - 1] != 256:
            size += 1
        if size + 1 >= 1 << width and width < 12:
            width += 1
    if nbits:
        out.append(bits << (8 - nbits) & 0xFF)
    width_codes.clear()
    return bytes(out)


def run_length_encode(data: bytes) -> bytes:
    out = bytearray()
    for k in range(0, len(data), 100):
        chunk = data[k: k + 100]
        out += bytes([len(chunk) - 1]) + chunk
    return bytes(out + b"\x80")


def _encode(payload: bytes, chain: list[str]) -> bytes:
    for name in reversed(chain):
        payload = ENCODERS[name](payload)
    return payload


def _filtered(chain: list[str], extra: bytes = b"") -> bytes:
    names = b" ".join(b"/" + n.encode() for n in chain)
    return pdf_file([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Count 0 >>",
                     pdf_stream(_encode(PAYLOAD, chain), b"/Filter [" + names + b"] " + extra)])


def _compare(tmp_path, files, dbs, *extra, found: set[str], options=None, allmatch=False):
    """clamscan and clammail on `files`: the same names for each; `found` names the
    files clamscan must find something in (so a comparison of two empty answers
    cannot pass for one that exercised the decoders)."""
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    code, theirs, err = clamscan_results(dbs, paths, *extra, allmatch=allmatch)
    assert set(theirs) == {str(p) for p in paths}, err
    found_by_clamscan = {p.name for p in paths if theirs[str(p)]}
    assert found_by_clamscan == found, " ".join(sorted(found_by_clamscan))
    assert code == (1 if found else 0), err
    ours = clammail_scan(dbs, paths, options, allmatch=allmatch)
    diffs = {p.name: (ours[str(p)], theirs[str(p)]) for p in paths
             if sorted(ours[str(p)]) != sorted(theirs[str(p)])}
    assert not diffs, diffs
    return theirs


@pytest.fixture
def payload_db(tmp_path):
    db = tmp_path / "p.hdb"
    db.write_text(PAYLOAD_HDB + "\n" + CLAM_TEST_FILE_SIG + "\n")
    return db


@pytest.mark.oracle
def test_clam_pdf(payload_db):
    path = TESTFILES / "clam.pdf"
    code, theirs, err = clamscan_results([payload_db], [path])
    assert code == 1 and theirs[str(path)] == ["ClamAV-Test-File.UNOFFICIAL"], err
    assert clammail_scan([payload_db], [path])[str(path)] == theirs[str(path)]


@pytest.mark.oracle
def test_filters_and_chains(tmp_path, payload_db):
    chains = [[], *[[name] for name in ENCODERS],
              ["ASCII85Decode", "FlateDecode"], ["ASCIIHexDecode", "FlateDecode"],
              ["ASCIIHexDecode", "LZWDecode"], ["FlateDecode", "RunLengthDecode"],
              ["ASCII85Decode", "ASCIIHexDecode", "FlateDecode"], ["LZWDecode", "FlateDecode"]]
    files = {f"chain{k}.pdf": _filtered(chain) for k, chain in enumerate(chains)}
    files["embedded.pdf"] = pdf_file([
        b"<< /Type /Catalog /Names << /EmbeddedFiles << /Names [(a.exe) 3 0 R] >> >> >>",
        b"<< /Type /Pages /Count 0 >>",
        b"<< /Type /Filespec /F (a.exe) /EF << /F 4 0 R >> >>",
        pdf_stream(zlib.compress(PAYLOAD), b"/Type /EmbeddedFile /Filter /FlateDecode ")])
    files["no_xref.pdf"] = pdf_file([b"<< /Type /Catalog >>", pdf_stream(PAYLOAD)], xref=False)
    # clamscan extracts the payload behind every filter chain but LZW and
    # RunLength alone (chains 4, 5), not an unfiltered stream (chain 0), not
    # a file without xref.
    found = {f"chain{k}.pdf" for k in (1, 2, 3, 6, 7, 8, 9, 10, 11)} | {"embedded.pdf"}
    result = _compare(tmp_path, files, [payload_db], allmatch=True, found=found)
    # Sanity: the oracle itself finds the payload behind the filters it extracts.
    assert result[str(tmp_path / "chain1.pdf")] == ["Pdf.Payload.UNOFFICIAL"]


@pytest.mark.oracle
def test_javascript_and_actions(tmp_path):
    db = tmp_path / "js.ndb"
    db.write_text("\n".join([ndb_line("js", 0, b"var clammail_js = 1;"),
                             ndb_line("launch", 0, b"/Launch /Win << /F (cmd.exe)")]) + "\n")
    files = {
        "js.pdf": pdf_file([b"<< /Type /Catalog /OpenAction 2 0 R >>",
                            b"<< /Type /Action /S /JavaScript /JS (var clammail_js = 1;) >>"]),
        "launch.pdf": pdf_file([b"<< /Type /Catalog /OpenAction 2 0 R >>",
                                b"<< /Type /Action /S /Launch /Win << /F (cmd.exe) >> >>"]),
    }
    _compare(tmp_path, files, [db], found={"js.pdf", "launch.pdf"})


@pytest.mark.oracle
def test_hostile_pdfs_are_bounded(tmp_path, payload_db):
    bomb = zlib.compress(b"\0" * (64 << 20), 9)
    files = {
        "bomb.pdf": pdf_file([b"<< /Type /Catalog >>",
                              pdf_stream(bomb, b"/Filter /FlateDecode "),
                              pdf_stream(PAYLOAD)]),
        "loop_xref.pdf": pdf_file([b"<< /Type /Catalog /Pages 1 0 R /Prev 9 0 R >>",
                                   pdf_stream(PAYLOAD)], trailer_extra=b"/Prev 0 /XRefStm 5 "),
        "self_ref.pdf": pdf_file([b"<< /Type /Catalog /Self 1 0 R /Length 1 0 R >>",
                                  b"<< /Length 2 0 R >>\nstream\nxx"]),
        "truncated.pdf": _filtered(["FlateDecode"])[:150],
        "bad_flate.pdf": pdf_file([b"<< >>", pdf_stream(b"not zlib at all", b"/Filter /FlateDecode ")]),
    }
    # clamscan gives up on all of them without finding the payload.
    _compare(tmp_path, files, [payload_db], "--max-filesize=8M", "--max-scansize=16M",
             options={"MaxFileSize": 8 << 20, "MaxScanSize": 16 << 20}, found=set())


@pytest.mark.oracle
def test_encrypted_pdf_heuristic(tmp_path, payload_db):
    # An RC4 PDF whose user password is not empty: the key cannot be derived.
    locked = pdf_file([b"<< /Type /Catalog >>", pdf_stream(PAYLOAD),
                       b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32
                       + b"> /P -4 >>"], trailer_extra=b"/Encrypt 3 0 R /ID [<0011> <0011>] ")
    files = {"locked.pdf": locked}
    _compare(tmp_path, files, [payload_db], found=set())
    theirs = _compare(tmp_path, files, [payload_db], "--alert-encrypted-doc",
                      options={"AlertEncryptedDoc": True}, found={"locked.pdf"})
    assert theirs[str(tmp_path / "locked.pdf")] == ["Heuristics.Encrypted.PDF"]


def test_decoders():
    data = bytes(range(256)) * 20 + b"tail"
    assert ascii85_decode(base64.a85encode(data) + b"~>") == data
    assert lzw_decode(lzw_encode(data), 1 << 20) == data
    assert run_length_decode(run_length_encode(data), 1 << 20) == data
    assert run_length_decode(b"\xfd\x41\x80", 10) == b"AAAA"
