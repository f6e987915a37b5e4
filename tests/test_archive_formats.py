"""Every archive format and method clammail opens, against clamscan 1.4.6.

Each case builds a container around members with unique contents and puts
the MD5 of each member in an .hdb: a member is reported only when it was
extracted exactly. One clamscan run and one clammail run cover all cases of
a test, and the reports must be the same, file by file.
"""

from __future__ import annotations

import zipfile

import archive_builders as B
import pytest

pytestmark = pytest.mark.oracle


def member(tag: str, lines: int = 120) -> bytes:
    return b"".join(b"%s line %05d of a test member\n" % (tag.encode(), i) for i in range(lines))


def _cases() -> dict[str, tuple]:
    """file name -> (builder taking members, needs tool or None)."""
    z = zipfile
    return {
        "stored.zip": (lambda m: B.zip_py(m, z.ZIP_STORED), None),
        "deflate.zip": (lambda m: B.zip_py(m, z.ZIP_DEFLATED), None),
        "bzip2.zip": (lambda m: B.zip_py(m, z.ZIP_BZIP2), None),
        "lzma.zip": (lambda m: B.zip_py(m, z.ZIP_LZMA), None),  # ClamAV: not extracted
        "zip64.zip": (lambda m: B.zip_py(m, zip64=True), None),  # ClamAV: not extracted
        "deflate64.zip": (lambda m: B.zip_7z(m, "deflate64"), "7z"),
        "7zbzip2.zip": (lambda m: B.zip_7z(m, "bzip2"), "7z"),
        "ppmd.zip": (lambda m: B.zip_7z(m, "ppmd"), "7z"),  # ClamAV: not extracted
        "ustar.tar": (lambda m: B.tar_py(m, "ustar"), None),
        "gnu.tar": (lambda m: B.tar_py(m, "gnu"), None),
        "pax.tar": (lambda m: B.tar_py(m, "pax"), None),
        "v7.tar": (lambda m: B.tar_cli(m, "v7"), None),
        "oldgnu.tar": (lambda m: B.tar_cli(m, "oldgnu"), None),
        "t.tar.gz": (lambda m: B.tar_py(m, "gnu", "gz"), None),
        "t.tar.bz2": (lambda m: B.tar_py(m, "gnu", "bz2"), None),
        "t.tar.xz": (lambda m: B.tar_py(m, "gnu", "xz"), None),
        "odc.cpio": (lambda m: B.cpio_cli(m, "odc"), "cpio"),
        "newc.cpio": (lambda m: B.cpio_cli(m, "newc"), "cpio"),
        "crc.cpio": (lambda m: B.cpio_cli(m, "crc"), "cpio"),
        "binle.cpio": (lambda m: B.cpio_bin(m), None),
        "binbe.cpio": (lambda m: B.cpio_bin(m, big_endian=True), None),
        "lzma.7z": (lambda m: B.sevenzip(m, "lzma"), "7z"),
        "lzma2.7z": (lambda m: B.sevenzip(m, "lzma2"), "7z"),
        "ppmd.7z": (lambda m: B.sevenzip(m, "ppmd"), "7z"),
        "copy.7z": (lambda m: B.sevenzip(m, "copy"), "7z"),
        "nonsolid.7z": (lambda m: B.sevenzip(m, solid=False), "7z"),
        "plain.iso": (lambda m: B.iso(m), "genisoimage"),
        "joliet.iso": (lambda m: B.iso(m, joliet=True), "genisoimage"),
        "plain.cab": (lambda m: B.cab(m), "gcab"),
        "mszip.cab": (lambda m: B.cab(m, mszip=True), "gcab"),
        "lh5.lzh": (lambda m: B.lha(m, 5), "lha"),
        "lh6.lzh": (lambda m: B.lha(m, 6), "lha"),
        "lh7.lzh": (lambda m: B.lha(m, 7), "lha"),
        "x.xar": (lambda m: B.bsdtar(m, "xar"), "bsdtar"),
        "a.ar": (lambda m: B.ar(m), None),  # ClamAV: not opened
    }


def _single_streams() -> dict[str, tuple]:
    return {
        "s.gz": B.gz, "s.bz2": B.bz, "s.xz": B.xz,
        "s.lzma": B.lzma_alone,  # ClamAV: not opened
        "s.zst": B.zstd,  # ClamAV 1.4.6: not opened
    }


def test_every_format_and_method(tmp_path):
    files, sigs = {}, []
    for name, (build, tool) in _cases().items():
        if tool and not B.have_tool(tool):
            pytest.fail(f"{tool} is missing: install {B.TOOLS[tool]} (packaging/apt-packages.txt)")
        members = [(f"m{i}.txt", member(f"{name}-{i}")) for i in range(2)]
        files[name] = build(members)
        sigs += [B.hdb_line(data, f"Member.{name}.{i}") for i, (_, data) in enumerate(members)]
    for name, compress in _single_streams().items():
        data = member(name, 300)
        files[name] = compress(data)
        sigs.append(B.hdb_line(data, f"Stream.{name}"))
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=True)
    assert ours == theirs
    # The comparison is only worth something if ClamAV opened most of them.
    assert sum(1 for names in theirs.values() if names) >= 30


