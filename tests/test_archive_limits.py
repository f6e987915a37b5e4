"""MaxFileSize, MaxScanSize and MaxFiles inside archives, against clamscan 1.4.6.

ClamAV treats an oversized member differently per format: zip and cab cut
it (zip to whole 8 KiB buffers), tar cuts it with a heuristic, 7z, LHA and
ISO skip it, cpio and xar stop. Each case carries hash signatures for the
member whole and for every cut a format could make, so the verdict shows
exactly what was scanned.
"""

from __future__ import annotations

import zipfile

import archive_builders as B
import pytest

pytestmark = pytest.mark.oracle

LIMIT = 100 * 1024  # the MaxFileSize / MaxScanSize the cases are built around


def text(tag: str, size: int) -> bytes:
    line = b"%s compressible member text for the limit tests\n" % tag.encode()
    return (line * (size // len(line) + 1))[:size]


def _signatures(tag: str, data: bytes, scan_left: int | None = None) -> list[str]:
    cuts = {len(data), LIMIT, LIMIT // 8192 * 8192}
    if scan_left:
        cuts |= {scan_left, scan_left // 512 * 512, scan_left // 8192 * 8192}
    return [B.hdb_line(data[:n], f"{tag}.{n}") for n in sorted(cuts) if 0 < n <= len(data)]


def _containers() -> dict:
    return {
        "zip": lambda m: B.zip_py(m, zipfile.ZIP_DEFLATED),
        "bz.zip": lambda m: B.zip_py(m, zipfile.ZIP_BZIP2),
        "7z": lambda m: B.sevenzip(m),
        "cab": lambda m: B.cab(m, mszip=True),
        "lzh": lambda m: B.lha(m),
        "xar": lambda m: B.bsdtar(m, "xar"),
        "tgz": lambda m: B.tar_py(m, "gnu", "gz"),
    }


def _build(order: str):
    """Archives with a big member and a small one, big first ("bs") or last ("sb")."""
    files, sigs = {}, []
    for kind, build in _containers().items():
        tag = f"{kind}-{order}"
        big, small = text(f"big-{tag}", LIMIT + 30000), text(f"small-{tag}", 3000)
        members = [("big.txt", big), ("small.txt", small)]
        if order == "sb":
            members.reverse()
        files[f"{tag}.{kind}"] = build(members)
        sigs += _signatures(f"Big.{tag}", big) + [B.hdb_line(small, f"Small.{tag}")]
    for name, compress in (("gz", B.gz), ("bz2", B.bz), ("xz", B.xz)):
        data = text(f"stream-{name}-{order}", LIMIT + 30000)
        files[f"s-{order}.{name}"] = compress(data)
        sigs += _signatures(f"Stream.{name}.{order}", data)
    return files, sigs


@pytest.mark.parametrize("alert", [False, True])
@pytest.mark.parametrize("limit", ["filesize", "scansize"])
def test_size_limits(tmp_path, limit, alert):
    files, sigs = {}, []
    for order in ("bs", "sb"):
        more_files, more_sigs = _build(order)
        files.update(more_files)
        sigs += more_sigs
    flags = [f"--max-{limit}={LIMIT}"]
    if alert:
        flags.append("--alert-exceeds-max=yes")
    theirs, ours = B.run_both(tmp_path, files, sigs, *flags, allmatch=True)
    assert ours == theirs
    found = {name for names in theirs.values() for name in names}
    assert any(name.startswith("Small.") for name in found)
    if alert:
        assert any(name.startswith("Heuristics.Limits.Exceeded.") for name in found)


def test_uncompressed_containers_and_scansize(tmp_path):
    """tar cuts at 512-byte blocks with a heuristic, cpio stops, ISO and 7z skip, zip stops."""
    sizes = (70000, 100000)
    files, sigs = {}, []
    for kind, build in (("tar", B.tar_py), ("cpio", B.cpio_bin), ("iso", B.iso),
                        ("zip", lambda m: B.zip_py(m, zipfile.ZIP_STORED)),
                        ("7z", lambda m: B.sevenzip(m, "copy"))):
        s1, s2 = text(f"s1-{kind}", 2000), text(f"s2-{kind}", 2000)
        mid = text(f"mid-{kind}", 40000)
        container = build([("a.txt", s1), ("b.txt", mid), ("c.txt", s2)])
        files[f"u.{kind}"] = container
        sigs += [B.hdb_line(s1, f"S1.{kind}"), B.hdb_line(s2, f"S2.{kind}")]
        # The container itself and the first member count against MaxScanSize.
        cuts = {len(mid)}
        for size in sizes:
            left = size - len(container) - 2000
            cuts |= {left, left // 512 * 512}
        # One name per hash: for two signatures with one hash clamscan reports one.
        sigs += [B.hdb_line(mid[:n], f"Mid.{kind}.{n}") for n in sorted(cuts) if 0 < n <= len(mid)]
    for alert in ((), ("--alert-exceeds-max=yes",)):
        for size in sizes:
            theirs, ours = B.run_both(tmp_path, files, sigs, f"--max-scansize={size}", *alert,
                                      allmatch=True)
            assert ours == theirs, (size, alert)


@pytest.mark.parametrize("alert", [False, True])
def test_max_files(tmp_path, alert):
    files, sigs = {}, []
    for kind, build in (("zip", B.zip_py), ("tar", B.tar_py), ("7z", B.sevenzip),
                        ("cab", lambda m: B.cab(m, mszip=True)), ("cpio", B.cpio_bin)):
        members = [(f"f{i}.txt", text(f"maxfiles-{kind}-{i}-{alert}", 500)) for i in range(6)]
        files[f"m.{kind}"] = build(members)
        sigs += [B.hdb_line(data, f"F{i}.{kind}") for i, (_, data) in enumerate(members)]
    flags = ["--max-files=4"] + (["--alert-exceeds-max=yes"] if alert else [])
    theirs, ours = B.run_both(tmp_path, files, sigs, *flags, allmatch=True)
    assert ours == theirs
