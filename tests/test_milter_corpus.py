"""The benchmark's mail corpus through clamav-milter and clammail milter: the same answers.

The corpus of ../shared/bench/mkcorpus.py (real attachments from this
machine, EICAR plain and zipped once and twice in one message of 50) is
handed to each milter the way an MTA hands it: the header fields one by
one (folded lines kept as the MTA keeps them, LF-joined), then the body.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clamd_harness import make_root
from conftest import shared_bench_script
from milter_harness import backends, start_milter, stop_all

pytestmark = [pytest.mark.oracle]

COUNT = 150


def split_message(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields (name, value) and the body of an RFC 5322 message, as an MTA splits it."""
    head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value.lstrip(b" ")))
    return fields, body.replace(b"\n", b"\r\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    subprocess.run([sys.executable, str(shared_bench_script("mkcorpus.py")), str(out), str(COUNT)],
                   check=True, timeout=600)
    truth = dict(line.split("\t") for line in (out / "truth.tsv").read_text().splitlines())
    return out, {name: value == "1" for name, value in truth.items()}


def run_corpus(milter, directory: Path) -> dict[str, tuple]:
    results = {}
    with milter.client(timeout=120) as client:
        client.connect()
        for path in sorted(directory.glob("*.eml")):
            fields, body = split_message(path.read_bytes())
            result = client.message("<bench@example.org>", ["<rcpt@example.com>"], fields, body)
            added = [(n, v.split(" at ")[0].split(" ")[0] if n == "X-Virus-Scanned" else v)
                     for n, v in result.added]
            results[path.name] = (result.action, result.reply, added, [c[:2] for c in result.changed])
    return results


def test_corpus_as_clamav_milter(corpus):
    directory, truth = corpus
    root = make_root()
    pair = backends(root)
    options = {"OnInfected": "Reject", "AddHeader": "Replace", "RejectMsg": "Found %v",
               "MaxFileSize": "25M"}
    try:
        theirs = start_milter("clamav-milter", root,
                              {**options, "ClamdSocket": f"unix:{pair.clamd.unix}"},
                              name="corpus-theirs")
        ours = start_milter("clammail", root,
                            {**options, "ClamdSocket": f"unix:{pair.clamd.unix}"},
                            name="corpus-ours")
        ours_own = start_milter("clammail", root,
                                {**options, "ClamdSocket": f"unix:{pair.clammail.unix}"},
                                name="corpus-own")
        try:
            expected = run_corpus(theirs, directory)
            got = run_corpus(ours, directory)
            got_own = run_corpus(ours_own, directory)
        finally:
            stop_all(theirs, ours, ours_own)
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)

    def product_free(results):
        return {k: (a, r, [(n, "<product>" if n == "X-Virus-Scanned" else v) for n, v in h], c)
                for k, (a, r, h, c) in results.items()}

    assert product_free(got) == product_free(expected)
    assert product_free(got_own) == product_free(expected)
    # Every message with EICAR is refused; the corpus also picks up Debian's
    # clamav-testfiles (ClamAV's test executable) among its attachments.
    rejected = {name: reply for name, (action, reply, *_rest) in expected.items()
                if action != "accept"}
    eicar = {name for name, infected in truth.items() if infected}
    assert len(eicar) == COUNT // 50
    assert all("Eicar-Test-Signature" in rejected[name] for name in eicar)
    assert all("ClamAV-Test-File" in reply for name, reply in rejected.items()
               if name not in eicar)