def test_nesting(tmp_path):
    """zip in tar.gz in zip, 7z in cab in tar, gz in cpio in iso ... down five levels."""
    leaf = member("nested-leaf", 200)
    inner_zip = B.zip_py([("leaf.txt", leaf)])
    tgz = B.tar_py([("inner.zip", inner_zip)], "gnu", "gz")
    outer = B.zip_py([("middle.tar.gz", tgz), ("other.txt", member("nest-other"))])
    leaf2 = member("nested-leaf-two", 200)
    seven = B.sevenzip([("leaf2.txt", leaf2)])
    cab = B.cab([("s.7z", seven)], mszip=True)
    tar = B.tar_py([("c.cab", cab)])
    leaf3 = member("nested-leaf-three", 200)
    cpio = B.cpio_bin([("leaf3.gz", B.gz(leaf3))])
    image = B.iso([("c.cpio", cpio)])
    files = {"zip-tgz-zip.zip": outer, "tar-cab-7z.tar": tar, "iso-cpio-gz.iso": image}
    sigs = [B.hdb_line(leaf, "Leaf.One"), B.hdb_line(leaf2, "Leaf.Two"), B.hdb_line(leaf3, "Leaf.Three")]
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=True)
    assert ours == theirs
    assert theirs["zip-tgz-zip.zip"] == ["Leaf.One.UNOFFICIAL"]


def test_recursion_limit(tmp_path):
    leaf = member("deep-leaf", 100)
    data = leaf
    for level in range(12):
        data = B.zip_py([(f"level{level}.bin", data)])
    files = {"deep.zip": data}
    sigs = [B.hdb_line(leaf, "Deep.Leaf")]
    for flags in ((), ("--max-recursion=8",), ("--max-recursion=8", "--alert-exceeds-max=yes")):
        theirs, ours = B.run_both(tmp_path, files, sigs, *flags)
        assert ours == theirs, flags
    assert theirs["deep.zip"] == ["Heuristics.Limits.Exceeded.MaxRecursion"]



def test_recursion_limit_boundary(tmp_path):
    """The exact depth where MaxRecursion stops, for several kinds of container
    (the top-level object counts as the first level, as in libclamav)."""
    import base64

    leaf = member("boundary-leaf", 50)
    files = {}
    zipped = gzipped = leaf
    for depth in range(1, 5):
        zipped = B.zip_py([(f"z{depth}.bin", zipped)])
        gzipped = B.gz(gzipped)
        files[f"zip{depth}.zip"] = zipped
        files[f"gz{depth}.gz"] = gzipped
    files["tgz.tgz"] = B.tar_py([("leaf.bin", leaf)], compression="gz")
    attachment = base64.encodebytes(B.zip_py([("leaf.bin", leaf)])).decode()
    files["mail.eml"] = (
        "From: a@example.com\nTo: b@example.com\nSubject: boundary\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\nContent-Type: text/plain\n\nhello\n'
        '--b1\nContent-Type: application/zip; name="l.zip"\nContent-Transfer-Encoding: base64\n\n'
        f"{attachment}--b1--\n").encode()
    sigs = [B.hdb_line(leaf, "Boundary.Leaf")]
    for limit in (1, 2, 3, 4):
        theirs, ours = B.run_both(tmp_path, files, sigs, f"--max-recursion={limit}",
                                  "--alert-exceeds-max=yes")
        assert ours == theirs, limit
        assert theirs[f"zip{limit}.zip"] == ["Heuristics.Limits.Exceeded.MaxRecursion"]
        if limit > 1:
            assert theirs[f"zip{limit - 1}.zip"] == ["Boundary.Leaf.UNOFFICIAL"]

@pytest.mark.parametrize("alert", [False, True])
def test_encrypted_archives(tmp_path, alert):
    if not B.have_tool("7z"):
        pytest.fail("7z is missing: install p7zip-full")
    tag = "alert" if alert else "quiet"
    plain = member(f"plain-{tag}")
    secret = [("secret.txt", member(f"secret-{tag}"))]
    files = {
        "zipcrypto.zip": B.zip_7z(secret, "deflate", password="pw"),
        "aes.zip": B.zip_7z(secret, "deflate", password="pw", aes=True),
        "enc.7z": B.sevenzip(secret, password="pw"),
        "header.7z": B.sevenzip(secret, password="pw", encrypt_headers=True),
        "mixed.zip": _append_plain(B.zip_7z(secret, "deflate", password="pw"), plain),
    }
    sigs = [B.hdb_line(plain, "Plain.Member"), B.hdb_line(secret[0][1], "Secret.Member")]
    flags = ("--alert-encrypted-archive=yes",) if alert else ()
    theirs, ours = B.run_both(tmp_path, files, sigs, *flags)
    assert ours == theirs
    if alert:
        assert theirs["enc.7z"] == ["Heuristics.Encrypted.7Zip"]
        assert theirs["aes.zip"] == ["Heuristics.Encrypted.Zip"]
    assert theirs["mixed.zip"] == ["Plain.Member.UNOFFICIAL"]
    # --alert-encrypted covers archives too.
    if alert:
        theirs, ours = B.run_both(tmp_path, files, sigs, "--alert-encrypted=yes")
        assert ours == theirs


def _append_plain(zip_bytes: bytes, data: bytes) -> bytes:
    import io

    buf = io.BytesIO(zip_bytes)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("plain.txt", data)
    return buf.getvalue()
