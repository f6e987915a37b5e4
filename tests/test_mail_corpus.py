"""Python's own email test messages (Debian's libpython3.11-testsuite): every one
is scanned without an error, with clamscan's verdict, and every message libclamav
parses as a mail gives the same objects, byte for byte, as clamscan --leave-temps.
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from conftest import CLAM_TEST_FILE_SIG, clammail_results, clamscan_results
from test_mail import _digests, clamscan_objects, our_objects

from clammail.formats.filetypes import FileType, detect

CANDIDATES = [
    "/usr/lib/python3.11/test/test_email/data",
    *sorted(glob.glob("/root/.pyenv/versions/3.11*/lib/python3.11/test/test_email/data")),
]


def _data_dir() -> Path:
    for candidate in CANDIDATES:
        if Path(candidate, "msg_01.txt").is_file():
            return Path(candidate)
    pytest.fail("Python's email test data is missing: `make test` installs "
                "libpython3.11-testsuite (packaging/apt-packages.txt)")


@pytest.fixture(scope="module")
def messages() -> list[Path]:
    paths = sorted(_data_dir().glob("msg_*.txt"))
    assert len(paths) > 40
    return paths


def test_python_email_messages_same_verdict_as_clamscan(messages, sigdir):
    (sigdir / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    ours = clammail_results([sigdir / "test.hdb"], messages)
    theirs = clamscan_results([sigdir / "test.hdb"], messages)
    assert "Traceback" not in ours[2]
    assert ours[:2] == theirs[:2]
    assert set(ours[1]) == {str(p) for p in messages}


def test_python_email_messages_same_objects_as_clamscan(messages):
    theirs = clamscan_objects(messages)
    mails = 0
    for path in messages:
        data = path.read_bytes()
        if detect(data) not in (FileType.MAIL, FileType.MHTML):
            assert theirs[path.name] == [], path.name
            continue
        mails += 1
        assert _digests(our_objects(data)) == _digests(theirs[path.name]), path.name
    assert mails > 30
